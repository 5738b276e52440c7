"""The home directory, config.toml and the per-recipient policy table.

Each configuration mistake must come out as one line naming the file, the
dotted key and what is expected; the tests assert those lines. The example
configuration shipped in config/ must load, with its optional settings
switched on too.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mailcrypt import config, errors
from mailcrypt.keydir import keygen
from mailcrypt.policy import COMPATIBLE, MODERN, PolicyTable, RecipientPolicy, common_profile

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "mailcrypt.example.toml"


def write(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text)
    return path


def load(home: Path, text: str) -> config.Settings:
    write(home, text)
    return config.load_settings(home)


def error(home: Path, text: str) -> str:
    write(home, text)
    with pytest.raises(errors.ConfigError) as info:
        config.load_settings(home)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def certificate_file(path: Path, address: str = "gw@example.org") -> Path:
    _, cert = keygen.generate_identity(address, key_type="p256")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def secret_file(path: Path, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not-a-real-secret\n")
    path.chmod(mode)
    return path


# ---------------------------------------------------------------- the home


def test_home_precedence(tmp_path: Path) -> None:
    env = {"MAILCRYPT_HOME": str(tmp_path / "from-env"), "HOME": str(tmp_path / "user")}
    assert config.resolve_home(tmp_path / "from-flag", environ=env) == tmp_path / "from-flag"
    assert config.resolve_home(None, environ=env) == tmp_path / "from-env"
    assert config.resolve_home(None, environ={"HOME": str(tmp_path / "user")}) == tmp_path / "user/.config/mailcrypt"
    assert (
        config.resolve_home(None, environ={"HOME": str(tmp_path), "MAILCRYPT_HOME": ""})
        == tmp_path / ".config/mailcrypt"
    )


def test_relative_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config.resolve_home("rel", environ={}) == tmp_path / "rel"


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"HOME": "/home/a"}, "/home/a/.config/mailcrypt"),
        ("linux", {"HOME": "/home/a", "XDG_CONFIG_HOME": "/xdg"}, "/xdg/mailcrypt"),
        ("linux", {"HOME": "/home/a", "XDG_CONFIG_HOME": "relative"}, "/home/a/.config/mailcrypt"),
        ("freebsd13", {"HOME": "/home/a"}, "/home/a/.config/mailcrypt"),
        ("darwin", {"HOME": "/Users/a"}, "/Users/a/Library/Application Support/mailcrypt"),
        ("win32", {"APPDATA": "C:/Users/a/AppData/Roaming"}, "C:/Users/a/AppData/Roaming/mailcrypt"),
    ],
)
def test_platform_default_home(platform: str, env: dict[str, str], expected: str) -> None:
    assert config.default_home(environ=env, platform=platform) == Path(expected)


# ---------------------------------------------------------------- loading


def test_example_configuration_loads(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(EXAMPLE, home / "config.toml")
    settings = config.load_settings(home)
    assert settings.identity.address == "alice@example.org"
    assert settings.keys.directory == home / "keys"
    assert settings.policy == PolicyTable()
    assert settings.proxy.listen == "127.0.0.1:10587" and settings.proxy.auth == "required"
    assert settings.upstream is None and settings.accounts == ()
    assert settings.replay == config.ReplaySettings(30, 300)


def test_example_configuration_with_every_optional_setting(tmp_path: Path) -> None:
    """Switch on every commented-out setting of the example: each must be a real one."""
    home = tmp_path / "home"
    text = EXAMPLE.read_text()
    setting = re.compile(r"^# (\[.*\]|[a-z_]+ = .*)$", re.M)
    switched_on = setting.sub(r"\1", text)
    assert len(setting.findall(text)) >= 20
    certificate_file(home / "certs" / "example.net-gateway.pem")
    secret_file(home / "passphrase")
    settings = load(home, switched_on)
    assert settings.keys.passphrase_file == home / "passphrase"
    decision = settings.policy.decide("someone@example.net")
    assert (decision.policy, decision.profile, decision.gateway) == (
        "opportunistic",
        MODERN,
        home / "certs" / "example.net-gateway.pem",
    )
    assert settings.policy.decide("bob@example.org")[:2] == ("require", MODERN)
    assert decision.mixed_recipient_infos and not settings.policy.decide("bob@example.org").mixed_recipient_infos
    assert settings.upstream == config.UpstreamSettings(
        "smtp.example.org",
        587,
        "starttls",
        "alice",
        config.SecretRef(f"{home / 'config.toml'}: upstream.password_env", env="MAILCRYPT_UPSTREAM_PASSWORD"),
    )
    (account,) = settings.accounts
    assert (account.name, account.host, account.port, account.security, account.folders) == (
        "work",
        "imap.example.org",
        993,
        "tls",
        ("INBOX",),
    )
    assert account.target == config.Target("maildir", path=home / "mail")
    assert settings.account("work") is account
    with pytest.raises(errors.ConfigError, match="no \\[\\[accounts\\]\\] entry named 'home' \\(configured: work\\)"):
        settings.account("home")


def test_written_default_config_loads(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    path = config.write_default_config(home, "Alice@Example.ORG")
    assert path == home / "config.toml"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    settings = config.load_settings(home)
    assert settings.identity.address == "Alice@example.org"
    assert settings.config_file == path and settings.home == home
    assert settings.state_db == home / "state.db" and settings.outbox == home / "outbox"
    with pytest.raises(errors.ConfigError, match="already exists"):
        config.write_default_config(home, "alice@example.org")


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError) as info:
        config.load_settings(tmp_path / "nowhere")
    assert str(info.value).startswith(f"{tmp_path / 'nowhere' / 'config.toml'}: no such file")
    assert "mailcrypt init ADDRESS" in str(info.value)
    defaults = config.load_settings(tmp_path / "nowhere", missing_ok=True)
    assert defaults.keys.directory == tmp_path / "nowhere" / "keys" and defaults.identity.address is None


def test_paths_are_relative_to_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    certificate_file(tmp_path / "home" / "anchors" / "ca.pem")
    certificate_file(tmp_path / "user" / "ca2.pem")
    settings = load(
        tmp_path / "home", '[keys]\ndirectory = "/abs/keys"\ntrust_anchors = ["anchors/ca.pem", "~/ca2.pem"]\n'
    )
    assert settings.keys.directory == Path("/abs/keys")
    assert settings.keys.trust_anchors == (tmp_path / "home/anchors/ca.pem", tmp_path / "user/ca2.pem")


def test_listen_forms(tmp_path: Path) -> None:
    assert load(tmp_path, '[proxy]\nlisten = "[::1]:2525"\nauth = "none"\n').proxy.listen == "[::1]:2525"
    proxy = load(tmp_path, '[proxy]\nlisten = "localhost:0"\nauth = "none"\n').proxy
    assert (proxy.listen_host, proxy.listen_port, proxy.auth) == ("localhost", 0, "none")


def test_secret_ref_reads_env_and_private_file(tmp_path: Path) -> None:
    secret_file(tmp_path / "imap.pass")
    settings = load(
        tmp_path, '[[accounts]]\nname = "a"\nhost = "imap.example.org"\nusername = "u"\npassword_file = "imap.pass"\n'
    )
    assert settings.accounts[0].password.read() == b"not-a-real-secret"
    ref = config.SecretRef("upstream.password_env", env="SOME_VAR")
    assert ref.read(environ={"SOME_VAR": "value"}) == b"value"
    with pytest.raises(errors.ConfigError, match="upstream.password_env: environment variable SOME_VAR is not set"):
        ref.read(environ={})
    (tmp_path / "imap.pass").chmod(0o644)
    with pytest.raises(errors.ConfigError, match="readable by other users .mode 0644."):
        settings.accounts[0].password.read()


# ---------------------------------------------------------------- every mistake is one clear line

CASES = [
    (
        '[keys]\ndirectoy = "x"\n',
        "keys.directoy: unknown setting (did you mean keys.directory?); expected one of directory, harvest, "
        "passphrase_file, revocation, revocation_timeout, trust_anchors in [keys]",
    ),
    (
        "[colour]\nx = 1\n",
        "colour: unknown setting; expected one of accounts, identity, keys, policy, proxy, replay, "
        "upstream in the top level",
    ),
    (
        '[identity]\naddress = "nobody"\n',
        "identity.address: expected an e-mail address such as alice@example.org, got 'nobody'",
    ),
    ("[identity]\naddress = 42\n", "identity.address: expected a string, got the integer 42"),
    ('[keys]\nharvest = "yes"\n', "keys.harvest: expected true or false, got the string 'yes'"),
    ('[keys]\ntrust_anchors = "ca.pem"\n', "keys.trust_anchors: expected an array of strings, got the string 'ca.pem'"),
    (
        '[keys]\ntrust_anchors = ["missing.pem"]\n',
        "keys.trust_anchors[0]: expected a certificate file, but {home}/missing.pem does not exist",
    ),
    ("keys = 3\n", "keys: expected a table [keys], got the integer 3"),
    (
        '[policy]\ndefault = "maybe"\n',
        "policy.default: expected one of 'require', 'opportunistic', 'plaintext', got the string 'maybe'",
    ),
    ('[policy]\nprofile = "fast"\n', "policy.profile: expected one of 'compatible', 'modern', got the string 'fast'"),
    (
        '[policy.domains."example.net"]\npolicy = "maybe"\n',
        "policy.domains.\"example.net\".policy: expected one of 'require', 'opportunistic', 'plaintext', "
        "got the string 'maybe'",
    ),
    (
        '[policy.domains."example.net"]\nprofil = "modern"\n',
        'policy.domains."example.net".profil: unknown setting (did you mean policy.domains."example.net".profile?)',
    ),
    (
        '[policy.domains."not a domain"]\npolicy = "require"\n',
        'policy.domains."not a domain": expected a domain name such as example.org',
    ),
    (
        '[policy.domains."example.net"]\npolicy = "require"\n[policy.domains."Example.NET"]\npolicy = "plaintext"\n',
        'policy.domains."Example.NET": expected each domain once (it is the same domain as another entry, example.net)',
    ),
    (
        '[policy.addresses."bob"]\nprofile = "modern"\n',
        "policy.addresses.bob: expected an e-mail address such as alice@example.org, got 'bob'",
    ),
    (
        '[policy.addresses."bob@example.org"]\ngateway = "gw.pem"\n',
        'policy.addresses."bob@example.org".gateway: unknown setting',
    ),
    (
        '[policy.domains."example.org"]\ngateway = "gw.pem"\n',
        'policy.domains."example.org".gateway: expected a certificate file, but {home}/gw.pem does not exist',
    ),
    (
        '[policy.domains."example.org"]\ngateway = "two.pem"\n',
        'policy.domains."example.org".gateway: expected a file with exactly one certificate, got 2 in {home}/two.pem',
    ),
    (
        '[policy.domains."example.org"]\ngateway = "junk.pem"\n',
        'policy.domains."example.org".gateway: expected a PEM or DER certificate file, but {home}/junk.pem holds no '
        "readable certificate",
    ),
    ('[proxy]\nlisten = "localhost"\n', 'proxy.listen: expected "HOST:PORT" such as "127.0.0.1:10587"'),
    ('[proxy]\nlisten = "127.0.0.1:99999"\n', 'proxy.listen: expected "HOST:PORT"'),
    ('[proxy]\nlisten = "::1:2525"\n', 'proxy.listen: expected "HOST:PORT" such as "127.0.0.1:10587" or "[::1]:10587"'),
    (
        '[proxy]\nlisten = "0.0.0.0:10587"\nauth = "none"\n',
        'proxy.auth: expected "required" when the proxy listens on 0.0.0.0, which is not a loopback address',
    ),
    ("[proxy]\nmax_message_size = -1\n", "proxy.max_message_size: expected a whole number from 1024 to"),
    (
        "[proxy]\nmax_message_size = true\n",
        "proxy.max_message_size: expected a whole number from 1024 to 1099511627776, got the boolean true",
    ),
    ("[upstream]\nport = 25\n", "upstream.host: expected this setting; it is required"),
    (
        '[upstream]\nhost = "smtp.example.org"\nsecurity = "none"\n',
        "upstream.security: expected 'starttls' or 'tls': \"none\" (no TLS) is allowed only for a loopback host, "
        "and smtp.example.org is not one",
    ),
    (
        '[upstream]\nhost = "smtp.example.org"\nusername = "a"\npassword = "hunter2"\n',
        "upstream.password: passwords are not kept in the configuration file; use password_env",
    ),
    (
        '[upstream]\nhost = "smtp.example.org"\nusername = "a"\n',
        "upstream.password_env: expected password_env or password_file",
    ),
    (
        '[upstream]\nhost = "smtp.example.org"\nusername = "a"\npassword_env = "X"\npassword_file = "p"\n',
        "upstream.password_file: expected either password_env or password_file, not both",
    ),
    (
        '[upstream]\nhost = "smtp.example.org"\nusername = "a"\npassword_file = "loose.pass"\n',
        "upstream.password_file: password file {home}/loose.pass is readable by other users (mode 0644); "
        "expected mode 0600",
    ),
    (
        '[upstream]\nhost = "smtp.example.org"\nusername = "a"\npassword_file = "none.pass"\n',
        "upstream.password_file: password file {home}/none.pass does not exist (expected a file, mode 0600)",
    ),
    (
        '[keys]\npassphrase_file = "loose.pass"\n',
        "keys.passphrase_file: passphrase file {home}/loose.pass is readable by other users (mode 0644); "
        "expected mode 0600: run chmod 600 {home}/loose.pass",
    ),
    ("[replay]\nmax_age_days = 0\n", "replay.max_age_days: expected a whole number from 1 to 36500, got the integer 0"),
    (
        "[replay]\nfuture_skew_seconds = 1.5\n",
        "replay.future_skew_seconds: expected a whole number from 0 to 86400, got the number 1.5",
    ),
    (
        '[[accounts]]\nname = "w"\nhost = "imap.example.org"\nusername = "a"\npassword_env = "X"\ntarget = "mbox:x"\n',
        'accounts[0].target: expected "maildir:PATH" or "imap:FOLDER", got \'mbox:x\'',
    ),
    (
        '[[accounts]]\nname = "w"\nhost = "imap.example.org"\nusername = "a"\npassword_env = "X"\nfolders = []\n',
        "accounts[0].folders: expected a list of one or more folder names",
    ),
    (
        '[[accounts]]\nname = "w"\nhost = "imap.example.org"\nusername = "a"\npassword_env = "X"\n'
        '[[accounts]]\nname = "w"\nhost = "imap.example.org"\nusername = "b"\npassword_env = "Y"\n',
        "accounts[1].name: expected a name no other account has, and 'w' is used twice",
    ),
    (
        '[[accounts]]\nname = "w"\nhost = "imap.example.org"\npassword_env = "X"\n',
        "accounts[0].username: expected this setting; it is required",
    ),
    ('accounts = "work"\n', "accounts: expected an array of tables [[accounts]], got the string 'work'"),
    ("[keys\n", "not valid TOML: "),
    ('[keys]\ndirectory = "a"\ndirectory = "b"\n', "not valid TOML: "),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[1][:40] for c in CASES])
def test_configuration_errors(tmp_path: Path, text: str, expected: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    secret_file(home / "loose.pass", 0o644)
    (home / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    certificate_file(home / "two.pem")
    (home / "two.pem").write_bytes((home / "two.pem").read_bytes() * 2)
    message = error(home, text)
    assert message.startswith(f"{home / 'config.toml'}: ")
    assert expected.format(home=home) in message


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_bytes(b'[identity]\naddress = "\xff"\n')
    with pytest.raises(errors.ConfigError, match="config.toml: not UTF-8 text"):
        config.load_settings(tmp_path)


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()
    with pytest.raises(errors.ConfigError, match="config.toml: is a directory"):
        config.load_settings(tmp_path)


# ---------------------------------------------------------------- the policy table


def test_policy_resolution_address_domain_default() -> None:
    table = PolicyTable(
        default="require",
        profile="compatible",
        domains={
            "Example.NET": RecipientPolicy(policy="opportunistic", profile="modern"),
            "example.com": RecipientPolicy(policy="plaintext"),
        },
        addresses={
            "Bob@Example.NET": RecipientPolicy(profile="compatible"),
            "eve@example.com": RecipientPolicy(policy="require", profile="modern"),
        },
    )
    assert table.decide("anyone@example.org")[:2] == ("require", COMPATIBLE)
    assert table.decide("anyone@EXAMPLE.net")[:2] == ("opportunistic", MODERN)
    # The address sets only the profile; its policy still comes from the domain.
    policy, profile, reason = table.decide("Bob@example.net")[:3]
    assert (policy, profile) == ("opportunistic", COMPATIBLE)
    assert reason == (
        'policy opportunistic from policy.domains."example.net", '
        'profile compatible from policy.addresses."Bob@example.net"'
    )
    # The local part compares exactly: bob@ is not Bob@.
    assert table.decide("bob@example.net")[:2] == ("opportunistic", MODERN)
    assert table.decide("eve@Example.com")[:2] == ("require", MODERN)
    assert table.decide("mallory@example.com")[:2] == ("plaintext", COMPATIBLE)
    assert (
        table.decide("x@example.org").reason
        == "policy require from policy.default, profile compatible from policy.profile"
    )


def test_policy_table_from_config(tmp_path: Path) -> None:
    certificate_file(tmp_path / "gw.pem")
    settings = load(
        tmp_path,
        '[policy]\ndefault = "opportunistic"\nprofile = "modern"\n'
        '[policy.domains."@Example.ORG"]\ngateway = "gw.pem"\npolicy = "require"\n'
        '[policy.addresses."Bob@Example.NET"]\nprofile = "compatible"\n',
    )
    decision = settings.policy.decide("someone@example.org")
    assert decision.policy == "require" and decision.gateway == tmp_path / "gw.pem"
    assert 'gateway certificate from policy.domains."example.org".gateway' in decision.reason
    assert settings.policy.decide("Bob@example.net")[:2] == ("opportunistic", COMPATIBLE)
    assert settings.policy.decide("bob@example.net")[:2] == ("opportunistic", MODERN)
    assert not any(settings.policy.decide(a).mixed_recipient_infos for a in ("someone@example.org", "bob@example.net"))


def test_mixed_recipient_infos_from_config(tmp_path: Path) -> None:
    """DESIGN.md §1 "Readable by every recipient": said per default, domain and address, address first."""
    settings = load(
        tmp_path,
        "[policy]\nmixed_recipient_infos = true\n"
        '[policy.domains."example.org"]\nmixed_recipient_infos = false\n'
        '[policy.addresses."bob@example.org"]\nmixed_recipient_infos = true\n',
    )
    decide = settings.policy.decide
    assert [decide(a).mixed_recipient_infos for a in ("x@example.net", "x@example.org", "bob@example.org")] == [
        True,
        False,
        True,
    ]
    assert 'mixed recipient infos from policy.addresses."bob@example.org"' in decide("bob@example.org").reason
    message = error(tmp_path, '[policy.domains."example.org"]\nmixed_recipient_infos = "yes"\n')
    assert "mixed_recipient_infos: expected true or false, got the string 'yes'" in message


def test_policy_table_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        PolicyTable(default="maybe")
    with pytest.raises(ValueError):
        RecipientPolicy(profile="fast")
    with pytest.raises(ValueError, match="per domain"):
        PolicyTable(addresses={"a@example.org": RecipientPolicy(gateway=Path("gw.pem"))})


def test_common_profile() -> None:
    assert common_profile([MODERN, MODERN]) is MODERN
    assert common_profile([MODERN, COMPATIBLE]) is COMPATIBLE
    with pytest.raises(ValueError):
        common_profile([])


# ---------------------------------------------------------------- HOST:PORT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:10587", ("127.0.0.1", 10587)),
        ("localhost:0", ("localhost", 0)),
        ("mail.example.org:65535", ("mail.example.org", 65535)),
        ("[::1]:2525", ("::1", 2525)),
        ("[2001:db8::25]:25", ("2001:db8::25", 25)),
    ],
)
def test_host_port_accepted(value: str, expected: tuple[str, int]) -> None:
    assert config.parse_host_port(value, what="x") == expected


@pytest.mark.parametrize(
    "value",
    [
        "::1:2525",  # an IPv6 address with a port needs brackets
        "2001:db8::25:25",
        "[::1]2525",
        "[::1]",
        "[::1",
        "[localhost]:25",  # brackets hold an IPv6 address only
        "localhost",
        ":25",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:+25",
        "127.0.0.1:\u0661\u0662",  # Arabic-Indic digits
    ],
)
def test_host_port_refused(value: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        config.parse_host_port(value, what="proxy.listen")
    assert str(info.value) == (
        f'proxy.listen: expected "HOST:PORT" such as "127.0.0.1:10587" or "[::1]:10587", got {value!r}'
    )

"""Checking a parsed ``config.toml`` and building the settings from it.

One function per section of DESIGN.md §5 reads its table through a
``config_table.Table``, so that every mistake names the file, the dotted key
and what is expected, and unknown keys are refused. Beyond the types it
checks what a value means: addresses and domains are well-formed, "none"
for authentication or TLS is allowed only on loopback, a gateway file holds
exactly one certificate, secret files exist and only their owner can read
them (their content is not read here).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path

from mailcrypt import errors
from mailcrypt.addresses import domain_key
from mailcrypt.config import model
from mailcrypt.config.secrets import check_private
from mailcrypt.config.table import Table, fail
from mailcrypt.pki import REVOCATION_MODES
from mailcrypt.policy import RECIPIENT_POLICIES, PolicyTable, RecipientPolicy

__all__ = ["parse_settings", "parse_host_port", "is_loopback"]

_UPSTREAM_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_IMAP_PORTS = {"tls": 993, "starttls": 143, "none": 143}


def parse_settings(document: Mapping[str, object], *, home: Path, config_file: Path) -> model.Settings:
    """Check a parsed TOML document and build the settings (see ``load_settings``)."""
    root = Table(dict(document), (), config_file, home)
    identity = _identity(root.table("identity"))
    keys = _keys(root.table("keys"), home)
    policy = _policy(root.table("policy"))
    proxy = _proxy(root.table("proxy"))
    upstream_table = root.optional_table("upstream")
    upstream = _upstream(upstream_table) if upstream_table is not None else None
    replay = _replay(root.table("replay"))
    accounts = _accounts(root, home)
    root.finish()
    if upstream is not None and upstream.login == "client" and proxy.auth != "required":
        raise errors.ConfigError(
            f'{config_file}: upstream.login: "client" needs proxy.auth = "required" (the login to relay with '
            "is the one the mail client gives the proxy)"
        )
    return model.Settings(home, config_file, identity, keys, policy, proxy, upstream, replay, accounts)


def _identity(t: Table) -> model.IdentitySettings:
    address = t.address("address", None)
    t.finish()
    return model.IdentitySettings(address)


def _keys(t: Table, home: Path) -> model.KeySettings:
    directory = t.path("directory", "keys")
    anchors = tuple(t.path_list("trust_anchors"))
    for i, anchor in enumerate(anchors):
        t.certificate_file(("trust_anchors", i), anchor)
    harvest = t.boolean("harvest", True)
    passphrase_file = t.path("passphrase_file", None)
    if passphrase_file is not None:
        check_private(passphrase_file, what=f"{t.describe('passphrase_file')}: passphrase file")
    revocation = t.choice("revocation", "soft-fail", REVOCATION_MODES)
    timeout = t.integer("revocation_timeout", 3, low=1, high=60)
    t.finish()
    assert directory is not None
    return model.KeySettings(directory, anchors, harvest, passphrase_file, revocation, float(timeout))


def _recipient_policy(t: Table, *, gateway_allowed: bool) -> RecipientPolicy:
    policy = t.choice("policy", None, RECIPIENT_POLICIES)
    profile = t.choice("profile", None, ("compatible", "modern"))
    gateway = None
    if gateway_allowed:
        gateway = t.path("gateway", None)
        if gateway is not None:
            count = t.certificate_file("gateway", gateway)
            if count != 1:
                fail(t, "gateway", f"a file with exactly one certificate, got {count} in {gateway}")
    mixed = t.boolean("mixed_recipient_infos", None)
    t.finish()
    return RecipientPolicy(policy, profile, gateway, mixed)


def _policy(t: Table) -> PolicyTable:
    default = t.choice("default", "require", RECIPIENT_POLICIES)
    profile = t.choice("profile", "compatible", ("compatible", "modern"))
    mixed = t.boolean("mixed_recipient_infos", False)
    domains: dict[str, RecipientPolicy] = {}
    domain_table = t.table("domains")
    for name in domain_table.keys():
        entry = domain_table.table(name)
        key = domain_key(name.removeprefix("@"))
        if not _valid_domain(key):
            fail(domain_table, name, "a domain name such as example.org")
        if key in domains:
            fail(domain_table, name, f"each domain once (it is the same domain as another entry, {key})")
        domains[key] = _recipient_policy(entry, gateway_allowed=True)
    domain_table.finish()
    addresses: dict[str, RecipientPolicy] = {}
    address_table = t.table("addresses")
    for name in address_table.keys():
        entry = address_table.table(name)
        normal = address_table.check_address(name, name)
        if normal in addresses:
            fail(address_table, name, f"each address once (it is the same address as another entry, {normal})")
        addresses[normal] = _recipient_policy(entry, gateway_allowed=False)
    address_table.finish()
    t.finish()
    return PolicyTable(default, profile, domains, addresses, mixed)


def _valid_domain(domain: str) -> bool:
    labels = domain.split(".")
    return len(labels) >= 2 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii() and not label.startswith("-")
        for label in labels
    )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_host_port(value: str, *, what: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` as (host, port), the host without brackets.

    An IPv6 address must be in brackets (RFC 3986 §3.2.2): in ``::1:25`` no
    one can tell where the address ends and the port begins. The port is a
    decimal number from 0 (the system picks one) to 65535. ``what`` names
    the setting or option for the message. Raises ``errors.ConfigError``
    (a ``UsageError``) naming ``what`` and the value.
    """
    problem = errors.ConfigError(
        f'{what}: expected "HOST:PORT" such as "127.0.0.1:10587" or "[::1]:10587", got {value!r}'
    )
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise problem
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise problem from None
        port_text = rest[1:]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or ":" in host or "[" in host or "]" in host:
            raise problem
    # str.isdigit alone would take other scripts' digits ("١٢"), which int() reads.
    if not host or not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise problem
    return host, int(port_text)


def _proxy(t: Table) -> model.ProxySettings:
    listen = t.string("listen", "127.0.0.1:10587")
    assert listen is not None
    host, port = parse_host_port(listen, what=t.describe("listen"))
    auth = t.choice("auth", "required", ("required", "none"))
    assert auth is not None
    if auth == "none" and not is_loopback(host):
        fail(
            t,
            "auth",
            f'"required" when the proxy listens on {host}, which is not a loopback address '
            '("none" is allowed only on 127.0.0.1, ::1 or localhost)',
        )
    size = t.integer("max_message_size", 52428800, low=1024, high=2**40)
    tls_cert = t.path("tls_cert", "proxy/cert.pem")
    tls_key = t.path("tls_key", "proxy/key.pem")
    tls = t.choice("tls", "starttls", ("starttls", "implicit"))
    users_file = t.path("users_file", "proxy/users")
    failures = t.integer("max_auth_failures", 5, low=1, high=1000)
    grace = t.integer("shutdown_grace", 30, low=0, high=3600)
    # RFC 5321 §4.5.3.1.8: a server MUST take at least 100 recipients.
    recipients = t.integer("max_recipients", 100, low=100, high=100000)
    # Unset, it is 256 MiB, or max_message_size when that is larger (a file that only raised
    # max_message_size keeps loading as before this key existed).
    memory = t.integer("message_memory", max(268435456, size), low=1024, high=2**42)
    if memory < size:
        # A message is held whole while it is signed and encrypted: a budget smaller than
        # the largest message could never admit it.
        fail(
            t,
            "message_memory",
            f"at least max_message_size ({size} bytes), got {memory}; raise it or lower max_message_size",
        )
    t.finish()
    assert size is not None and tls_cert is not None and tls_key is not None and tls is not None
    assert grace is not None and recipients is not None
    return model.ProxySettings(
        host, port, auth, size, tls_cert, tls_key, tls, users_file, failures, shutdown_grace=grace,
        max_recipients=recipients, message_memory=memory,
    )


def _secret(t: Table, *, required: bool) -> model.SecretRef | None:
    if "password" in t.keys():
        # DESIGN.md §5: passwords never sit in the configuration in plaintext.
        raise errors.ConfigError(
            f"{t.describe('password')}: passwords are not kept in the configuration file; use "
            'password_env = "VARIABLE" or password_file = "FILE" (mode 0600) instead'
        )
    env = t.string("password_env", None)
    file = t.path("password_file", None)
    if env is not None and file is not None:
        fail(t, "password_file", "either password_env or password_file, not both")
    if env is not None:
        if not env or not env.replace("_", "").isalnum():
            fail(t, "password_env", f"the name of an environment variable, got {env!r}")
        return model.SecretRef(t.describe("password_env"), env=env)
    if file is not None:
        check_private(file, what=f"{t.describe('password_file')}: password file")
        return model.SecretRef(t.describe("password_file"), file=file)
    if required:
        fail(t, "password_env", "password_env or password_file: how to find the password for this account")
    return None


def _server(t: Table, ports: Mapping[str, int], choices: tuple[str, ...]) -> tuple[str, int, str]:
    host = t.string("host", None, required=True)
    assert host is not None
    if not host or any(c.isspace() or c in "/[]" for c in host):
        fail(t, "host", f"a host name or IP address, got {host!r}")
    security = t.choice("security", choices[0], choices)
    assert security is not None
    if security == "none" and not is_loopback(host):
        fail(
            t,
            "security",
            f'{" or ".join(repr(c) for c in choices[:-1])}: "none" (no TLS) is allowed only for '
            f"a loopback host, and {host} is not one",
        )
    port = t.integer("port", ports[security], low=1, high=65535)
    assert port is not None
    return host, port, security


def _upstream(t: Table) -> model.UpstreamSettings:
    host, port, security = _server(t, _UPSTREAM_PORTS, ("starttls", "tls", "none"))
    login = t.choice("login", "configured", ("configured", "client"))
    username = t.string("username", None)
    if login == "client" and username is not None:
        fail(
            t,
            "login",
            '"configured" to log in as a configured username (with login = "client" the mail '
            "client's own login is used, and username/password must not be set)",
        )
    password = _secret(t, required=username is not None)
    if password is not None and username is None:
        fail(t, "username", "a user name to go with the password")
    tls_verify = t.boolean("tls_verify", True)
    ca_file = t.path("ca_file", None)
    if ca_file is not None:
        t.certificate_file("ca_file", ca_file)
    timeout = t.integer("timeout", 60, low=1, high=3600)
    check = t.boolean("check_recipients", True)
    retry_hours = t.integer("retry_hours", 120, low=1, high=24 * 30)
    data_timeout = t.integer("data_timeout", 600, low=1, high=24 * 3600)
    t.finish()
    assert login is not None and data_timeout is not None
    return model.UpstreamSettings(
        host,
        port,
        security,
        username,
        password,
        tls_verify,
        ca_file,
        timeout,
        check_recipients=check,
        retry_hours=retry_hours,
        login=login,
        data_timeout=data_timeout,
    )


def _replay(t: Table) -> model.ReplaySettings:
    max_age = t.integer("max_age_days", 30, low=1, high=36500)
    skew = t.integer("future_skew_seconds", 300, low=0, high=86400)
    t.finish()
    assert max_age is not None and skew is not None
    return model.ReplaySettings(max_age, skew)


def _accounts(root: Table, home: Path) -> tuple[model.AccountSettings, ...]:
    out: list[model.AccountSettings] = []
    for t in root.table_list("accounts"):
        name = t.string("name", None, required=True)
        assert name is not None
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            fail(t, "name", f"a name of letters, digits, '-', '_' or '.', got {name!r}")
        if any(a.name == name for a in out):
            fail(t, "name", f"a name no other account has, and {name!r} is used twice")
        host, port, security = _server(t, _IMAP_PORTS, ("tls", "starttls", "none"))
        username = t.string("username", None, required=True)
        assert username is not None
        # Neither password_env nor password_file: fetch asks on a terminal (DESIGN.md §5).
        password = _secret(t, required=False)
        folders = tuple(t.string_list("folders", ["INBOX"]))
        if not folders or any(not f for f in folders):
            fail(t, "folders", "a list of one or more folder names")
        target_text = t.string("target", "maildir:mail")
        assert target_text is not None
        target = _target(t, target_text, home)
        ca_file = t.path("ca_file", None)
        if ca_file is not None:
            t.certificate_file("ca_file", ca_file)
        quarantine = t.string("quarantine", "Quarantine")
        assert quarantine is not None
        if not quarantine or quarantine.upper() == "INBOX" or quarantine in folders:
            fail(t, "quarantine", f"a folder name other than INBOX and the folders fetched, got {quarantine!r}")
        plaintext_on_server = t.boolean("plaintext_on_server", False)
        assert plaintext_on_server is not None
        if target.kind == "imap" and not plaintext_on_server:
            fail(
                t,
                "plaintext_on_server",
                f"plaintext_on_server = true with target = {target_text!r}: that target stores the decrypted "
                "mail on the IMAP server, so it must be asked for explicitly",
            )
        if target.kind == "imap" and target.folder in folders:
            fail(t, "target", f"a folder that is not also fetched, and {target.folder!r} is in folders")
        out.append(
            model.AccountSettings(
                name,
                host,
                port,
                security,
                username,
                password,
                folders,
                target,
                ca_file,
                quarantine,
                plaintext_on_server,
            )
        )
        t.finish()
    return tuple(out)


def _target(t: Table, value: str, home: Path) -> model.Target:
    kind, sep, rest = value.partition(":")
    if sep and kind == "maildir" and rest:
        return model.Target("maildir", path=home / Path(rest).expanduser())
    if sep and kind == "imap" and rest:
        return model.Target("imap", folder=rest)
    fail(t, "target", f'"maildir:PATH" or "imap:FOLDER", got {value!r}')
    raise AssertionError("unreachable")

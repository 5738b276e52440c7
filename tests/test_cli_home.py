"""The command line with a home: init, keys import/list/show/export/remove, encrypt and decrypt from the directory.

Every process is the real ``mailcrypt`` command; certificates and PKCS#12
files come from the real ``openssl`` (tests/openssl_pki.py), and what
mailcrypt encrypts is decrypted by ``openssl cms`` with the recipient's key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openssl_pki import PKI, Made

PASSPHRASE = "correct horse battery staple 7f3a"
MAILCRYPT = [sys.executable, "-m", "mailcrypt"]
MESSAGE = (
    b"From: Me <me@example.org>\r\nTo: Bob <bob@example.org>\r\nSubject: directory test\r\n"
    b"Message-ID: <t1@example.org>\r\nContent-Type: text/plain\r\n\r\nHello Bob, from the key directory.\r\n"
)


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    env["MAILCRYPT_HOME"] = str(home)
    env["MAILCRYPT_PASSPHRASE"] = PASSPHRASE
    env.update(extra)
    return env


def mc(
    home: Path, *args: str | Path, input: bytes | None = None, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [*MAILCRYPT, *map(str, args)],
        input=input,
        capture_output=True,
        timeout=120,
        env=env if env is not None else env_for(home),
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def openssl_decrypt(data: bytes, who: Made) -> bytes:
    proc = subprocess.run(
        ["openssl", "cms", "-decrypt", "-inkey", str(who.key), "-recip", str(who.cert)],
        input=data,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("cli-home-pki"))


@pytest.fixture(scope="module")
def people(pki: PKI) -> dict[str, Made]:
    ca = pki.root("Test CA")
    return {
        "bob": pki.issue("bob", ca=ca, key="rsa2048", emails=("bob@example.org",)),
        "carol": pki.issue("carol", ca=ca, key="p256", emails=("carol@example.net",)),
        "expired": pki.issue("old", ca=ca, emails=("old@example.org",), start="20200101000000Z", end="20210101000000Z"),
    }


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    proc = mc(home, "init", "me@example.org", "--key-type", "p256")
    assert b"created" in proc.stdout
    return home


def test_init_creates_a_private_home(home: Path) -> None:
    assert (home / "config.toml").is_file()
    for path in [home, *home.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        if path.suffix == ".key" or path.name in ("config.toml", "index.sqlite") or path.is_dir():
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    keys = list(home.rglob("*.key"))
    assert len(keys) == 1 and b"ENCRYPTED PRIVATE KEY" in keys[0].read_bytes()
    for path in home.rglob("*"):
        if path.is_file():
            assert PASSPHRASE.encode() not in path.read_bytes(), path
    # A second init does not overwrite the home.
    proc = mc(home, "init", "me@example.org", ok=False)
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr


def test_init_without_passphrase_says_so_loudly(tmp_path: Path) -> None:
    home = tmp_path / "unattended"
    proc = mc(
        home,
        "init",
        "robot@example.org",
        "--key-type",
        "p256",
        "--no-passphrase",
        env=env_for(home, MAILCRYPT_PASSPHRASE=""),
    )
    assert b"WITHOUT a passphrase" in proc.stderr
    assert b"BEGIN PRIVATE KEY" in next(home.rglob("*.key")).read_bytes()
    # Such a home still decrypts what is sent to it, with no passphrase anywhere.
    sent = mc(home, "encrypt", "--to", "robot@example.org", input=MESSAGE.replace(b"bob@", b"robot@")).stdout
    env = {k: v for k, v in env_for(home).items() if k != "MAILCRYPT_PASSPHRASE"}
    assert b"Hello Bob" in mc(home, "decrypt", input=sent, env=env).stdout


def test_encrypt_to_an_imported_certificate_reads_with_openssl(home: Path, people: dict[str, Made]) -> None:
    proc = mc(home, "keys", "import", people["bob"].cert)
    assert b"imported recipient bob@example.org" in proc.stdout
    sent = mc(home, "-v", "encrypt", "--to", "bob@example.org", input=MESSAGE)
    assert b"profile compatible" in sent.stderr
    assert b"Hello Bob" not in sent.stdout and b"Subject: [...]" in sent.stdout
    # Bob reads it with OpenSSL and his own key ...
    assert b"Hello Bob, from the key directory." in openssl_decrypt(sent.stdout, people["bob"])
    # ... but nothing says his client reads key agreement beside his RSA key (DESIGN.md §1), so the
    # sender's own EC certificate was left out, with a warning, and the sender cannot read this one.
    assert b"warning: your own EC certificate (me@example.org) is left out: bob@example.org" in sent.stderr
    assert mc(home, "decrypt", "--no-replay-check", input=sent.stdout, ok=False).returncode == 3
    # Once the policy says Bob's client reads it, the sender reads the sent copy: mailcrypt finds the
    # identity on its own.
    with (home / "config.toml").open("a") as f:
        f.write('\n[policy.addresses."bob@example.org"]\nmixed_recipient_infos = true\n')
    sent = mc(home, "-v", "encrypt", "--to", "bob@example.org", input=MESSAGE)
    assert b"warning" not in sent.stderr
    assert b"Hello Bob, from the key directory." in openssl_decrypt(sent.stdout, people["bob"])
    mine = mc(home, "-v", "decrypt", input=sent.stdout)
    assert mine.stdout == MESSAGE
    assert b"decrypted with CN=me@example.org" in mine.stderr


def test_recipients_come_from_to_and_cc(home: Path, people: dict[str, Made]) -> None:
    mc(home, "keys", "import", people["bob"].cert)
    mc(home, "keys", "import", people["carol"].cert)
    message = MESSAGE.replace(b"To: Bob <bob@example.org>", b"To: bob@example.org\r\nCc: carol@EXAMPLE.net")
    # Bob (RSA) and Carol (EC) in one envelope only when Bob's client is known to read it (DESIGN.md §1).
    refused = mc(home, "encrypt", input=message, ok=False)
    assert refused.returncode == 2 and refused.stdout == b""
    assert b"bob@example.org (RSA) not known to read" in refused.stderr and b"carol@EXAMPLE.net" in refused.stderr
    with (home / "config.toml").open("a") as f:
        f.write('\n[policy.domains."example.org"]\nmixed_recipient_infos = true\n')
    sent = mc(home, "encrypt", input=message).stdout
    for who in ("bob", "carol"):
        assert b"Hello Bob" in openssl_decrypt(sent, people[who])


def test_modern_profile_from_the_policy(home: Path, people: dict[str, Made]) -> None:
    mc(home, "keys", "import", people["bob"].cert)
    with (home / "config.toml").open("a") as f:
        f.write('\n[policy.addresses."bob@example.org"]\nprofile = "modern"\nmixed_recipient_infos = true\n')
    # The sender's own copy shares the envelope, but mailcrypt reads every profile.
    sent = mc(home, "-v", "encrypt", "--to", "bob@example.org", input=MESSAGE)
    assert b"profile modern" in sent.stderr, sent.stderr
    assert b"smime-type=authEnveloped-data" in sent.stdout
    assert b"Hello Bob" in openssl_decrypt(sent.stdout, people["bob"])
    assert mc(home, "decrypt", "--no-replay-check", input=sent.stdout).stdout == MESSAGE
    # A profile set for the sender's own address does restrict it (another client reads it there).
    with (home / "config.toml").open("a") as f:
        f.write('\n[policy.addresses."me@example.org"]\nprofile = "compatible"\n')
    sent = mc(home, "-v", "encrypt", "--to", "bob@example.org", input=MESSAGE)
    assert b"profile compatible" in sent.stderr
    assert b"smime-type=enveloped-data" in sent.stdout


def test_expired_certificate_is_refused_with_a_reason(home: Path, people: dict[str, Made]) -> None:
    proc = mc(home, "keys", "import", people["expired"].cert, ok=False)
    assert proc.returncode == 3, proc.stderr
    assert b"expired" in proc.stderr
    proc = mc(home, "encrypt", "--to", "old@example.org", input=MESSAGE, ok=False)
    assert proc.returncode == 3 and b"old@example.org" in proc.stderr and proc.stdout == b""


def test_list_show_export_remove(home: Path, people: dict[str, Made]) -> None:
    mc(home, "keys", "import", people["bob"].cert)
    listing = mc(home, "keys", "list").stdout.decode()
    assert "bob@example.org" in listing and "me@example.org" in listing and "identity" in listing
    rows = json.loads(mc(home, "keys", "list", "--json").stdout)
    assert {tuple(r["addresses"]) for r in rows} == {("bob@example.org",), ("me@example.org",)}
    bob = next(r for r in rows if r["addresses"] == ["bob@example.org"])
    shown = mc(home, "keys", "show", "bob@EXAMPLE.ORG").stdout.decode()
    assert bob["fingerprint"] in shown and "policy" in shown
    exported = mc(home, "keys", "export", "bob@example.org").stdout
    assert exported == Path(people["bob"].cert).read_bytes().split(b"-----END CERTIFICATE-----")[0] + (
        b"-----END CERTIFICATE-----\n"
    )
    assert b"removed recipient bob@example.org" in mc(home, "keys", "remove", bob["fingerprint"][:16]).stdout
    proc = mc(home, "keys", "export", "bob@example.org", ok=False)
    assert proc.returncode == 3
    # Our own identity is not removed by address: old mail must stay readable.
    proc = mc(home, "keys", "remove", "me@example.org", ok=False)
    assert proc.returncode == 2 and b"fingerprint" in proc.stderr


def test_old_identity_still_decrypts_after_renewal(home: Path) -> None:
    to_me = MESSAGE.replace(b"bob@", b"me@")
    old_mail = mc(home, "encrypt", "--to", "me@example.org", input=to_me).stdout
    # Renewed: valid for longer than the first, so it is the newest whatever the clock says.
    mc(home, "keys", "generate", "me@example.org", "--key-type", "rsa2048", "--days", "900")
    assert len(list(home.rglob("*.key"))) == 2
    new_mail = mc(home, "encrypt", "--to", "me@example.org", input=to_me).stdout
    old = mc(home, "-v", "decrypt", input=old_mail)
    new = mc(home, "-v", "decrypt", input=new_mail)
    assert old.stdout == new.stdout == to_me
    # The old mail was opened by the EC key of init, the new one by the renewed RSA key.
    assert b"ecdh" in old.stderr and b"rsa-pkcs1v15" in new.stderr


def test_pkcs12_identity_import(home: Path, pki: PKI, people: dict[str, Made], tmp_path: Path) -> None:
    p12 = pki.pkcs12(people["carol"], "p12-secret-9d2", legacy=True)
    password = tmp_path / "p12.pass"
    password.write_text("p12-secret-9d2\n")
    password.chmod(0o600)
    proc = mc(home, "keys", "import", p12, "--password-file", password)
    assert b"imported identity carol@example.net" in proc.stdout
    sent = subprocess.run(
        ["openssl", "cms", "-encrypt", "-aes256", people["carol"].cert], input=MESSAGE, capture_output=True, check=True
    ).stdout
    assert b"Hello Bob" in mc(home, "decrypt", input=sent).stdout


def test_secrets_stay_out_of_errors_and_logs(home: Path) -> None:
    to_me = MESSAGE.replace(b"bob@", b"me@")
    sent = mc(home, "encrypt", "--to", "me@example.org", input=to_me).stdout
    wrong = "wrong-pass-Zq81"
    proc = mc(home, "-v", "decrypt", input=sent, env=env_for(home, MAILCRYPT_PASSPHRASE=wrong), ok=False)
    assert proc.returncode == 2 and b"passphrase" in proc.stderr
    assert wrong.encode() not in proc.stderr + proc.stdout
    assert PASSPHRASE.encode() not in proc.stderr + proc.stdout
    assert proc.stderr.count(b"\n") == 1

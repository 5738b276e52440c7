"""Signatures, replay protection and harvesting through the real ``mailcrypt`` command.

Two homes, Alice's and Bob's, exchange mail the way two users would: Alice
signs and encrypts with ``mailcrypt encrypt``, Bob reads with ``mailcrypt
decrypt``. OpenSSL checks the signatures independently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailcrypt.config import load_settings
from mailcrypt.envelope import Signer
from mailcrypt.keydir import KeyDirectory
from mailcrypt.keydir.passphrase import PassphraseSource
from mailcrypt.mime import enveloped as smime
from mailcrypt.mime.signed import sign_message

PASSPHRASE = "signing-tests passphrase 4711"
MAILCRYPT = [sys.executable, "-m", "mailcrypt"]


def message(sender: str, to: str, body: bytes = b"Meet at noon.") -> bytes:
    return (
        (
            f"From: {sender}\r\nTo: {to}\r\nSubject: lunch\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        + body
        + b"\r\n"
    )


def mc(
    home: Path, *args: str | Path, input: bytes | None = None, ok: bool = True
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    env.update(MAILCRYPT_HOME=str(home), MAILCRYPT_PASSPHRASE=PASSPHRASE)
    proc = subprocess.run(
        [*MAILCRYPT, *map(str, args)],
        input=input,
        capture_output=True,
        env=env,
        timeout=120,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def encrypt_as(
    home: Path, sender: str, to: str, *options: str, verbose: bool = False, ok: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """``mailcrypt [-v] encrypt OPTIONS --to TO`` in ``home`` of the lunch ``message`` from ``sender`` to ``to``."""
    return mc(home, *(["-v"] if verbose else []), "encrypt", *options, "--to", to, input=message(sender, to), ok=ok)


@pytest.fixture
def homes(tmp_path: Path) -> dict[str, Path]:
    """Alice (EC) and Bob (RSA); Alice has Bob's certificate, Bob knows nothing of Alice."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    mc(alice, "init", "alice@example.org", "--key-type", "p256")
    mc(bob, "init", "bob@example.net", "--key-type", "rsa2048")
    (tmp_path / "bob.crt").write_bytes(mc(bob, "keys", "export", "bob@example.net").stdout)
    mc(alice, "keys", "import", tmp_path / "bob.crt")
    return {"alice": alice, "bob": bob}


def sign_as(home: Path, msg: bytes, when: datetime) -> bytes:
    """``msg`` signed by the identity in ``home`` at ``when`` (the library, to set the signing time)."""
    settings = load_settings(home)
    identity = KeyDirectory.from_settings(settings).identities(
        PassphraseSource(environ={"MAILCRYPT_PASSPHRASE": PASSPHRASE}, interactive=False)
    )[0]
    return sign_message(msg, Signer.from_identity(identity), signing_time=when)


def test_encrypt_signs_inside_and_openssl_verifies(homes: dict[str, Path], tmp_path: Path) -> None:
    sent = encrypt_as(homes["alice"], "alice@example.org", "bob@example.net", verbose=True)
    assert b"signed as CN=alice@example.org" in sent.stderr
    # Bob's key opens it with OpenSSL; inside is a detached multipart/signed that OpenSSL verifies.
    bob_key = next((homes["bob"] / "keys").rglob("*.key"))
    bob_crt = bob_key.with_suffix(".crt")
    inner = subprocess.run(
        ["openssl", "cms", "-decrypt", "-inkey", str(bob_key), "-recip", str(bob_crt), "-passin", "env:PW"],
        input=sent.stdout,
        capture_output=True,
        env={**os.environ, "PW": PASSPHRASE},
        check=True,
    ).stdout
    assert b"multipart/signed" in inner and b"application/pkcs7-signature" in inner
    verified = subprocess.run(["openssl", "cms", "-verify", "-noverify"], input=inner, capture_output=True)
    assert verified.returncode == 0, verified.stderr
    assert b"Meet at noon." in verified.stdout
    # --no-sign leaves the signature out.
    unsigned = encrypt_as(homes["alice"], "alice@example.org", "bob@example.net", "--no-sign")
    assert b"multipart/signed" not in mc(homes["bob"], "decrypt", input=unsigned.stdout).stdout


def test_decrypt_verifies_and_reports_the_signer(homes: dict[str, Path]) -> None:
    sent = encrypt_as(homes["alice"], "alice@example.org", "bob@example.net")
    read = mc(homes["bob"], "-v", "decrypt", input=sent.stdout)
    assert b"signed (detached) by CN=alice@example.org" in read.stderr
    assert b"Meet at noon." in read.stdout and b"Subject: lunch" in read.stdout
    assert b"multipart/signed" not in read.stdout


def test_replayed_message_is_flagged(homes: dict[str, Path]) -> None:
    sent = encrypt_as(homes["alice"], "alice@example.org", "bob@example.net")
    mc(homes["bob"], "decrypt", input=sent.stdout)
    again = mc(homes["bob"], "decrypt", input=sent.stdout, ok=False)
    assert again.returncode == 5 and again.stdout == b""
    assert b"first" in again.stderr and again.stderr.count(b"\n") == 1
    # Re-reading on purpose works.
    assert b"Meet at noon." in mc(homes["bob"], "decrypt", "--no-replay-check", input=sent.stdout).stdout


def test_unsigned_envelope_replay_is_flagged_too(homes: dict[str, Path]) -> None:
    sent = encrypt_as(homes["alice"], "alice@example.org", "bob@example.net", "--no-sign")
    mc(homes["bob"], "decrypt", input=sent.stdout)
    assert mc(homes["bob"], "decrypt", input=sent.stdout, ok=False).returncode == 5


@pytest.mark.parametrize(
    ("offset", "code"), [(timedelta(days=-40), 5), (timedelta(minutes=2), 0), (timedelta(minutes=10), 5)]
)
def test_freshness_window(homes: dict[str, Path], tmp_path: Path, offset: timedelta, code: int) -> None:
    signed = sign_as(homes["alice"], message("alice@example.org", "bob@example.net"), datetime.now(UTC) + offset)
    bob_crt = tmp_path / "bob.crt"
    from cryptography import x509

    sent = smime.encrypt_message(signed, [x509.load_pem_x509_certificate(bob_crt.read_bytes())])
    proc = mc(homes["bob"], "decrypt", input=sent, ok=False)
    assert proc.returncode == code, proc.stderr
    if code:
        assert any(word in proc.stderr for word in (b"old", b"stale", b"future", b"window"))
        assert proc.stdout == b""


def test_harvest_then_reply_with_modern(homes: dict[str, Path]) -> None:
    alice, bob = homes["alice"], homes["bob"]
    proc = encrypt_as(bob, "bob@example.net", "alice@example.org", ok=False)
    assert proc.returncode == 3  # Bob has no certificate for Alice yet.
    sent = encrypt_as(alice, "alice@example.org", "bob@example.net")
    read = mc(bob, "-v", "decrypt", input=sent.stdout)
    assert b"harvested the certificate" in read.stderr
    listing = mc(bob, "keys", "list").stdout
    assert b"alice@example.org" in listing
    # The reply needs no manual import, and Alice announced AES-GCM: modern.
    reply = encrypt_as(bob, "bob@example.net", "alice@example.org", verbose=True)
    assert b"profile modern" in reply.stderr, reply.stderr
    assert b"smime-type=authEnveloped-data" in reply.stdout
    back = mc(alice, "-v", "decrypt", input=reply.stdout)
    assert b"signed (detached) by CN=bob@example.net" in back.stderr
    assert b"aes256-gcm" in back.stderr


def test_harvest_never_replaces_a_pinned_certificate(homes: dict[str, Path], tmp_path: Path) -> None:
    alice, bob = homes["alice"], homes["bob"]
    # Bob's administrator pinned another certificate for Alice.
    other = tmp_path / "other"
    mc(other, "init", "alice@example.org", "--key-type", "p256")
    (tmp_path / "pinned.crt").write_bytes(mc(other, "keys", "export", "alice@example.org").stdout)
    mc(bob, "keys", "import", tmp_path / "pinned.crt")
    sent = encrypt_as(alice, "alice@example.org", "bob@example.net")
    mc(bob, "decrypt", input=sent.stdout)
    reply = encrypt_as(bob, "bob@example.net", "alice@example.org")
    # The reply is for the pinned certificate: the other home reads it, Alice's does not.
    assert b"Meet at noon." in mc(other, "decrypt", input=reply.stdout).stdout
    assert mc(alice, "decrypt", input=reply.stdout, ok=False).returncode == 3


def test_verify_command(homes: dict[str, Path], tmp_path: Path) -> None:
    signed = sign_as(homes["alice"], message("alice@example.org", "bob@example.net"), datetime.now(UTC))
    proc = mc(homes["bob"], "verify", input=signed)
    assert proc.stdout.startswith(b"signed (detached) by CN=alice@example.org")
    tampered = signed.replace(b"Meet at noon.", b"Meet at nine.")
    bad = mc(homes["bob"], "verify", input=tampered, ok=False)
    assert bad.returncode == 5 and bad.stdout == b"" and bad.stderr.count(b"\n") == 1
    plain = mc(homes["bob"], "verify", input=message("a@example.org", "b@example.org"), ok=False)
    assert plain.returncode == 4

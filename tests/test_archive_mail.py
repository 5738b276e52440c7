"""Mail in algorithms real archives hold is delivered readable, by ``mailcrypt decrypt`` and by fetch.

- SHA-1 signatures inside an encryption (the Thunderbird corpus's
  ``alice.sig.SHA1.opaque.env.eml`` and ``alice.dsig.SHA1.multipart.env.eml``):
  decrypted and delivered, with a status saying the signature uses SHA-1 and
  is not accepted as proof; for the replay guard they count as unsigned
  (the envelope digest is the key); ``mailcrypt verify`` exits 5 with one line.
- ``openssl cms`` envelopes with RC2-40, single DES, and the default cipher to
  a P-256 and a P-384 certificate (3DES with the CMS 3DES key wrap), from
  ``tests/vectors/``: delivered readable by both paths.

The fetch path is ``MessageProcessor.process`` with a real replay guard on a
state store (what ``sync`` calls for every message).
"""

from __future__ import annotations

import base64
import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import CORPUS, require_corpus
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailcrypt.envelope import identity_from_key
from mailcrypt.fetch import MessageProcessor
from mailcrypt.state import ReplayGuard, Store

GENERATED = CORPUS / "generated"
VECTORS = Path(__file__).resolve().parent / "vectors"
SHA1_ENVELOPED = ["alice.sig.SHA1.opaque.env.eml", "alice.dsig.SHA1.multipart.env.eml"]
LEGACY_VECTORS = {
    "openssl-rsa2048-rc2-40-cbc": ("rsa2048", "rc2-40-cbc"),
    "openssl-rsa2048-des-cbc": ("rsa2048", "des-cbc"),
    "openssl-p256-default-des3-wrap": ("p256", "des-ede3-cbc"),
    "openssl-p384-default-des3-wrap": ("p384", "des-ede3-cbc"),
}
# The corpus certificates are valid from January 2026 until 2031.
NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def private_copy(tmp_path: Path, key: Path) -> Path:
    """A 0600 copy of a test key: the key reader refuses key files others can read."""
    copy = tmp_path / f"{key.parent.name}-{key.name}"
    copy.write_bytes(key.read_bytes())
    copy.chmod(0o600)
    return copy


def mailcrypt(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    env["MAILCRYPT_HOME"] = str(tmp_path / "no-home")  # Key files only: no home, no replay store.
    return subprocess.run(
        [sys.executable, "-m", "mailcrypt", *map(str, args)], capture_output=True, env=env, timeout=120,
        stdin=subprocess.DEVNULL,
    )


def vector_message(name: str) -> bytes:
    """The vector's CMS as the application/pkcs7-mime message a mail client receives (RFC 8551 §3.3)."""
    text = (VECTORS / f"{name}.vec").read_text()
    der = base64.b64decode(text.split("-----BEGIN CMS-----")[1].split("-----END CMS-----")[0])
    body = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return (
        b"From: archive@example.org\r\nTo: bob@example.org\r\nSubject: [...]\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    )


def vector_key(name: str) -> tuple[Path, Path]:
    return VECTORS / "keys" / f"{name}.key", VECTORS / "keys" / f"{name}.crt"


def identity(key: Path, cert: Path) -> object:
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    return identity_from_key(private, x509.load_pem_x509_certificate(cert.read_bytes()))  # type: ignore[arg-type]


@pytest.fixture
def processor(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = Store.open(tmp_path / "state.db")
    ids = [identity(*vector_key(n)) for n in ("rsa2048", "p256", "p384")]
    if CORPUS.is_dir():
        ids.append(identity(GENERATED / "Bob.key", GENERATED / "Bob.crt"))
    yield MessageProcessor(ids, guard=ReplayGuard(store), clock=lambda: NOW)  # type: ignore[arg-type]
    store.close()


def status(data: bytes) -> str:
    line = next(x for x in data.split(b"\r\n") if x.lower().startswith(b"x-mailcrypt-status:"))
    return line.split(b":", 1)[1].decode().strip()


@pytest.mark.parametrize("name", SHA1_ENVELOPED)
def test_sha1_signed_encrypted_mail_is_decrypted_by_the_cli(name: str, tmp_path: Path) -> None:
    require_corpus()
    out = tmp_path / "out.eml"
    key = private_copy(tmp_path, GENERATED / "Bob.key")
    proc = mailcrypt(tmp_path, "decrypt", "--key", key, "--cert", GENERATED / "Bob.crt", GENERATED / name, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert b"This is a test message from Alice to Bob." in out.read_bytes()
    assert b"uses SHA-1 and is not accepted as proof" in proc.stderr


@pytest.mark.parametrize("name", SHA1_ENVELOPED)
def test_sha1_signed_encrypted_mail_is_delivered_by_fetch(name: str, processor: MessageProcessor) -> None:
    require_corpus()
    outcome = processor.process((GENERATED / name).read_bytes(), source=f"test/{name}")
    assert not outcome.quarantine, outcome.note
    assert outcome.decrypted and not outcome.verified
    assert status(outcome.data) == "decrypted; signature uses SHA-1, not accepted as proof"
    assert b"This is a test message from Alice to Bob." in outcome.data
    # For the replay guard it is unsigned: the envelope digest, no signing time.
    assert outcome.record is not None
    assert outcome.record.kind == "envelope" and outcome.record.signing_time is None
    # The same message again is a replay of the envelope.
    processor.guard.record_delivered([(outcome.record.digest, None, NOW, "envelope", outcome.record.also)])
    again = processor.process((GENERATED / name).read_bytes(), source=f"test/{name}")
    assert again.quarantine and again.reason == "replay"


@pytest.mark.parametrize("name", ["alice.sig.SHA1.opaque.eml", "alice.dsig.SHA1.multipart.eml"])
def test_verify_refuses_a_sha1_signature_as_proof(name: str, tmp_path: Path) -> None:
    require_corpus()
    proc = mailcrypt(tmp_path, "verify", GENERATED / name)
    assert proc.returncode == 5
    assert proc.stdout == b""
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "SHA-1" in lines[0] and "not accepted as proof" in lines[0], lines
    sha256 = mailcrypt(tmp_path, "verify", GENERATED / name.replace("SHA1", "SHA256"))
    assert sha256.returncode == 0, sha256.stderr


@pytest.mark.parametrize("name", sorted(LEGACY_VECTORS))
def test_archive_ciphers_are_decrypted_by_the_cli(name: str, tmp_path: Path) -> None:
    key, cert = vector_key(LEGACY_VECTORS[name][0])
    source = tmp_path / "in.eml"
    source.write_bytes(vector_message(name))
    out = tmp_path / "out.eml"
    proc = mailcrypt(tmp_path, "-v", "decrypt", "--key", private_copy(tmp_path, key), "--cert", cert, source, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert LEGACY_VECTORS[name][1].encode() in proc.stderr
    assert "Grüße, ça va?".encode() in out.read_bytes()


@pytest.mark.parametrize("name", sorted(LEGACY_VECTORS))
def test_archive_ciphers_are_delivered_by_fetch(name: str, processor: MessageProcessor) -> None:
    outcome = processor.process(vector_message(name), source=f"test/{name}")
    assert not outcome.quarantine, outcome.note
    assert outcome.decrypted
    assert status(outcome.data) == "decrypted; not signed"
    assert f"X-Mailcrypt-Cipher: {LEGACY_VECTORS[name][1]};".encode() in outcome.data
    assert "Grüße, ça va?".encode() in outcome.data

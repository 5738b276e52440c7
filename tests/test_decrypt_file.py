"""``mailcrypt.mime.decrypt_file``: no plaintext leaves the MIME layer before it is checked.

A tampered AES-GCM message, and an AES-CBC message whose padding is valid
but whose inner signature is not, must leave nothing behind: no destination
file, no temporary file beside it, and the directory exactly as it was. A
good message becomes visible only at ``publish``, as one 0600 file renamed
into place.
"""

from __future__ import annotations

import io
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import KeyPair
from tamper import cbc_with_bad_signature, tampered_gcm

from mailcrypt import errors
from mailcrypt.envelope import Signer
from mailcrypt.mime import Verification, decrypt_file, sign_message
from mailcrypt.mime.enveloped import decrypt_message, encrypt_message
from mailcrypt.policy import MODERN

NOW = datetime.now(UTC)
SECRET = b"the numbers are in and they are good"


def message(size: int = 300_000) -> bytes:
    lines = b"".join(b"%08d %s\r\n" % (i, SECRET) for i in range(size // 48))
    return (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: numbers\r\n"
        b"Message-ID: <decrypt-file@example.org>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + lines
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory that already holds somebody's file, to show that nothing else appears."""
    (tmp_path / "unrelated.txt").write_bytes(b"keep\n")
    return tmp_path


def test_tampered_gcm_leaves_nothing(rsa2048: KeyPair, work: Path) -> None:
    # Large enough that many chunks of plaintext were written before the tag was checked.
    data = tampered_gcm(message(2_000_000), rsa2048.cert)
    for verify in (None, Verification(now=NOW)):
        with pytest.raises(errors.DecryptionFailed):
            decrypt_file(io.BytesIO(data), [rsa2048.identity], destination=work / "out.eml", verify=verify)
        assert sorted(os.listdir(work)) == ["unrelated.txt"]
        with pytest.raises(errors.DecryptionFailed):
            decrypt_file(io.BytesIO(data), [rsa2048.identity], verify=verify)
    # Over an existing file: it stays as it was.
    (work / "out.eml").write_bytes(b"previous\n")
    with pytest.raises(errors.DecryptionFailed):
        decrypt_file(io.BytesIO(data), [rsa2048.identity], destination=work / "out.eml")
    assert (work / "out.eml").read_bytes() == b"previous\n"
    assert sorted(os.listdir(work)) == ["out.eml", "unrelated.txt"]


def test_cbc_with_valid_padding_and_bad_inner_signature(rsa2048: KeyPair, ec_p256: KeyPair, work: Path) -> None:
    signed = sign_message(message(), Signer(ec_p256.key, ec_p256.cert), signing_time=NOW)
    data = cbc_with_bad_signature(signed, rsa2048.cert)
    # The padding is valid: the envelope alone opens, to altered content.
    altered, info = decrypt_message(data, [rsa2048.identity])
    assert not info.authenticated and len(altered) == len(signed) and altered != signed
    # Asked to verify, decrypt_file publishes nothing.
    with pytest.raises(errors.BadSignature):
        decrypt_file(io.BytesIO(data), [rsa2048.identity], destination=work / "out.eml", verify=Verification(now=NOW))
    assert sorted(os.listdir(work)) == ["unrelated.txt"]
    with pytest.raises(errors.BadSignature):
        decrypt_file(io.BytesIO(data), [rsa2048.identity], verify=Verification(now=NOW))


def test_published_only_at_publish_mode_0600(rsa2048: KeyPair, ec_p256: KeyPair, work: Path) -> None:
    original = message()
    signed = sign_message(original, Signer(ec_p256.key, ec_p256.cert), signing_time=NOW)
    data = encrypt_message(signed, [rsa2048.cert], profile=MODERN)
    destination = work / "out.eml"
    with decrypt_file(
        io.BytesIO(data), [rsa2048.identity], destination=destination, verify=Verification(now=NOW)
    ) as plain:
        assert [layer.kind for layer in plain.unwrapped.layers] == ["enveloped", "signed"]
        # Not yet visible: only the private temporary file beside the destination.
        names = sorted(os.listdir(work))
        assert "out.eml" not in names and len(names) == 2
        temporary = work / next(n for n in names if n != "unrelated.txt")
        assert stat.S_IMODE(temporary.stat().st_mode) == 0o600
        plain.publish()
    assert sorted(os.listdir(work)) == ["out.eml", "unrelated.txt"]
    assert stat.S_IMODE(destination.stat().st_mode) == 0o600
    assert SECRET in destination.read_bytes() and b"multipart/signed" not in destination.read_bytes()


def test_not_published_without_publish(rsa2048: KeyPair, work: Path) -> None:
    data = encrypt_message(message(), [rsa2048.cert])
    with decrypt_file(io.BytesIO(data), [rsa2048.identity], destination=work / "out.eml") as plain:
        assert SECRET in plain.file.read()
    # A check of the caller's own (the replay guard) failing inside the block: nothing either.
    with pytest.raises(errors.ReplayedMessage):
        with decrypt_file(io.BytesIO(data), [rsa2048.identity], destination=work / "out.eml"):
            raise errors.ReplayedMessage("seen before", first_seen=NOW, digest="00", kind="envelope")
    assert sorted(os.listdir(work)) == ["unrelated.txt"]


def test_without_destination_publish_copies_to_a_stream(rsa2048: KeyPair) -> None:
    original = message()
    data = encrypt_message(original, [rsa2048.cert])
    out = io.BytesIO()
    with decrypt_file(io.BytesIO(data), [rsa2048.identity]) as plain:
        assert out.getvalue() == b""
        with pytest.raises(TypeError):
            plain.publish()
        plain.publish(out)
        with pytest.raises(RuntimeError):
            plain.publish(out)
    assert SECRET in out.getvalue()


def test_signed_only_needs_verify(ec_p256: KeyPair, work: Path) -> None:
    signed = sign_message(message(), Signer(ec_p256.key, ec_p256.cert), signing_time=NOW)
    with pytest.raises(errors.NotEncryptedError):
        decrypt_file(io.BytesIO(signed), [ec_p256.identity], destination=work / "out.eml")
    with decrypt_file(io.BytesIO(signed), [], destination=work / "out.eml", verify=Verification(now=NOW)) as plain:
        assert [layer.kind for layer in plain.unwrapped.layers] == ["signed"]
        plain.publish()
    assert SECRET in (work / "out.eml").read_bytes()
    tampered = signed.replace(b"00000007 the numbers", b"00000007 The numbers")
    assert tampered != signed
    with pytest.raises(errors.BadSignature):
        decrypt_file(io.BytesIO(tampered), [], destination=work / "again.eml", verify=Verification(now=NOW))
    assert sorted(os.listdir(work)) == ["out.eml", "unrelated.txt"]


def test_a_dropped_plaintext_takes_its_file_with_it(rsa2048: KeyPair, work: Path) -> None:
    data = encrypt_message(message(), [rsa2048.cert])
    plain = decrypt_file(io.BytesIO(data), [rsa2048.identity], destination=work / "out.eml")
    assert len(os.listdir(work)) == 2
    del plain  # No with block, no publish: CPython collects it here.
    assert sorted(os.listdir(work)) == ["unrelated.txt"]

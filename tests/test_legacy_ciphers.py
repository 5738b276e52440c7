"""Archive algorithms read and never written: RC2 (RFC 2268), single DES, the CMS 3DES key wrap (RFC 3217).

The OpenSSL-made envelopes are vectors in ``tests/vectors/`` (``test_vectors.py``
decrypts them); these tests check the parts on their own: RC2 against the test
vectors of RFC 2268 §5 and against cryptography's RC2, the 3DES key wrap's
checksum, the policy, and that no profile can write any of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import RC2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from mailcrypt import errors
from mailcrypt.envelope import identity_from_key, open_envelope
from mailcrypt.envelope.content import ContentDecryptor
from mailcrypt.envelope.rc2 import RC2CBCDecryptor, effective_bits
from mailcrypt.policy import COMPATIBLE, CONTENT_CIPHERS, LEGACY_CONTENT_CIPHERS, Policy

VECTORS = Path(__file__).resolve().parent / "vectors"

# RFC 2268 §5: (key, effective bits, plaintext, ciphertext).
RFC2268 = [
    ("0000000000000000", 63, "0000000000000000", "ebb773f993278eff"),
    ("ffffffffffffffff", 64, "ffffffffffffffff", "278b27e42e2f0d49"),
    ("3000000000000000", 64, "1000000000000001", "30649edf9be7d2c2"),
    ("88", 64, "0000000000000000", "61a8a244adacccf0"),
    ("88bca90e90875a", 64, "0000000000000000", "6ccf4308974c267f"),
    ("88bca90e90875a7f0f79c384627bafb2", 64, "0000000000000000", "1a807d272bbe5db1"),
    ("88bca90e90875a7f0f79c384627bafb2", 128, "0000000000000000", "2269552ab0f85ca6"),
    ("88bca90e90875a7f0f79c384627bafb216f80a6f85920584c42fceb0be255daf1e", 129, "0000000000000000", "5b78d3a43dfff1f1"),
]


@pytest.mark.parametrize(("key", "bits", "plain", "cipher"), RFC2268)
def test_rc2_rfc2268_vectors(key: str, bits: int, plain: str, cipher: str) -> None:
    # One block in CBC with a zero IV is the raw block decryption.
    decryptor = RC2CBCDecryptor(bytes.fromhex(key), bytes(8), bits)
    assert decryptor.update(bytes.fromhex(cipher)) + decryptor.finalize() == bytes.fromhex(plain)


def test_rc2_matches_cryptography_in_odd_chunks() -> None:
    key, iv, data = os.urandom(16), os.urandom(8), os.urandom(1000)
    encryptor = Cipher(RC2(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(data) + encryptor.finalize()
    decryptor = RC2CBCDecryptor(key, iv, 128)
    out = b"".join(decryptor.update(ciphertext[i : i + 13]) for i in range(0, len(ciphertext), 13))
    assert out + decryptor.finalize() == data


def test_rc2_versions() -> None:
    assert [effective_bits(v) for v in (160, 120, 58, None, 256)] == [40, 64, 128, 32, 256]
    with pytest.raises(ValueError):
        effective_bits(7)


def _vector(name: str) -> tuple[bytes, object]:
    import base64

    text = (VECTORS / f"{name}.vec").read_text()
    pem = text.split("-----BEGIN CMS-----")[1].split("-----END CMS-----")[0]
    key_name = next(line.split(": ")[1] for line in text.splitlines() if line.startswith("identity: "))
    key = serialization.load_pem_private_key((VECTORS / "keys" / f"{key_name}.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((VECTORS / "keys" / f"{key_name}.crt").read_bytes())
    return base64.b64decode(pem), identity_from_key(key, cert)  # type: ignore[arg-type]


def test_des3_wrap_checksum_catches_a_changed_wrapped_key() -> None:
    der, identity = _vector("openssl-p256-default-des3-wrap")
    # The wrapped key is the last OCTET STRING of 40 octets in the KeyAgreeRecipientInfo.
    at = der.find(b"\x04\x28") + 2
    assert 2 < at < der.find(bytes.fromhex("06082a864886f70d0307"))  # Before the des-ede3-cbc content algorithm.
    changed = der[:at] + bytes([der[at] ^ 1]) + der[at + 1 :]
    with pytest.raises(errors.DecryptionFailed):
        open_envelope(changed, [identity], policy=Policy())  # type: ignore[list-item]


@pytest.mark.parametrize("name", ["openssl-rsa2048-rc2-40-cbc", "openssl-rsa2048-des-cbc"])
def test_policy_without_legacy_ciphers_refuses_them(name: str) -> None:
    der, identity = _vector(name)
    strict = Policy(content_ciphers=frozenset(CONTENT_CIPHERS))
    with pytest.raises(errors.PolicyViolation):
        open_envelope(der, [identity], policy=strict)  # type: ignore[list-item]


@pytest.mark.parametrize("cipher", sorted(LEGACY_CONTENT_CIPHERS))
def test_legacy_ciphers_are_never_written(cipher: str) -> None:
    with pytest.raises(ValueError, match="unknown content cipher"):
        COMPATIBLE.with_options(cipher=cipher)


def test_rc2_parameters_of_an_unread_size_are_unsupported() -> None:
    # RC2CBCParameter { version 7, iv }: a size no mail uses and RFC 2268 §6 codes otherwise.
    params = bytes.fromhex("300d" + "020107" + "0408" + "00" * 8)
    with pytest.raises(errors.UnsupportedAlgorithm):
        ContentDecryptor("1.2.840.113549.3.2", params, policy=Policy(), authenticated=False)

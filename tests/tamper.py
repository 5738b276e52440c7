"""Tampered S/MIME messages for the tests that no unverified plaintext gets out.

``tampered_gcm``: AuthEnvelopedData (AES-GCM) whose tag has one bit flipped,
so that every byte of ciphertext decrypts and only the tag check at the end
fails. ``cbc_with_bad_signature``: EnvelopedData (AES-CBC) around a signed
message, with one bit flipped in a ciphertext block in the middle: that
block's plaintext is garbled and the next one has a bit flipped (RFC 8551
§2.7: CBC is malleable), the padding stays valid, and only the signature
inside tells.
"""

from __future__ import annotations

import base64

from asn1crypto import cms
from cryptography import x509

from mailcrypt.mime.enveloped import encrypt_message
from mailcrypt.policy import COMPATIBLE, MODERN


def der_of(smime_message: bytes) -> bytes:
    return base64.b64decode(smime_message.split(b"\r\n\r\n", 1)[1])


def with_der(smime_message: bytes, der: bytes) -> bytes:
    """The same S/MIME message with its body replaced by ``der``, in base64 lines."""
    head = smime_message.split(b"\r\n\r\n", 1)[0]
    return head + b"\r\n\r\n" + base64.encodebytes(der).replace(b"\n", b"\r\n")


def tampered_gcm(message: bytes, cert: x509.Certificate) -> bytes:
    encrypted = encrypt_message(message, [cert], profile=MODERN)
    der = bytearray(der_of(encrypted))
    assert der[-18:-16] == b"\x04\x10"  # RFC 5083 §2.1: the mac OCTET STRING comes last.
    der[-1] ^= 0x01
    return with_der(encrypted, bytes(der))


def cbc_with_bad_signature(signed: bytes, cert: x509.Certificate) -> bytes:
    encrypted = encrypt_message(signed, [cert], profile=COMPATIBLE)
    der = bytearray(der_of(encrypted))
    ciphertext = cms.ContentInfo.load(bytes(der))["content"]["encrypted_content_info"]["encrypted_content"].native
    middle = len(ciphertext) // 2 // 16 * 16
    at = der.find(ciphertext[middle : middle + 16])
    assert at > 0 and len(ciphertext) > 64 * 16, "the ciphertext block must be found, far from the padding"
    der[at + 5] ^= 0x04
    return with_der(encrypted, bytes(der))

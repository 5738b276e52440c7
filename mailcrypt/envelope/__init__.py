"""The envelope core: S/MIME encryption as CMS, bytes in and bytes out.

For every message a fresh content-encryption key is drawn from the CSPRNG,
the content is encrypted with it (AES-CBC in EnvelopedData, RFC 5652, or
AES-GCM in AuthEnvelopedData, RFC 5083/5084), and the key is wrapped once
per recipient certificate: RSA key transport (PKCS#1 v1.5 or OAEP) or
ephemeral-static ECDH (RFC 5753). Decryption accepts DER and BER, tries
every identity given and says which one worked.

This package is pure: it opens no files or sockets, reads no configuration
and logs nothing. Randomness comes in as ``rng``; the ``Policy`` comes in as
an argument. It raises only ``mailcrypt.errors`` exceptions (and
``TypeError``/``ValueError`` for programming errors).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from mailcrypt.envelope import pubkey
from mailcrypt.envelope.asn1 import OID_AUTH_ENVELOPED_DATA, OID_ENVELOPED_DATA
from mailcrypt.envelope.capabilities import OUR_CAPABILITIES, announces_key_agreement, supports_profile
from mailcrypt.envelope.certificates import load_certificate, load_certificates
from mailcrypt.envelope.codec import read_element
from mailcrypt.envelope.ecdh import ECDHIdentity, ECDHRecipient
from mailcrypt.envelope.fingerprint import content_type_of, envelope_digest
from mailcrypt.envelope.keys import CertificateRef, Identity, Recipient
from mailcrypt.envelope.pubkey import algorithm_name, public_key
from mailcrypt.envelope.reader import EnvelopeInfo, OpenEnvelope, decrypt_all
from mailcrypt.envelope.reader import open_envelope as _open
from mailcrypt.envelope.rsa import RSAIdentity, RSARecipient
from mailcrypt.envelope.signed import Signer, sign
from mailcrypt.envelope.stanza import (
    Algorithm,
    IssuerSerial,
    KeyAgreeStanza,
    KeyId,
    KeyTransStanza,
    OriginatorKey,
    OtherStanza,
    RecipientEncryptedKey,
    RecipientId,
    Stanza,
)
from mailcrypt.envelope.stanza_der import encode_recipient_info, parse_recipient_info
from mailcrypt.envelope.verifying import SignatureInfo, verify
from mailcrypt.envelope.writer import EnvelopeWriter as _Writer
from mailcrypt.errors import CMSParseError, InvalidRecipient, UnsupportedAlgorithm
from mailcrypt.policy import COMPATIBLE, DEFAULT_POLICY, Policy, Profile

RecipientLike = x509.Certificate | Recipient


@dataclass(frozen=True)
class Decrypted:
    """The decrypted MIME entity and what was used to open it."""

    content: bytes
    info: EnvelopeInfo


def recipient_from_certificate(
    certificate: x509.Certificate, *, profile: Profile = COMPATIBLE, policy: Policy = DEFAULT_POLICY
) -> Recipient:
    """The Recipient for a certificate's key type, with the profile's algorithms.

    Raises ``InvalidRecipient`` for a key that cannot receive mail.
    """
    if not isinstance(certificate, x509.Certificate):
        raise TypeError("certificate must be a cryptography x509.Certificate")
    try:
        key = pubkey.public_key(certificate, policy=policy)
    except (UnsupportedAlgorithm, CMSParseError) as exc:
        raise InvalidRecipient(str(exc), subject=certificate.subject.rfc4514_string()) from None
    if isinstance(key, RSAPublicKey):
        return RSARecipient(certificate, profile=profile, policy=policy)
    if isinstance(key, EllipticCurvePublicKey):
        return ECDHRecipient(certificate, profile=profile, policy=policy)
    raise InvalidRecipient(
        f"{type(key).__name__} keys cannot receive S/MIME mail: {certificate.subject.rfc4514_string()}",
        subject=certificate.subject.rfc4514_string(),
    )


def uses_key_agreement(certificate: x509.Certificate) -> bool:
    """True when ``recipient_from_certificate`` wraps for it a KeyAgreeRecipientInfo (an EC key).

    RFC 5652 §6.2: key transport (RSA) and key agreement (ECDH, RFC 5753) are
    different RecipientInfo choices; which clients read which is DESIGN.md §1
    "Readable by every recipient". A key that cannot be read is not EC here.
    """
    if not isinstance(certificate, x509.Certificate):
        raise TypeError("certificate must be a cryptography x509.Certificate")
    try:
        return isinstance(certificate.public_key(), EllipticCurvePublicKey)
    except (ValueError, UnsupportedAlgorithm):
        return False


def identity_from_key(private_key: object, certificate: x509.Certificate) -> Identity:
    """The Identity for a private key and its certificate.

    Raises ``TypeError`` for an unsupported key type and ``ValueError`` when
    the key does not belong to the certificate.
    """
    if isinstance(private_key, RSAPrivateKey):
        return RSAIdentity(private_key, certificate)
    if isinstance(private_key, EllipticCurvePrivateKey):
        return ECDHIdentity(private_key, certificate)
    raise TypeError(f"unsupported private key type {type(private_key).__name__}")


def _recipients(recipients: Sequence[RecipientLike], profile: Profile, policy: Policy) -> list[Recipient]:
    if isinstance(recipients, (x509.Certificate, Recipient)) or not isinstance(recipients, Sequence):
        raise TypeError("recipients must be a sequence of certificates or Recipient objects")
    if not recipients:
        raise ValueError("at least one recipient is needed")
    out = []
    for r in recipients:
        if isinstance(r, Recipient):
            out.append(r)
        else:
            out.append(recipient_from_certificate(r, profile=profile, policy=policy))
    return out


class EnvelopeWriter(_Writer):
    """Streaming writer (see ``writer.EnvelopeWriter``) taking certificates too."""

    def __init__(
        self,
        recipients: Sequence[RecipientLike],
        *,
        content_length: int,
        profile: Profile = COMPATIBLE,
        policy: Policy = DEFAULT_POLICY,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not isinstance(profile, Profile) or not isinstance(policy, Policy):
            raise TypeError("profile and policy must be mailcrypt.policy objects")
        super().__init__(
            _recipients(recipients, profile, policy),
            content_length=content_length,
            profile=profile,
            policy=policy,
            rng=rng,
        )


def encrypt(
    content: bytes,
    recipients: Sequence[RecipientLike],
    *,
    profile: Profile = COMPATIBLE,
    policy: Policy = DEFAULT_POLICY,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Encrypt ``content`` (a MIME entity) to every recipient; return a DER ContentInfo."""
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise TypeError("content must be bytes")
    writer = EnvelopeWriter(recipients, content_length=len(content), profile=profile, policy=policy, rng=rng)
    return b"".join((writer.header(), writer.update(content), writer.finish()))


def open_envelope(
    data: bytes | bytearray | memoryview, identities: Sequence[Identity], *, policy: Policy = DEFAULT_POLICY
) -> OpenEnvelope:
    """Parse an envelope and unwrap its key; decrypt lazily with ``.chunks()``."""
    return _open(data, identities, policy=policy)


def decrypt(
    data: bytes | bytearray | memoryview, identities: Sequence[Identity], *, policy: Policy = DEFAULT_POLICY
) -> Decrypted:
    """Decrypt a DER/BER ContentInfo with the first identity that is a recipient.

    Raises ``NoMatchingIdentity``, ``DecryptionFailed``, ``CMSParseError``,
    ``NotEncryptedError``, ``UnsupportedAlgorithm`` or ``PolicyViolation``;
    never returns partial plaintext.
    """
    envelope = _open(data, identities, policy=policy)
    return Decrypted(decrypt_all(envelope), envelope.info)


__all__ = [
    "encrypt",
    "decrypt",
    "open_envelope",
    "EnvelopeWriter",
    "Recipient",
    "Identity",
    "RSARecipient",
    "RSAIdentity",
    "ECDHRecipient",
    "ECDHIdentity",
    "recipient_from_certificate",
    "identity_from_key",
    "Decrypted",
    "EnvelopeInfo",
    "OpenEnvelope",
    "CertificateRef",
    "Stanza",
    "KeyTransStanza",
    "KeyAgreeStanza",
    "OtherStanza",
    "IssuerSerial",
    "KeyId",
    "RecipientId",
    "Algorithm",
    "OriginatorKey",
    "RecipientEncryptedKey",
    "parse_recipient_info",
    "encode_recipient_info",
    "load_certificate",
    "load_certificates",
    "OID_AUTH_ENVELOPED_DATA",
    "OID_ENVELOPED_DATA",
    "OUR_CAPABILITIES",
    "SignatureInfo",
    "Signer",
    "algorithm_name",
    "content_type_of",
    "envelope_digest",
    "public_key",
    "read_element",
    "sign",
    "supports_profile",
    "announces_key_agreement",
    "uses_key_agreement",
    "verify",
]

"""The Recipient and Identity interfaces, and how a RecipientInfo names a key.

A ``Recipient`` wraps a content-encryption key for one certificate; an
``Identity`` (a private key and its certificate) tries to unwrap one from a
RecipientInfo. One module per key type implements both (``rsa.py``,
``ecdh.py``). This module holds what they share: the abstract interfaces
and matching of recipient identifiers (RFC 5652 §6.2.1, §6.2.2) against a
certificate. It performs no cryptography itself.
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass
from functools import cached_property

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from mailcrypt.envelope import pubkey
from mailcrypt.errors import CMSParseError, InvalidRecipient, UnsupportedAlgorithm
from mailcrypt.policy import Policy

__all__ = ["Recipient", "Identity", "CertificateRef", "HASHES", "describe_rid", "require"]


@dataclass(frozen=True, eq=False)
class CertificateRef:
    """The ways a RecipientInfo can point at one certificate."""

    certificate: x509.Certificate

    @cached_property
    def issuer(self) -> asn1_x509.Name:
        return asn1_x509.Name.load(self.certificate.issuer.public_bytes())

    @property
    def issuer_and_serial_der(self) -> bytes:
        """The DER of ``issuer_and_serial()``, encoded once per certificate (see ``_issuer_and_serial_der``)."""
        return _issuer_and_serial_der(self.certificate)

    @cached_property
    def serial(self) -> int:
        return self.certificate.serial_number

    @cached_property
    def key_identifiers(self) -> frozenset[bytes]:
        """The subjectKeyIdentifier from the extension, and the RFC 5280 §4.2.1.2
        method-1 value computed from the key, since senders use either."""
        # Method 1 is the SHA-1 of the subjectPublicKey bits, read here without
        # building a key object (a DSA or unknown key must not get one: pubkey).
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        ids = {asn1_x509.Certificate.load(der)["tbs_certificate"]["subject_public_key_info"].sha1}
        try:
            ids.add(self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
        except x509.ExtensionNotFound:
            pass
        return frozenset(ids)

    def issuer_and_serial(self) -> cms.IssuerAndSerialNumber:
        return cms.IssuerAndSerialNumber({"issuer": self.issuer, "serial_number": self.serial})

    def matches_issuer_and_serial(self, ias: cms.IssuerAndSerialNumber) -> bool:
        # Names compare in their RFC 5280 §7.1 normalised form: senders
        # re-encode issuer names (PrintableString vs UTF8String, case).
        # The same encoding is by far the common case and needs no normalising (a profile of
        # a fetch of 1,000 messages spent a tenth of its time in asn1crypto's string prep).
        if ias["serial_number"].native != self.serial:
            return False
        return ias["issuer"].dump() == self.issuer.dump() or ias["issuer"].hashable == self.issuer.hashable

    def matches_key_identifier(self, ski: bytes) -> bool:
        return ski in self.key_identifiers

    @cached_property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    @cached_property
    def label(self) -> str:
        subject = self.certificate.subject.rfc4514_string() or "(empty subject)"
        return f"{subject} [sha256:{self.fingerprint[:16]}]"

    def key_usage_allows(self, usage: str) -> bool:
        """True when the certificate has no keyUsage or it includes ``usage``."""
        try:
            ku = self.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return True
        return bool(getattr(ku, usage))


@functools.lru_cache(maxsize=256)
def _issuer_and_serial_der(certificate: x509.Certificate) -> bytes:
    # A CertificateRef lives as long as one Recipient, that is one message; the
    # proxy encrypts to the same few certificates all day, and encoding the
    # issuer name with asn1crypto cost more than the RSA operation it labels.
    # Keyed by the certificate itself (equal DER, equal key), so it never goes stale.
    ref = CertificateRef(certificate)
    return ref.issuer_and_serial().dump()


class _CertificateHolder:
    """What Recipient and Identity share: a certificate and how to name it."""

    def __init__(self, certificate: x509.Certificate) -> None:
        if not isinstance(certificate, x509.Certificate):
            raise TypeError("certificate must be a cryptography x509.Certificate")
        self.ref = CertificateRef(certificate)

    @property
    def certificate(self) -> x509.Certificate:
        return self.ref.certificate

    @property
    def label(self) -> str:
        return self.ref.label

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


class Recipient(_CertificateHolder, abc.ABC):
    """Wraps a content-encryption key for one certificate's public key.

    ``wrap`` raises ``PolicyViolation`` when the key or algorithm is not
    allowed; constructors raise ``InvalidRecipient`` for an unusable certificate.
    """

    @abc.abstractmethod
    def wrap(self, cek: bytes) -> cms.RecipientInfo:
        """One RecipientInfo carrying ``cek`` for this recipient."""

    def wrap_der(self, cek: bytes) -> tuple[bytes, str]:
        """The DER of ``wrap(cek)`` and its version (``v0``, ``v2``, ``v3``), for the writer.

        A key type may encode it faster than asn1crypto builds and dumps the
        object; the bytes must be the same. Raises what ``wrap`` raises.
        """
        info = self.wrap(cek)
        return info.dump(), info.chosen["version"].native


class Identity(_CertificateHolder, abc.ABC):
    """A private key and its certificate, able to unwrap content keys.

    ``unwrap`` raises ``NotForThisIdentity`` when the RecipientInfo names
    another key, and ``DecryptionFailed``, ``UnsupportedAlgorithm`` or
    ``PolicyViolation`` when it names this key but cannot be used.
    """

    _key: object  # set by each key type's constructor

    @property
    def private_key(self) -> object:
        """The private key, for signing with the same identity (RFC 8551 §2.5 allows one key for both)."""
        return self._key

    @abc.abstractmethod
    def unwrap(self, info: cms.RecipientInfo, *, policy: Policy) -> tuple[bytes, str]:
        """Return (content-encryption key, key-management description)."""


#: Hash algorithms by the names profiles and policies use.
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def describe_rid(rid: cms.RecipientIdentifier | cms.KeyAgreementRecipientIdentifier) -> str:
    """A short, content-free description of a recipient identifier for errors."""
    try:
        if rid.name == "issuer_and_serial_number":
            ias = rid.chosen
            return f"issuer {ias['issuer'].human_friendly!s}, serial {ias['serial_number'].native:#x}"
        value = rid.chosen
        ski = value["subject_key_identifier"].native if rid.name == "r_key_id" else value.native
        return f"subjectKeyIdentifier {bytes(ski).hex()}"
    except (ValueError, TypeError, KeyError):
        return "an unreadable recipient identifier"


def require(condition: bool, message: str, ref: CertificateRef) -> None:
    """Raise ``InvalidRecipient`` naming the certificate unless ``condition``."""
    if not condition:
        raise InvalidRecipient(f"{message}: {ref.label}", subject=ref.label)


def recipient_key(certificate: x509.Certificate, *, policy: Policy, ref: CertificateRef) -> CertificatePublicKeyTypes:
    """The public key of a recipient certificate, its algorithm judged first (``pubkey``).

    Raises ``InvalidRecipient`` naming the certificate for a refused,
    unknown or malformed key.
    """
    try:
        return pubkey.public_key(certificate, policy=policy)
    except (UnsupportedAlgorithm, CMSParseError) as exc:
        raise InvalidRecipient(f"{exc}: {ref.label}", subject=ref.label) from None

"""The Recipient and Identity interfaces, and how a RecipientInfo names a key.

A ``Recipient`` wraps a content-encryption key for one certificate into a
``Stanza`` (mailcrypt's record of a RecipientInfo, ``stanza.py``); an
``Identity`` (a private key and its certificate) tries to unwrap one from a
``Stanza``. One module per key type implements both (``rsa.py``,
``ecdh.py``). This module holds what they share: the abstract interfaces
and matching of recipient identifiers (RFC 5652 §6.2.1, §6.2.2) against a
certificate. It performs no cryptography itself, and neither it nor the
key types see a RecipientInfo's encoding (``stanza_der.py`` does).
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from mailcrypt.envelope import pubkey
from mailcrypt.envelope.stanza import IssuerSerial, RecipientId, Stanza
from mailcrypt.errors import CMSParseError, InvalidRecipient, UnsupportedAlgorithm
from mailcrypt.policy import COMPATIBLE, Policy, Profile

__all__ = [
    "Recipient",
    "KeyTypeRecipient",
    "Identity",
    "CertificateRef",
    "HASHES",
    "describe_rid",
    "describe_recipient_id",
    "require",
]


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

    @property
    def rid(self) -> IssuerSerial:
        """How this certificate is named in a RecipientInfo we write, made once per certificate (``_rid``)."""
        return _rid(self.certificate)

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
        """``matches`` for an issuerAndSerialNumber as asn1crypto decodes it (a SignedData's sid)."""
        if ias["serial_number"].native != self.serial:
            return False
        return self._same_issuer(ias["issuer"].dump())

    def matches(self, rid: RecipientId) -> bool:
        """Whether a recipient identifier names this certificate (by issuer and serial, or by either key identifier)."""
        if isinstance(rid, IssuerSerial):
            return rid.serial == self.serial and self._same_issuer(rid.issuer)
        return rid.ski in self.key_identifiers

    def _same_issuer(self, issuer_der: bytes) -> bool:
        # Names compare in their RFC 5280 §7.1 normalised form: senders
        # re-encode issuer names (PrintableString vs UTF8String, case).
        # The same encoding is by far the common case and needs no normalising (a profile of
        # a fetch of 1,000 messages spent a tenth of its time in asn1crypto's string prep).
        if issuer_der == self.issuer.dump():
            return True
        try:
            return bool(asn1_x509.Name.load(issuer_der).hashable == self.issuer.hashable)
        except (ValueError, TypeError, KeyError, IndexError):
            return False

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


@functools.lru_cache(maxsize=256)
def _rid(certificate: x509.Certificate) -> IssuerSerial:
    # One object per certificate, for the same reason as above: its DER is
    # then encoded once too (``stanza_der``), and memos keyed by it hash cheaply.
    return IssuerSerial(certificate.issuer.public_bytes(), certificate.serial_number)


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

    Constructors raise ``InvalidRecipient`` for an unusable certificate and
    ``PolicyViolation`` for an algorithm the policy does not allow, so that
    ``wrap`` has nothing left to refuse.
    """

    @abc.abstractmethod
    def wrap(self, cek: bytes) -> Stanza:
        """The RecipientInfo carrying ``cek`` for this recipient, as a ``Stanza``.

        Raises nothing of its own: the recipient was judged when it was made
        (a failure of the cryptography library itself propagates as it is).
        """


class KeyTypeRecipient(Recipient):
    """A Recipient for one type of public key, judged by one constructor.

    A key type says which public keys it wraps for (``key_type``) and the
    keyUsage bit their certificates need (``key_usage``: RFC 8550 §4.4.2).
    The constructor judges the certificate for both (``_recipient_key``) and
    hands the key to the key type's ``_accept``, which judges the key's size
    or curve and ``profile``'s algorithms for it.
    """

    key_type: ClassVar[type]
    key_usage: ClassVar[str]

    def __init__(self, certificate: x509.Certificate, *, profile: Profile = COMPATIBLE, policy: Policy) -> None:
        super().__init__(certificate)
        key = _recipient_key(certificate, policy=policy, ref=self.ref, key_type=self.key_type, usage=self.key_usage)
        self._accept(key, profile, policy)

    @abc.abstractmethod
    def _accept(self, key: CertificatePublicKeyTypes, profile: Profile, policy: Policy) -> None:
        """Judge ``key`` (a ``key_type``) and ``profile``'s algorithms for it; keep what ``wrap`` needs."""


class Identity(_CertificateHolder, abc.ABC):
    """A private key and its certificate, able to unwrap content keys.

    ``unwrap`` raises ``NotForThisIdentity`` when the stanza is of another
    kind or names another key ("not for me": the caller moves on to the
    next one), and, when it names this key but cannot be used ("for me but
    broken"): ``DecryptionFailed`` (the key does not unwrap),
    ``UnsupportedAlgorithm`` (an algorithm mailcrypt does not implement),
    ``PolicyViolation`` (one the policy refuses) or ``CMSParseError``
    (malformed algorithm parameters or originator key).
    """

    _key: object  # set by each key type's constructor

    @property
    def private_key(self) -> object:
        """The private key, for signing with the same identity (RFC 8551 §2.5 allows one key for both)."""
        return self._key

    @abc.abstractmethod
    def unwrap(self, stanza: Stanza, *, policy: Policy) -> tuple[bytes, str]:
        """Return (content-encryption key, key-management description), e.g. ``rsa-oaep-sha256``.

        Raises ``NotForThisIdentity`` or, for a stanza addressed to this
        identity that cannot be used, ``DecryptionFailed``,
        ``UnsupportedAlgorithm``, ``PolicyViolation`` or ``CMSParseError``
        (see the class).
        """


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


def describe_recipient_id(rid: RecipientId) -> str:
    """``describe_rid`` for a stanza's recipient identifier."""
    if isinstance(rid, IssuerSerial):
        try:
            issuer = asn1_x509.Name.load(rid.issuer).human_friendly
        except (ValueError, TypeError, KeyError, IndexError):
            return "an unreadable recipient identifier"
        return f"issuer {issuer!s}, serial {rid.serial:#x}"
    return f"subjectKeyIdentifier {rid.ski.hex()}"


# How an InvalidRecipient names the kind of key a recipient type wants.
_KEY_KINDS: dict[type, str] = {rsa.RSAPublicKey: "RSA", ec.EllipticCurvePublicKey: "EC"}


def require(condition: bool, message: str, ref: CertificateRef) -> None:
    """Raise ``InvalidRecipient`` naming the certificate unless ``condition``."""
    if not condition:
        raise InvalidRecipient(f"{message}: {ref.label}", subject=ref.label)


def _recipient_key(
    certificate: x509.Certificate, *, policy: Policy, ref: CertificateRef, key_type: type, usage: str
) -> CertificatePublicKeyTypes:
    """The public key of a recipient certificate, judged for one kind of key and use.

    The key's algorithm is judged first (``pubkey``); then the key must be a
    ``key_type`` and the certificate's keyUsage must allow ``usage``
    (``key_encipherment`` for key transport, ``key_agreement`` for key
    agreement: RFC 8550 §4.4.2). Raises ``InvalidRecipient`` naming the
    certificate for a refused, unknown, malformed or mismatched key.
    """
    try:
        key = pubkey.public_key(certificate, policy=policy)
    except (UnsupportedAlgorithm, CMSParseError) as exc:
        raise InvalidRecipient(f"{exc}: {ref.label}", subject=ref.label) from None
    require(isinstance(key, key_type), f"not an {_KEY_KINDS.get(key_type, key_type.__name__)} certificate", ref)
    require(ref.key_usage_allows(usage), f"keyUsage does not allow {usage.replace('_', ' ')}", ref)
    return key

"""RecipientInfos as mailcrypt's own records: what a key type wraps to and unwraps from.

A ``Stanza`` (the name and the idea are age's: a tagged record a key type
reads and writes) is one RecipientInfo of RFC 5652 §6.2 in a neutral form:
which kind it is, whom it names, the key-encryption algorithm and the
encrypted key. ``Recipient.wrap`` returns one and ``Identity.unwrap`` takes
one (``keys.py``), so no key type depends on how the ASN.1 is decoded.

This module only defines the records. Reading them from DER and writing
them as DER happens in one place, ``stanza_der.py``. Algorithm parameters
stay as the DER the sender wrote: only the key type that owns the algorithm
knows what they mean (RSA-OAEP's hashes, the ECDH key-wrap algorithm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "IssuerSerial",
    "KeyId",
    "RecipientId",
    "Algorithm",
    "OriginatorKey",
    "Originator",
    "RecipientEncryptedKey",
    "KeyTransStanza",
    "KeyAgreeStanza",
    "OtherStanza",
    "Stanza",
]


@dataclass(frozen=True, slots=True)
class IssuerSerial:
    """issuerAndSerialNumber (RFC 5652 §10.2.4): a certificate by its issuer and serial number."""

    issuer: bytes  # the DER of the issuer Name, as sent
    serial: int


@dataclass(frozen=True, slots=True)
class KeyId:
    """A certificate by its subjectKeyIdentifier (RFC 5652 §6.2.1, §6.2.2).

    ``extra`` holds the DER of the optional ``date`` and ``other`` fields of
    a KeyAgreeRecipientInfo's RecipientKeyIdentifier (RFC 5652 §6.2.2), so
    that re-encoding keeps them; it is empty everywhere else. Nothing in
    mailcrypt interprets them.
    """

    ski: bytes
    extra: bytes = b""


RecipientId = IssuerSerial | KeyId


@dataclass(frozen=True, slots=True)
class Algorithm:
    """An AlgorithmIdentifier: the OID in dotted form and the DER of the parameters (empty when absent)."""

    oid: str
    parameters: bytes = b""


@dataclass(frozen=True, slots=True)
class OriginatorKey:
    """An OriginatorPublicKey (RFC 5652 §6.2.2): the sender's (ephemeral) public key.

    ``public_key`` is the BIT STRING's contents without its unused-bits
    octet (the encoded point, for EC).
    """

    algorithm: Algorithm
    public_key: bytes


Originator = IssuerSerial | KeyId | OriginatorKey


@dataclass(frozen=True, slots=True)
class RecipientEncryptedKey:
    """One recipient of a KeyAgreeRecipientInfo and the content key wrapped for it."""

    rid: RecipientId
    encrypted_key: bytes


@dataclass(frozen=True, slots=True)
class KeyTransStanza:
    """A KeyTransRecipientInfo (RFC 5652 §6.2.1), the ``ktri`` choice: RSA key transport."""

    kind: ClassVar[str] = "ktri"

    rid: RecipientId
    algorithm: Algorithm
    encrypted_key: bytes

    @property
    def version(self) -> int:
        # RFC 5652 §6.2.1: 0 for issuerAndSerialNumber, 2 for subjectKeyIdentifier.
        return 0 if isinstance(self.rid, IssuerSerial) else 2


@dataclass(frozen=True, slots=True)
class KeyAgreeStanza:
    """A KeyAgreeRecipientInfo (RFC 5652 §6.2.2), the ``kari`` choice: ECDH key agreement.

    ``algorithm`` is the key agreement algorithm, whose parameters are the
    key-wrap AlgorithmIdentifier (RFC 5753 §3.1.1); ``ukm`` is the optional
    user keying material; ``keys`` has one entry per recipient.
    """

    kind: ClassVar[str] = "kari"

    originator: Originator
    ukm: bytes | None
    algorithm: Algorithm
    keys: tuple[RecipientEncryptedKey, ...]

    @property
    def version(self) -> int:
        # RFC 5652 §6.2.2: always 3.
        return 3


@dataclass(frozen=True, slots=True)
class OtherStanza:
    """A RecipientInfo of a kind mailcrypt does not read (kekri, pwri, ori), kept as sent."""

    kind: str  # "kekri", "pwri" or "ori"
    der: bytes


Stanza = KeyTransStanza | KeyAgreeStanza | OtherStanza

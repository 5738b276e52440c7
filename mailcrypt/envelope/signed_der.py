"""The encodings that every SignedData of one signer shares, made once.

``envelope.signed.sign`` writes a SignedData (RFC 5652 §5) per message, yet
almost all of it is the same each time: the signer's identifier and
certificates, the digest algorithm, the contentType and SMIMECapabilities
attributes. asn1crypto encodes those here, once per signer (``SignerDER``,
kept by the ``Signer``) or once per process (the constants); per message
asn1crypto encodes only the values that change, and ``frame`` puts the
definite-length headers (``codec.der_header``) around the parts. Building
the whole structure with asn1crypto for every message cost as much as the
RSA-3072 signature.

The result is the DER asn1crypto would write (the tests re-encode it): SET
OF members sorted by their encodings (X.690 §11.6), minimal lengths.
What it won't do: sign, hash or decide anything.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailcrypt.envelope import sigalg
from mailcrypt.envelope.capabilities import capabilities_attribute
from mailcrypt.envelope.codec import CONTEXT, UNIVERSAL, der_header
from mailcrypt.envelope.keys import CertificateRef

__all__ = ["SignerDER", "frame", "set_of", "attribute", "capabilities_der"]

SEQUENCE, SET, OCTET_STRING = 16, 17, 4
VERSION_1 = core.Integer(1).dump()  # RFC 5652 §5.1, §5.3: issuerAndSerialNumber and id-data.
SIGNED_DATA_OID = cms.ContentType("signed_data").dump()
DATA_OID = cms.ContentType("data").dump()
CONTENT_TYPE_ATTR = cms.CMSAttribute({"type": "content_type", "values": ["data"]}).dump()
SIGNING_TIME = cms.CMSAttributeType("signing_time").dump()
MESSAGE_DIGEST = cms.CMSAttributeType("message_digest").dump()


def frame(cls: int, tag: int, *parts: bytes | bytearray | memoryview) -> list[bytes | bytearray | memoryview]:
    """A constructed element around ``parts`` (complete encodings), as pieces to join once."""
    return [der_header(cls, True, tag, sum(len(p) for p in parts)), *parts]


def set_of(members: Sequence[bytes]) -> list[bytes | bytearray | memoryview]:
    """A DER SET OF: the members ordered by their encodings (X.690 §11.6), as asn1crypto does."""
    return frame(UNIVERSAL, SET, *sorted(members))


def attribute(attr_type: bytes, value: bytes) -> bytes:
    """Attribute ::= SEQUENCE { attrType, attrValues SET OF AttributeValue } (RFC 5652 §5.3), one value."""
    return b"".join(frame(UNIVERSAL, SEQUENCE, attr_type, *frame(UNIVERSAL, SET, value)))


@functools.lru_cache(maxsize=16)
def capabilities_der(names: tuple[str, ...]) -> bytes:
    """The SMIMECapabilities attribute for ``names``."""
    return capabilities_attribute(names).dump()


@dataclass(frozen=True)
class SignerDER:
    """The signer's identifier, its digest algorithm and its [0] IMPLICIT CertificateSet."""

    sid: bytes
    digest_algorithm: bytes
    certificates: bytes

    @classmethod
    def of(cls, certificate: x509.Certificate, chain: Sequence[x509.Certificate], digest: str) -> SignerDER:
        certs: list[x509.Certificate] = []
        for cert in (certificate, *chain):
            if cert not in certs:
                certs.append(cert)
        choices = cms.CertificateSet(
            [
                cms.CertificateChoices({"certificate": asn1_x509.Certificate.load(c.public_bytes(Encoding.DER))})
                for c in certs
            ]
        )
        return cls(
            # SignerIdentifier: the untagged issuerAndSerialNumber choice.
            sid=CertificateRef(certificate).issuer_and_serial_der,
            digest_algorithm=sigalg.digest_algorithm(digest).dump(),
            # CertificateSet is a SET OF, sorted by asn1crypto; [0] IMPLICIT keeps its contents.
            certificates=b"".join(frame(CONTEXT, 0, choices.contents)),
        )

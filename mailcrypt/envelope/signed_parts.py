"""Locating the parts of a SignedData (RFC 5652 §5.1), DER or BER, without copying content.

The outer structure is walked with ``codec.py`` over a ``memoryview``, so a
large encapsulated content is reached as zero-copy slices (a constructed
OCTET STRING as NSS writes it stays in pieces). The small parts are decoded
with asn1crypto: the eContentType, each SignerInfo (kept together with the
raw bytes of its signed attributes, which the signature covers) and the
certificates, which the one certificate parser (``certificates.py``) loads;
a certificate it refuses is kept aside as DER with its typed error, so that
an unreadable certificate matters only if it is the signer's. Certificates
of other kinds (attribute certificates, RFC 5652 §10.2.2) are skipped. The
CRLs of the ``crls`` field (RFC 5652 §5.1, §10.2.1) are handed on as DER,
unparsed: judging them is the certificate judge's business (``pki``); other
revocation information formats are skipped.

It verifies nothing; ``signed.verify`` does. Malformations raise ``CMSParseError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

from asn1crypto import cms
from cryptography import x509

from mailcrypt.envelope.asn1 import OID_SIGNED_DATA
from mailcrypt.envelope.certificates import load_certificate
from mailcrypt.envelope.codec import CONTEXT, TLV, UNIVERSAL, check_depth, children, octet_chunks, read_element
from mailcrypt.errors import CMSParseError, MalformedCertificate, UnsupportedAlgorithm

__all__ = ["SignedParts", "parse_signed_data", "ASN1_ERRORS"]

# Errors asn1crypto raises for malformed input when a lazily parsed value is read.
ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError)


@dataclass
class SignedParts:
    """The parts of one SignedData; ``econtent`` is None for a detached signature."""

    content_type: str
    econtent: list[memoryview] | None
    certificates: list[x509.Certificate]
    # The DER of each certificate the parser refused, and why.
    unreadable_certificates: list[tuple[bytes, MalformedCertificate | UnsupportedAlgorithm]]
    crls: list[bytes]  # DER CertificateLists, not parsed here
    signer_infos: list[tuple[cms.SignerInfo, bytes | None]]  # with the raw signedAttrs


def _expect(tlv: TLV | None, cls: int, tag: int, what: str) -> TLV:
    if tlv is None or not tlv.is_(cls, tag):
        raise CMSParseError(f"malformed SignedData: expected {what}")
    return tlv


class _Asn1Value(Protocol):
    """What ``_load`` uses of an asn1crypto value class (asn1crypto ships no types)."""

    @classmethod
    def load(cls, encoded_data: bytes, strict: bool = False) -> Self: ...

    @property
    def native(self) -> object: ...


_V = TypeVar("_V", bound=_Asn1Value)


def _load(spec: type[_V], buf: memoryview, tlv: TLV, what: str, *, force: bool = True) -> _V:
    """Decode one element with asn1crypto; ``force`` parses all of it now.

    A SignerInfo is not forced: asn1crypto cannot render every attribute
    (capability parameters are ``Any``), and unknown attributes must not make
    a signature unreadable. Its fields are read one by one in ``_check_one``.
    """
    check_depth(buf, tlv)
    try:
        value = spec.load(bytes(buf[tlv.start : tlv.end]), strict=True)
        if force:
            value.native  # noqa: B018 - parse everything now, so errors surface here
    except ASN1_ERRORS as exc:
        raise CMSParseError(f"malformed {what}") from exc
    return value


def parse_signed_data(data: bytes | bytearray | memoryview) -> SignedParts:
    buf = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    if len(buf) == 0:
        raise CMSParseError("empty input is not a CMS message")
    top = read_element(buf, 0, len(buf))
    if not top.is_(UNIVERSAL, 16) or not top.constructed or top.end != len(buf):
        raise CMSParseError("not a CMS message (or trailing data after it)")
    kids = list(children(buf, top))
    oid = _load(
        cms.ContentType, buf, _expect(kids[0] if kids else None, UNIVERSAL, 6, "a content type"), "content type"
    )
    if oid.dotted != OID_SIGNED_DATA:
        raise CMSParseError(f"CMS content type {oid.dotted} is not signed-data")
    explicit = _expect(kids[1] if len(kids) == 2 else None, CONTEXT, 0, "[0] content")
    inner = list(children(buf, explicit))
    body = _expect(inner[0] if len(inner) == 1 else None, UNIVERSAL, 16, "a SignedData SEQUENCE")
    items = list(children(buf, body))
    _expect(items[0] if items else None, UNIVERSAL, 2, "a version")
    _expect(items[1] if len(items) > 1 else None, UNIVERSAL, 17, "digestAlgorithms")
    eci = _expect(items[2] if len(items) > 2 else None, UNIVERSAL, 16, "encapContentInfo")
    eci_items = list(children(buf, eci))
    ctype_tlv = _expect(eci_items[0] if eci_items else None, UNIVERSAL, 6, "an eContentType")
    content_type = _load(cms.ContentType, buf, ctype_tlv, "eContentType").dotted
    econtent = None
    if len(eci_items) == 2:
        wrapper = _expect(eci_items[1], CONTEXT, 0, "[0] eContent")
        octets = list(children(buf, wrapper))
        econtent = octet_chunks(buf, _expect(octets[0] if len(octets) == 1 else None, UNIVERSAL, 4, "eContent"))
    elif len(eci_items) != 1:
        raise CMSParseError("malformed encapContentInfo")
    pos = 3
    certificates: list[x509.Certificate] = []
    unreadable: list[tuple[bytes, MalformedCertificate | UnsupportedAlgorithm]] = []
    if pos < len(items) and items[pos].is_(CONTEXT, 0):
        for child in children(buf, items[pos]):
            # Only the plain Certificate choice (a SEQUENCE) is of use; attribute
            # and other certificates (RFC 5652 §10.2.2) are skipped.
            if child.is_(UNIVERSAL, 16):
                der = bytes(buf[child.start : child.end])
                try:
                    certificates.append(load_certificate(der))
                except (MalformedCertificate, UnsupportedAlgorithm) as exc:
                    unreadable.append((der, exc))
        pos += 1
    crls: list[bytes] = []
    if pos < len(items) and items[pos].is_(CONTEXT, 1):
        for child in children(buf, items[pos]):
            # A CertificateList is a SEQUENCE; the [1] other formats (OCSP
            # responses, RFC 5940) are skipped.
            if child.is_(UNIVERSAL, 16):
                crls.append(bytes(buf[child.start : child.end]))
        pos += 1
    infos_tlv = _expect(items[pos] if pos < len(items) else None, UNIVERSAL, 17, "signerInfos")
    if pos + 1 != len(items):
        raise CMSParseError("unexpected element at the end of SignedData")
    signer_infos = []
    for child in children(buf, infos_tlv):
        info = _load(cms.SignerInfo, buf, _expect(child, UNIVERSAL, 16, "a SignerInfo"), "SignerInfo", force=False)
        raw_attrs = next((bytes(buf[t.start : t.end]) for t in children(buf, child) if t.is_(CONTEXT, 0)), None)
        signer_infos.append((info, raw_attrs))
    if not signer_infos:
        raise CMSParseError("SignedData without a SignerInfo is not a signature")
    return SignedParts(content_type, econtent, certificates, unreadable, crls, signer_infos)

"""The certificates in a certificate file, whichever of the usual forms it takes.

One reader for every certificate file a user names (``encrypt --cert``,
trust anchors, an identity's certificate, ``keys import``): PEM text with
one or more certificates, a DER certificate, or a PKCS#7 certificate bundle
(``.p7b``/``.p7c``, as Windows exports them and ``openssl crl2pkcs7``
writes; DER or a PEM ``PKCS7`` block). Every certificate goes through the
one parser (``pki.load_certificate``). PEM blocks of other kinds (keys,
CRLs) are passed over here: refusing a file that holds a private key is
the caller's choice (``keys import`` makes it). Nothing here opens files.
"""

from __future__ import annotations

from asn1crypto import cms as asn1_cms
from asn1crypto import pem
from cryptography import x509

from mailcrypt import errors
from mailcrypt.pki import load_certificate

__all__ = ["certificates_in"]

# PEM labels under which certificates are found (RFC 7468 §5).
_CERTIFICATE_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE"})
# asn1crypto's parse failures.
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError)


def certificates_in(name: str, data: bytes, *, expected: str = "PEM, DER or a PKCS#7 bundle") -> list[x509.Certificate]:
    """Every certificate in ``data``, the contents of the file the user knows as ``name``.

    Raises ``errors.ConfigError`` naming ``name`` and what was ``expected``
    when ``data`` holds no certificate, or one the parser refuses.
    """
    try:
        if pem.detect(data):
            return _from_pem(data)
        bundle = _from_pkcs7(data)
        return bundle if bundle is not None else [load_certificate(data)]
    except errors.MalformedCertificate as exc:
        raise errors.ConfigError(f"{name}: no readable certificate (expected {expected}: {exc.reason})") from None


def _from_pem(data: bytes) -> list[x509.Certificate]:
    try:
        blocks = list(pem.unarmor(data, multiple=True))
    except _ASN1_ERRORS:
        raise errors.MalformedCertificate("the PEM text is malformed", reason="malformed PEM") from None
    certificates: list[x509.Certificate] = []
    for label, _headers, der in blocks:
        if label == "PKCS7":
            certificates += _from_pkcs7(der) or []
        elif label in _CERTIFICATE_LABELS:
            certificates.append(load_certificate(der))
    if not certificates:
        raise errors.MalformedCertificate("the PEM text holds no certificate", reason="no certificate in the PEM text")
    return certificates


def _from_pkcs7(der: bytes) -> list[x509.Certificate] | None:
    """The certificates of a PKCS#7 bundle (SignedData, RFC 5652 §5.1), or None if ``der`` is not one.

    The bundle is taken apart with asn1crypto, which reads the BER that
    openssl crl2pkcs7 and Windows write (an unsorted certificates SET); only
    the plain Certificate choice is taken (RFC 5652 §10.2.2).
    """
    try:
        info = asn1_cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            return None
        found = info["content"]["certificates"]
        ders = [c.chosen.dump() for c in found if c.name == "certificate"] if found else []
    except _ASN1_ERRORS:
        return None  # not a PKCS#7 bundle
    if not ders:
        raise errors.MalformedCertificate("a PKCS#7 bundle holds no certificate", reason="an empty PKCS#7 bundle")
    return [load_certificate(d) for d in ders]

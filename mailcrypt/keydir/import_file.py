"""What kind of file ``keys import`` was given, and the certificates in it.

Accepted: PEM certificates (one or a bundle), a DER certificate, a PKCS#7
certificate bundle (``.p7b``/``.p7c``, as Windows exports them; PEM or DER)
and PKCS#12 (``.p12``/``.pfx``), which is recognised by its structure (a
SEQUENCE starting with version 3, RFC 7292 §4) rather than its name and
opened by the caller, since it needs a password.

A PEM file holding a private key is refused: identities come in as PKCS#12,
and a key must never land among the public certificates. This module reads
one file and writes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from asn1crypto import cms as asn1_cms
from asn1crypto import pem
from cryptography import x509

from mailcrypt import errors
from mailcrypt.keydir.keyfiles import read_file
from mailcrypt.pki import load_certificate

__all__ = ["read_import_file", "looks_like_pkcs12"]

_LIMIT = 64 << 20


def looks_like_pkcs12(data: bytes) -> bool:
    """True when ``data`` is a DER SEQUENCE whose first element is INTEGER 3 (a PFX)."""
    if len(data) < 8 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        start = 2
    elif first == 0x80:  # BER indefinite length, which some exporters use
        start = 2
    else:
        start = 2 + (first & 0x7F)
    return data[start : start + 3] == b"\x02\x01\x03"


def read_import_file(path: Path) -> tuple[str, list[x509.Certificate]]:
    """``("certificates", [...])`` or ``("pkcs12", [])`` for the file at ``path``.

    Raises ``errors.ConfigError`` naming the file when it cannot be read or
    is none of the accepted kinds.
    """
    name = os.fspath(path)
    data = read_file(path, name, too_large=(_LIMIT, "a certificate or PKCS#12 file"))
    if not data.strip():
        raise errors.ConfigError(f"{name}: the file is empty")
    if b"-----BEGIN" in data:
        return "certificates", _pem(name, data)
    if looks_like_pkcs12(data):
        return "pkcs12", []
    certificates = _pkcs7_certificates(name, data)
    if certificates is None:
        certificates = [_parse(name, data)]
    return "certificates", certificates


def _parse(name: str, der: bytes) -> x509.Certificate:
    """One DER certificate through the one parser; ``ConfigError`` naming the file if refused."""
    try:
        return load_certificate(der)
    except errors.MalformedCertificate as exc:
        raise errors.ConfigError(
            f"{name}: not a certificate (PEM or DER), a PKCS#7 certificate bundle or a PKCS#12 file ({exc.reason})"
        ) from None


def _pkcs7_certificates(name: str, der: bytes) -> list[x509.Certificate] | None:
    """The certificates of a PKCS#7 bundle (SignedData, RFC 5652 §5.1), or None if ``der`` is not one.

    The bundle is taken apart with asn1crypto, which reads the BER that
    openssl crl2pkcs7 and Windows write (an unsorted certificates SET), and
    each certificate goes through the one parser; only the plain
    Certificate choice is taken (RFC 5652 §10.2.2).
    """
    try:
        info = asn1_cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            return None
        found = info["content"]["certificates"]
        ders = [c.chosen.dump() for c in found if c.name == "certificate"] if found else []
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError):
        return None  # asn1crypto's parse failures: not a PKCS#7 bundle
    if not ders:
        raise errors.ConfigError(f"{name}: the PKCS#7 bundle holds no certificate")
    return [_parse(name, d) for d in ders]


def _pem(name: str, data: bytes) -> list[x509.Certificate]:
    if b"PRIVATE KEY-----" in data:
        raise errors.ConfigError(
            f"{name} holds a private key: import an identity as PKCS#12 "
            "(openssl pkcs12 -export -inkey KEY -in CERT -out FILE.p12), certificates as PEM or DER without keys"
        )
    try:
        blocks = list(pem.unarmor(data, multiple=True))
    except (ValueError, TypeError):
        raise errors.ConfigError(f"{name}: no readable certificate in this PEM file") from None
    certificates: list[x509.Certificate] = []
    for label, _headers, der in blocks:
        if label == "PKCS7":
            certificates += _pkcs7_certificates(name, der) or []
        elif label in ("CERTIFICATE", "X509 CERTIFICATE"):
            certificates.append(_parse(name, der))
    if not certificates:
        raise errors.ConfigError(f"{name}: no readable certificate in this PEM file")
    return certificates

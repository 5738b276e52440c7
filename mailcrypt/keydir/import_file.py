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
import warnings
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from mailcrypt import errors

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
    try:
        size = path.stat().st_size
        if size > _LIMIT:
            raise errors.ConfigError(f"{name}: too large for a certificate or PKCS#12 file ({size} bytes)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise errors.ConfigError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise errors.ConfigError(f"{name}: is a directory") from None
    except OSError as exc:
        raise errors.ConfigError(f"{name}: {exc.strerror or exc}") from None
    if not data.strip():
        raise errors.ConfigError(f"{name}: the file is empty")
    if b"-----BEGIN" in data:
        return "certificates", _pem(name, data)
    if looks_like_pkcs12(data):
        return "pkcs12", []
    try:
        return "certificates", [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    try:
        certificates = _load_pkcs7(pkcs7.load_der_pkcs7_certificates, data)
    except ValueError:
        certificates = []
    if certificates:
        return "certificates", certificates
    raise errors.ConfigError(f"{name}: not a certificate (PEM or DER), a PKCS#7 certificate bundle or a PKCS#12 file")


def _load_pkcs7(load: Callable[[bytes], list[x509.Certificate]], data: bytes) -> list[x509.Certificate]:
    # openssl crl2pkcs7 and Windows write the certificates SET unsorted, which
    # is valid BER but not DER; cryptography reads it and warns that it may
    # stop doing so. That is exactly the input accepted here, so this one
    # warning is expected (it is not silenced anywhere else).
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="PKCS#7 certificates could not be parsed as DER", category=UserWarning
        )
        return load(data)


def _pem(name: str, data: bytes) -> list[x509.Certificate]:
    if b"PRIVATE KEY-----" in data:
        raise errors.ConfigError(
            f"{name} holds a private key: import an identity as PKCS#12 "
            "(openssl pkcs12 -export -inkey KEY -in CERT -out FILE.p12), certificates as PEM or DER without keys"
        )
    try:
        if b"-----BEGIN PKCS7-----" in data:
            certificates = _load_pkcs7(pkcs7.load_pem_pkcs7_certificates, data)
        else:
            certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise errors.ConfigError(f"{name}: no readable certificate in this PEM file")
    return certificates

"""What kind of file ``keys import`` was given, and the certificates in it.

Accepted: what every certificate file may be (``certfiles``: PEM
certificates, a DER certificate, a PKCS#7 certificate bundle) and PKCS#12
(``.p12``/``.pfx``), which is recognised by its structure (a SEQUENCE
starting with version 3, RFC 7292 §4) rather than its name and opened by
the caller, since it needs a password.

A PEM file holding a private key is refused: identities come in as PKCS#12,
and a key must never land among the public certificates. This module reads
one file and writes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509

from mailcrypt import errors
from mailcrypt.keydir.certfiles import certificates_in
from mailcrypt.keydir.keyfiles import read_file

__all__ = ["read_import_file", "looks_like_pkcs12"]

_LIMIT = 64 << 20
_EXPECTED = "PEM or DER certificates, a PKCS#7 certificate bundle or a PKCS#12 file"


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
    if b"-----BEGIN" in data and b"PRIVATE KEY-----" in data:
        raise errors.ConfigError(
            f"{name} holds a private key: import an identity as PKCS#12 "
            "(openssl pkcs12 -export -inkey KEY -in CERT -out FILE.p12), certificates as PEM or DER without keys"
        )
    if looks_like_pkcs12(data):
        return "pkcs12", []
    return "certificates", certificates_in(name, data, expected=_EXPECTED)

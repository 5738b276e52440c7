"""Where the key directory keeps its files, and how it writes them.

Layout of ``keys/`` (mode 0700)::

    certs/<sha256>.pem        recipient certificates, one PEM each (0644)
    chain/<sha256>.pem        CA certificates that came in bundles, used to
                              build chains to the trust anchors (0644)
    identities/<sha256>.crt   our own certificates (0644)
    identities/<sha256>.key   their private keys, PKCS#8 PEM, encrypted (0600)
    index.sqlite              the index for listing and lookup (0600);
                              rebuilt from the files when missing or stale

Files are named by the SHA-256 fingerprint of the certificate's DER
encoding. A certificate file starts with a few ``Name: value`` lines before
the PEM block (where it was imported from, and when), which PEM readers
ignore and which let the index be rebuilt without losing them.

Every file is written whole or not at all: a temporary file created with
O_EXCL, fsynced, then renamed into place. This module knows no certificate
rules (``validate`` does) and keeps no index (``index`` does).
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailcrypt import errors
from mailcrypt.config import Below
from mailcrypt.pki import load_certificates

__all__ = [
    "Layout",
    "FINGERPRINT_RE",
    "fingerprint_prefix",
    "write_certificate",
    "read_certificate",
    "ensure_private_dir",
]

FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")
_HEADER_RE = re.compile(r"([A-Za-z-]+): ?(.*)")
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def fingerprint_prefix(selector: str) -> str:
    """The lower-case hex digits of a fingerprint as users write it (``AB:CD:…``, ``sha256:abcd…``).

    At least 8 digits are needed. Raises ``errors.UsageError`` otherwise.
    """
    digits = selector.strip().lower().removeprefix("sha256:").replace(":", "")
    if not 8 <= len(digits) <= 64 or any(c not in "0123456789abcdef" for c in digits):
        raise errors.UsageError(
            f"{selector!r} is neither an e-mail address nor a SHA-256 fingerprint (at least 8 hex digits)"
        )
    return digits


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 if missing.

    An existing directory is left as it is, except that one we would create
    is never made readable by others. Raises ``errors.ConfigError`` if it
    cannot be created.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise errors.ConfigError(f"{path} exists and is not a directory") from None
    except OSError as exc:
        raise errors.ConfigError(f"cannot create {path}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise errors.ConfigError(f"{path} exists and is not a directory")


@dataclass(frozen=True)
class Layout:
    """The paths inside one key directory."""

    root: Path

    #: Recipients' certificates, one PEM file a fingerprint.
    certs = Below("certs")
    #: Intermediate certificates, one PEM file a fingerprint.
    chain = Below("chain")
    #: The user's own certificates (``.crt``) and encrypted private keys (``.key``).
    identities = Below("identities")
    #: The SQLite index over all of them.
    index = Below("index.sqlite")

    def recipient_file(self, fp: str) -> Path:
        return self.certs / f"{fp}.pem"

    def chain_file(self, fp: str) -> Path:
        return self.chain / f"{fp}.pem"

    def identity_cert(self, fp: str) -> Path:
        return self.identities / f"{fp}.crt"

    def identity_key(self, fp: str) -> Path:
        return self.identities / f"{fp}.key"

    def file_for(self, kind: str, fp: str) -> Path:
        """The certificate file of an index entry of ``kind``."""
        if kind == "identity":
            return self.identity_cert(fp)
        if kind == "chain":
            return self.chain_file(fp)
        return self.recipient_file(fp)

    def ensure(self) -> None:
        """Create the directories, each mode 0700."""
        for path in (self.root, self.certs, self.chain, self.identities):
            ensure_private_dir(path)


def _clean(value: str) -> str:
    # One header line each: no line breaks or control characters from a file name.
    return "".join(c if c.isprintable() else "?" for c in value)


def write_certificate(
    path: Path, certificate: x509.Certificate, *, source: str, imported: datetime.datetime, mode: int = 0o644
) -> None:
    """Write ``certificate`` as PEM with Source/Imported lines, atomically.

    An existing file is replaced (it holds the same certificate: the name is
    its fingerprint). Raises ``OSError`` if it cannot be written.
    """
    header = f"Source: {_clean(source)}\nImported: {imported.astimezone(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}\n"
    data = header.encode("utf-8") + certificate.public_bytes(serialization.Encoding.PEM)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, _OPEN_FLAGS, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_certificate(path: Path) -> tuple[x509.Certificate, str, datetime.datetime | None]:
    """The certificate in a file written by ``write_certificate``, its source and import time.

    Raises ``OSError`` if the file cannot be read and
    ``errors.MalformedCertificate`` if it holds no certificate the parser
    (``pki.load_certificates``) accepts.
    """
    data = path.read_bytes()
    certificate = load_certificates(data)[0]
    source, imported = "", None
    head = data.split(b"-----BEGIN", 1)[0].decode("utf-8", "replace")
    for line in head.splitlines():
        match = _HEADER_RE.fullmatch(line.strip())
        if not match:
            continue
        name, value = match.group(1).lower(), match.group(2)
        if name == "source":
            source = value
        elif name == "imported":
            try:
                imported = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
            except ValueError:
                imported = None
    return certificate, source, imported

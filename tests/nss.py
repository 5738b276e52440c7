"""NSS's own tools for the tests: ``cmsutil -D`` as an older Thunderbird reads an envelope.

Debian's ``libnss3-tools`` (NSS 3.87 in Debian 12) is the S/MIME engine of
many installed Thunderbirds; it rejects as bad DER a whole envelope that
holds any KeyAgreeRecipientInfo (DESIGN.md §1 "Readable by every
recipient"). ``NSSReader`` puts one person's key into a temporary NSS
database (a PKCS#12 made with ``openssl pkcs12``, imported with ``pk12util``
into a database ``certutil -N --empty-password`` made) and decrypts with
``cmsutil -D``. Without the tools the tests skip with a reason on a
developer's machine and fail under ``CI`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["NSSReader", "require_nss", "envelope_der"]

_TOOLS = ("cmsutil", "certutil", "pk12util")


def require_nss() -> None:
    """Skip (fail under CI) unless NSS's cmsutil, certutil and pk12util are installed."""
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if not missing:
        return
    reason = f"NSS tools not installed ({', '.join(missing)}; Debian: apt-get install libnss3-tools)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must have them (.ci/run installs them)")
    pytest.skip(reason)


def envelope_der(message: bytes) -> bytes:
    """The DER of an S/MIME message's ``application/pkcs7-mime`` body (base64, as the proxy writes it)."""
    body = message.split(b"\r\n\r\n", 1)[1]
    return base64.b64decode(b"".join(body.split()))


def _run(*command: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, input=stdin, capture_output=True, timeout=60)


@dataclass(frozen=True)
class NSSReader:
    """One person's key in an NSS database of its own (``directory``), to decrypt with ``cmsutil``."""

    directory: Path

    @classmethod
    def make(cls, directory: Path, key: Path, cert: Path) -> NSSReader:
        require_nss()
        directory.mkdir(parents=True)
        p12 = directory / "person.p12"
        made = _run(
            "openssl", "pkcs12", "-export", "-inkey", str(key), "-in", str(cert), "-passout", "pass:", "-out", str(p12)
        )
        assert made.returncode == 0, made.stderr.decode()
        db = directory / "db"
        db.mkdir()
        created = _run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
        assert created.returncode == 0, created.stderr.decode()
        imported = _run("pk12util", "-i", str(p12), "-d", f"sql:{db}", "-W", "")
        assert imported.returncode == 0, (imported.stdout + imported.stderr).decode()
        return cls(db)

    def decrypt(self, message: bytes) -> subprocess.CompletedProcess[bytes]:
        """``cmsutil -D`` of the message's envelope: the decrypted entity on stdout, or the error on stderr."""
        return _run("cmsutil", "-D", "-d", f"sql:{self.directory}", stdin=envelope_der(message))

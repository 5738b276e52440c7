"""The on-disk cache of revocation answers: verdicts per certificate, CRLs per URL.

A verdict (``good`` or ``revoked``, its source and reason, and the time it
is current until, the source's nextUpdate) is kept in one small JSON file
per (issuer, serial); a CRL is kept as the DER that was fetched, one file
per URL, and is checked again (signature, dates) whenever it is read.
Files are written atomically (a temporary file in the same directory,
fsync, rename) with mode 0600 in a 0700 directory, so processes that share
the home (the proxy, fetch, the commands) read whole files or none.

The cache is an optimisation: a file that cannot be read or written is
treated as absent (and logged), never as an answer. Nothing here fetches
anything or judges a CRL (``online``, ``crl`` do).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path

from mailcrypt.pki.revocation import RevocationStatus

__all__ = ["DiskCache"]

log = logging.getLogger(__name__)


class DiskCache:
    """The files under one directory (``<home>/revocation/``), created on first write."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _write(self, name: str, data: bytes) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")  # Mode 0600.
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, self.directory / name)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as exc:
            log.warning("revocation cache: cannot write %s: %s", self.directory / name, exc)

    def _read(self, name: str) -> bytes | None:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("revocation cache: cannot read %s: %s", self.directory / name, exc)
            return None

    # ------------------------------------------------------------------ verdicts

    def verdict(self, key: str, now: datetime) -> tuple[RevocationStatus, datetime | None] | None:
        """The kept verdict for ``key`` if it is still current at ``now``, with its end; else None."""
        data = self._read(f"{key}.json")
        if data is None:
            return None
        try:
            kept = json.loads(data)
            state, source, reason, until_text = kept["state"], kept["source"], kept["reason"], kept["until"]
            until = None if until_text is None else datetime.fromisoformat(until_text)
        except (ValueError, KeyError, TypeError):
            log.warning("revocation cache: %s is not a verdict; ignored", self.directory / f"{key}.json")
            return None
        if state not in ("good", "revoked") or not isinstance(source, str) or not isinstance(reason, str):
            return None
        if until is not None and (until.tzinfo is None or until < now):
            return None
        return RevocationStatus(state, state == "revoked", source, reason), until

    def keep_verdict(self, key: str, status: RevocationStatus, until: datetime | None) -> None:
        kept = {
            "state": status.state,
            "source": status.source,
            "reason": status.reason,
            "until": None if until is None else until.isoformat(),
        }
        self._write(f"{key}.json", json.dumps(kept).encode())

    # ------------------------------------------------------------------ CRLs

    @staticmethod
    def _crl_name(url: str) -> str:
        return f"crl-{hashlib.sha256(url.encode()).hexdigest()[:40]}.der"

    def crl(self, url: str) -> bytes | None:
        """The CRL last fetched from ``url``, unchecked; None when there is none."""
        return self._read(self._crl_name(url))

    def keep_crl(self, url: str, der: bytes) -> None:
        self._write(self._crl_name(url), der)

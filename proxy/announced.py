"""What correspondents announced in their signed mail, for the proxy's RCPT-time plan.

``mailcrypt fetch`` and ``mailcrypt decrypt`` record the SMIMECapabilities
of verified signed mail in the state store (``mailcrypt.keydir.harvest``).
``Announced`` reads them for ``groups.RecipientBook``, so the proxy chooses
as ``mailcrypt encrypt`` does: ``modern`` for a correspondent who announced
it, and an envelope that mixes key agreement with key transport only for
clients known to read it (DESIGN.md §1). The store is opened at the first
lookup (in the worker thread that plans a recipient) and kept open until
``close``.

What it won't do: write anything, or refuse mail because of the store. The
capabilities are advice: a store that cannot be opened or read is logged
and counts as knowing nothing, which keeps every choice at its safe default.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from mailcrypt import errors
from mailcrypt.keydir import advertised
from mailcrypt.state import Store

__all__ = ["Announced"]

log = logging.getLogger(__name__)


class Announced:
    """``advertised(address, certificate)`` over the state store at ``path`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._lookup: Callable[[str, x509.Certificate], tuple[str, ...] | None] | None = None
        self._failed = False

    def __call__(self, address: str, certificate: x509.Certificate) -> tuple[str, ...] | None:
        with self._lock:
            if self._lookup is None and not self._failed:
                try:
                    self._store = Store.open(self.path)
                except errors.ConfigError as exc:
                    self._failed = True
                    log.warning("capabilities announced in signed mail are not used: %s", exc)
                    return None
                self._lookup = advertised(self._store)
            lookup = self._lookup
        if lookup is None:
            return None
        try:
            return lookup(address, certificate)
        except (sqlite3.Error, ValueError) as exc:
            log.warning("capabilities of %s not read from %s: %s", address, self.path, exc)
            return None

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
            self._store, self._lookup = None, None

"""The one state store of mailcrypt: an SQLite database in the home (DESIGN.md §4).

``Store.open(path)`` opens (creating it, mode 0600, through ``database``) ``state.db`` in WAL mode,
so that a fetcher and a command line run can use it at the same time, and
brings its schema to the current version inside a transaction. Tables:

- ``replay_cache``: every accepted message's replay key (DESIGN.md §2):
  ``digest`` (hex SHA-256, primary key), ``first_seen`` and ``signing_time``
  (Unix seconds, UTC; signing_time NULL for unsigned mail), ``kind``
  (``signature`` or ``envelope``). Used by ``mailcrypt.state.replay``.
- ``fetch_state``: per (account, folder) the ``uidvalidity`` and the
  ``last_uid`` delivered, with ``updated_at`` (STYLE.md §1.5, §5). For the fetcher.
- ``fetch_delivered``: per (account, folder, ``uidvalidity``, ``uid``) the
  ``digest`` (SHA-256, 32 bytes) of the message as the server sent it, for
  every message the fetcher delivered or quarantined, so that mail already
  delivered is recognised by its content after the server renumbered a
  folder (a new UIDVALIDITY). Added in schema version 2.
- ``capabilities``: per (address, certificate ``fingerprint``) the harvested
  SMIMECapabilities as a JSON list of names and ``seen_at``. For harvesting.
- ``schema_version``: one row, the schema version.

Migrations only add: every statement of the schema is ``IF NOT EXISTS``, so
opening a store of an older version creates what it lacks and raises its
version, in one transaction. A store of a newer version is refused: an older
mailcrypt would not keep the newer tables up to date.

Every change runs in one ``transaction()`` (BEGIN IMMEDIATE ... COMMIT, or
ROLLBACK on error), so a check-then-record is atomic across processes. One
``Store`` may be shared by the threads of a process: a lock serialises its
use of the connection. What it won't do: know what the rows mean (the
replay guard, fetcher and key directory do), or hold plaintext or keys.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailcrypt.errors import ConfigError
from mailcrypt.state.database import open_database, transaction

__all__ = ["Row", "Store", "SCHEMA_VERSION"]

#: A row as sqlite3 gives it: each value an int, float, str, bytes or None,
#: as the query's columns decide (which the type checker cannot know).
Row = tuple[Any, ...]

SCHEMA_VERSION = 2

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS replay_cache (
        digest       TEXT PRIMARY KEY,
        first_seen   INTEGER NOT NULL,
        signing_time INTEGER,
        kind         TEXT NOT NULL CHECK (kind IN ('signature', 'envelope'))
    )""",
    # Entries leave the cache once their signing time (or, unsigned, their
    # arrival) falls out of the freshness window.
    "CREATE INDEX IF NOT EXISTS replay_cache_expiry ON replay_cache (coalesce(signing_time, first_seen))",
    """CREATE TABLE IF NOT EXISTS fetch_state (
        account     TEXT NOT NULL,
        folder      TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        last_uid    INTEGER NOT NULL DEFAULT 0,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (account, folder)
    )""",
    # Version 2. Rows of an old UIDVALIDITY stay until the folder has been fetched again under the new one.
    """CREATE TABLE IF NOT EXISTS fetch_delivered (
        account     TEXT NOT NULL,
        folder      TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid         INTEGER NOT NULL,
        digest      BLOB NOT NULL,
        PRIMARY KEY (account, folder, uidvalidity, uid)
    )""",
    "CREATE INDEX IF NOT EXISTS fetch_delivered_digest ON fetch_delivered (account, folder, digest)",
    """CREATE TABLE IF NOT EXISTS capabilities (
        address      TEXT NOT NULL,
        fingerprint  TEXT NOT NULL,
        capabilities TEXT NOT NULL,
        seen_at      INTEGER NOT NULL,
        PRIMARY KEY (address, fingerprint)
    )""",
)

class Store:
    """An open state store. Use ``Store.open``; close with ``close()`` or ``with``."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._conn = connection
        self._lock = threading.RLock()
        self.path = path

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Store:
        """Open or create the store at ``path``; raise ``ConfigError`` when it cannot be used."""
        path = Path(path)
        conn = open_database(path, what="the state store", wal=True, foreign_keys=True)
        store = cls(conn, path)
        store._migrate()
        return store

    def _migrate(self) -> None:
        try:
            with self.transaction() as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                if row is None:
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                elif row[0] < SCHEMA_VERSION:
                    # The statements above have just created what the older version lacked.
                    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
                elif row[0] > SCHEMA_VERSION:
                    raise ConfigError(
                        f"the state store {self.path} has schema version {row[0]};"
                        f" this mailcrypt knows only up to {SCHEMA_VERSION}"
                    )
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"the state store {self.path} is not usable: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic transaction, holding the write lock from its start (BEGIN IMMEDIATE)."""
        with self._lock, transaction(self._conn) as conn:
            yield conn

    def read(self, sql: str, parameters: tuple[object, ...] = ()) -> list[Row]:
        """Rows of one read-only query (its own snapshot)."""
        with self._lock:
            return self._conn.execute(sql, parameters).fetchall()

    @property
    def journal_mode(self) -> str:
        return str(self.read("PRAGMA journal_mode")[0][0]).lower()

    @property
    def schema_version(self) -> int:
        return int(self.read("SELECT version FROM schema_version")[0][0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Opening mailcrypt's SQLite files and running transactions on them: one way for both.

The state store (``store``) and the key directory's index
(``mailcrypt.keydir``) are SQLite files. ``open_database`` creates the file
mode 0600 before SQLite sees it (both name the user's correspondents), opens
it in autocommit mode (``isolation_level=None``, so that transactions are
exactly the ones ``transaction`` begins), waits up to a busy timeout for
another process's write lock, and switches on what the caller asks for:
WAL (readers and one writer at once; https://sqlite.org/wal.html) and
foreign keys. ``transaction`` is
``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` when the body raises,
so that a read-then-write inside it is atomic across processes.

What it won't do: know any table (the callers own their schemas), or share
a connection between threads safely by itself (a caller that shares one
serialises its use, as ``Store`` does with a lock).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailcrypt import errors

__all__ = ["open_database", "transaction", "BUSY_TIMEOUT_MS"]

#: How long to wait for another process's write lock (a fetch recording a
#: batch, a key import) before giving up with "database is locked".
BUSY_TIMEOUT_MS = 10_000


def open_database(
    path: str | os.PathLike[str],
    *,
    what: str,
    wal: bool,
    foreign_keys: bool = False,
) -> sqlite3.Connection:
    """A connection to the SQLite file ``path``, created 0600 if absent.

    ``what`` names the file for messages ("the state store"). With ``wal``
    the journal is switched to WAL (with ``synchronous = NORMAL``, which WAL
    keeps consistent after a crash) and a file system that cannot do WAL is
    an error; with ``foreign_keys`` SQLite enforces them. The connection may
    be used from any thread, one at a time. Raises ``errors.ConfigError``
    naming ``what`` and the path when the file cannot be created or opened;
    a file that is not a database is noticed here only with ``wal`` (the
    pragma reads it), else by the first query, as ``sqlite3.DatabaseError``.
    """
    path = Path(path)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise errors.ConfigError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if wal:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal mode {mode} instead of WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise errors.ConfigError(f"cannot open {what} {path}: {exc}") from None
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic transaction on an ``open_database`` connection, holding the write lock from its start.

    ``BEGIN IMMEDIATE`` takes the write lock at once, so two processes that
    both read and then write cannot interleave; the body's exception rolls
    everything back and propagates.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")

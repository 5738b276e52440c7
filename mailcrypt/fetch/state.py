"""Fetch progress in the one state store: per (account, folder) its UIDVALIDITY and last UID.

The rows live in ``fetch_state`` of ``mailcrypt.state.store.Store`` (``state.db``
in the home, STYLE.md §1.5). ``begin`` reads a folder's row and compares the
server's UIDVALIDITY with the stored one: a folder seen for the first time
gets a row with ``last_uid`` 0, a changed UIDVALIDITY raises
``errors.UIDValidityChanged`` (unless the user accepted the new numbering
with ``--accept-uidvalidity``), never a silent download of everything
again. ``advance`` records progress; the fetcher calls it only after the
batch's files are durable (STYLE.md §5), in one transaction, and only
forwards.

Sinks that cannot tell afterwards whether a write happened (an IMAP folder:
an APPEND whose answer was lost) record the UIDs they are about to write as
pending entries in ``fetch_pending`` first, in the same store; ``advance``
clears them with the progress.

What it won't do: decide what to fetch, or touch the replay cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mailcrypt import errors
from mailcrypt.state import Store

__all__ = ["FetchState", "FolderState"]

_PENDING_SCHEMA = """CREATE TABLE IF NOT EXISTS fetch_pending (
    account     TEXT NOT NULL,
    folder      TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    PRIMARY KEY (account, folder, uidvalidity, uid)
)"""


@dataclass(frozen=True)
class FolderState:
    """Where a folder stands: its UIDVALIDITY and the highest UID delivered (0: none yet)."""

    account: str
    folder: str
    uidvalidity: int
    last_uid: int


class FetchState:
    """Reads and advances fetch progress in a ``Store``."""

    def __init__(self, store: Store) -> None:
        if not isinstance(store, Store):
            raise TypeError("store must be a mailcrypt.state.store.Store")
        self.store = store
        with store.transaction() as conn:
            conn.execute(_PENDING_SCHEMA)

    def get(self, account: str, folder: str) -> FolderState | None:
        rows = self.store.read(
            "SELECT uidvalidity, last_uid FROM fetch_state WHERE account = ? AND folder = ?", (account, folder)
        )
        if not rows:
            return None
        uidvalidity, last_uid = rows[0]
        return FolderState(account, folder, int(uidvalidity), int(last_uid))

    def begin(self, account: str, folder: str, uidvalidity: int, *, accept_new: bool = False) -> FolderState:
        """The folder's state for this UIDVALIDITY; raises ``errors.UIDValidityChanged`` on a change.

        With ``accept_new`` a changed UIDVALIDITY replaces the stored one and
        the folder starts again from UID 0 (the user asked for that).
        """
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT uidvalidity, last_uid FROM fetch_state WHERE account = ? AND folder = ?", (account, folder)
            ).fetchone()
            if row is not None and int(row[0]) == uidvalidity:
                return FolderState(account, folder, uidvalidity, int(row[1]))
            if row is not None and not accept_new:
                raise errors.UIDValidityChanged(
                    f"{account}/{folder}: the server's UIDVALIDITY changed from {row[0]} to {uidvalidity}, so the "
                    f"UIDs recorded (up to {row[1]}) no longer name the same messages; nothing was fetched. "
                    f"To fetch the folder again from the start, and so get a second copy of mail already "
                    f"delivered, run: mailcrypt fetch --account {account} --folder {folder!r} --accept-uidvalidity "
                    "(add --since DATE to fetch only recent mail)",
                    account=account,
                    folder=folder,
                    stored=int(row[0]),
                    found=uidvalidity,
                )
            conn.execute(
                "INSERT INTO fetch_state (account, folder, uidvalidity, last_uid, updated_at) VALUES (?, ?, ?, 0, ?)"
                " ON CONFLICT (account, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity, last_uid = 0,"
                " updated_at = excluded.updated_at",
                (account, folder, uidvalidity, int(time.time())),
            )
            conn.execute("DELETE FROM fetch_pending WHERE account = ? AND folder = ?", (account, folder))
        return FolderState(account, folder, uidvalidity, 0)

    def advance(self, state: FolderState, last_uid: int) -> FolderState:
        """Record that every UID up to ``last_uid`` is delivered (durably: call after the files are)."""
        with self.store.transaction() as conn:
            cursor = conn.execute(
                "UPDATE fetch_state SET last_uid = max(last_uid, ?), updated_at = ?"
                " WHERE account = ? AND folder = ? AND uidvalidity = ?",
                (last_uid, int(time.time()), state.account, state.folder, state.uidvalidity),
            )
            if cursor.rowcount != 1:
                raise errors.FetchError(
                    f"{state.account}/{state.folder}: the fetch state changed while this run was fetching "
                    "(another mailcrypt fetch?)"
                )
            conn.execute(
                "DELETE FROM fetch_pending WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid <= ?",
                (state.account, state.folder, state.uidvalidity, last_uid),
            )
        return FolderState(state.account, state.folder, state.uidvalidity, max(state.last_uid, last_uid))

    def add_pending(self, state: FolderState, uids: list[int]) -> None:
        """Note that ``uids`` are about to be written by a sink that cannot check afterwards."""
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO fetch_pending (account, folder, uidvalidity, uid) VALUES (?, ?, ?, ?)",
                [(state.account, state.folder, state.uidvalidity, uid) for uid in uids],
            )

    def pending(self, state: FolderState) -> set[int]:
        """UIDs a crashed run may or may not have written."""
        rows = self.store.read(
            "SELECT uid FROM fetch_pending WHERE account = ? AND folder = ? AND uidvalidity = ?",
            (state.account, state.folder, state.uidvalidity),
        )
        return {int(r[0]) for r in rows}

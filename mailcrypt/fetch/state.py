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

Every message written (delivered or quarantined) leaves the SHA-256 of its
bytes as the server sent them in ``fetch_delivered``, recorded by
``advance`` in the same transaction as the progress. After the user accepted
a new UIDVALIDITY, ``recognise`` matches the folder's messages against the
digests recorded under the old one, so that mail already delivered gets its
new (UIDVALIDITY, UID) recorded instead of a second copy (and is not taken
for a replay of itself); each old record stands for one message only.
``forget_previous`` drops the old records once the folder has been fetched
again. Mail delivered before mailcrypt kept these digests (schema version
1) cannot be recognised; the UIDVALIDITY message says so.

Sinks that cannot tell afterwards whether a write happened (an IMAP folder:
an APPEND whose answer was lost) record the UIDs they are about to write as
pending entries in ``fetch_pending`` first, in the same store; ``advance``
clears them with the progress.

A first sync with ``--since DATE`` leaves the older mail out on purpose and
still advances past it; ``fetch_since`` remembers that DATE per (account,
folder, UIDVALIDITY) (``since``, ``set_since``), so that a later run with
an earlier ``--since`` knows which mail it has never looked at: the UIDs
below the progress that arrived before the remembered DATE, less those
``fetch_delivered`` records (``delivered``).

For re-processing the Quarantine (``requeue``), offline: ``fetch_delimiter``
keeps each account's hierarchy delimiter as the last fetch saw it, so that
a server folder's Maildir++ name can be made again; ``quarantine_released``
names the quarantined messages delivered since (``release``, written in
the transaction that records their replay keys; ``released``).

What it won't do: decide what to fetch, or touch the replay cache.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from mailcrypt import errors
from mailcrypt.state import Store

__all__ = ["FetchState", "FolderState", "OldRecord"]

_PENDING_SCHEMA = """CREATE TABLE IF NOT EXISTS fetch_pending (
    account     TEXT NOT NULL,
    folder      TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    PRIMARY KEY (account, folder, uidvalidity, uid)
)"""


_SINCE_SCHEMA = """CREATE TABLE IF NOT EXISTS fetch_since (
    account     TEXT NOT NULL,
    folder      TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    since       TEXT NOT NULL,
    PRIMARY KEY (account, folder, uidvalidity)
)"""


# The server's hierarchy delimiter per account ("" for a flat namespace), as the last fetch saw it:
# re-processing the Quarantine needs it to name a folder's Maildir++ directory without a connection.
_DELIMITER_SCHEMA = """CREATE TABLE IF NOT EXISTS fetch_delimiter (
    account     TEXT PRIMARY KEY,
    delimiter   TEXT NOT NULL
)"""


# Quarantined messages delivered by re-processing (``requeue``): written in the same transaction
# as their replay keys, before the quarantined copy is removed.
_RELEASED_SCHEMA = """CREATE TABLE IF NOT EXISTS quarantine_released (
    account     TEXT NOT NULL,
    folder      TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    released_at INTEGER NOT NULL,
    PRIMARY KEY (account, folder, uidvalidity, uid)
)"""


@dataclass(frozen=True)
class FolderState:
    """Where a folder stands: its UIDVALIDITY and the highest UID delivered (0: none yet).

    ``previous``: mail was recorded under another UIDVALIDITY of this folder
    and may be recognised (``FetchState.recognise``).
    """

    account: str
    folder: str
    uidvalidity: int
    last_uid: int
    previous: bool = False


#: An earlier record of a message: (UIDVALIDITY, UID).
OldRecord = tuple[int, int]

# Digests per query in recognise(): well below SQLite's limit on parameters (999 before 3.32).
_CHUNK = 400


class FetchState:
    """Reads and advances fetch progress in a ``Store``."""

    def __init__(self, store: Store) -> None:
        if not isinstance(store, Store):
            raise TypeError("store must be a mailcrypt.state.store.Store")
        self.store = store
        with store.transaction() as conn:
            conn.execute(_PENDING_SCHEMA)
            conn.execute(_SINCE_SCHEMA)
            conn.execute(_DELIMITER_SCHEMA)
            conn.execute(_RELEASED_SCHEMA)

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
                previous = self._previous(conn, account, folder, uidvalidity)
                return FolderState(account, folder, uidvalidity, int(row[1]), previous)
            if row is not None and not accept_new:
                raise errors.UIDValidityChanged(
                    self._changed(conn, account, folder, int(row[0]), int(row[1]), uidvalidity),
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
            previous = self._previous(conn, account, folder, uidvalidity)
        return FolderState(account, folder, uidvalidity, 0, previous)

    @staticmethod
    def _previous(conn: sqlite3.Connection, account: str, folder: str, uidvalidity: int) -> bool:
        # Two range scans of the primary key, each stopping at its first row.
        return any(
            conn.execute(
                f"SELECT 1 FROM fetch_delivered WHERE account = ? AND folder = ? AND uidvalidity {op} ? LIMIT 1",  # noqa: S608
                (account, folder, uidvalidity),
            ).fetchone()
            for op in ("<", ">")
        )

    @staticmethod
    def _changed(conn: sqlite3.Connection, account: str, folder: str, stored: int, last_uid: int, found: int) -> str:
        """The UIDValidityChanged message: what happened, and what accepting the new numbering will do."""
        known = conn.execute(
            "SELECT count(*) FROM fetch_delivered WHERE account = ? AND folder = ? AND uidvalidity = ?",
            (account, folder, stored),
        ).fetchone()[0]
        if known or last_uid == 0:
            effect = "mail delivered before is recognised by its content and not delivered again"
        else:
            effect = (
                "the mail delivered from it so far was delivered by an older mailcrypt that kept no record of "
                "its content, so it would be delivered a second time"
            )
        return (
            f"{account}/{folder}: the server's UIDVALIDITY changed from {stored} to {found}, so the UIDs "
            f"recorded (up to {last_uid}) no longer name the same messages; nothing was fetched from this folder. "
            f"To fetch it again from the start ({effect}), run: mailcrypt fetch --account {account} "
            f"--folder {folder!r} --accept-uidvalidity (add --since DATE to fetch only recent mail)"
        )

    def recognise(
        self, state: FolderState, digests: Mapping[int, bytes], claimed: set[OldRecord]
    ) -> dict[int, OldRecord]:
        """Those of ``digests`` (UID -> SHA-256) recorded under another UIDVALIDITY: UID -> the old record.

        Each old record matches one message: those in ``claimed`` (matched
        earlier in this run, not committed yet) are passed over, and the ones
        matched here are added to it. UIDs are matched in ascending order.
        """
        if not state.previous or not digests:
            return {}
        wanted = sorted(set(digests.values()))
        old: dict[bytes, list[OldRecord]] = {}
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i : i + _CHUNK]
            placeholders = ",".join("?" * len(chunk))
            rows = self.store.read(
                "SELECT digest, uidvalidity, uid FROM fetch_delivered WHERE account = ? AND folder = ?"  # noqa: S608
                f" AND uidvalidity != ? AND digest IN ({placeholders}) ORDER BY uidvalidity, uid",
                (state.account, state.folder, state.uidvalidity, *chunk),
            )
            for digest, uidvalidity, uid in rows:
                old.setdefault(bytes(digest), []).append((int(uidvalidity), int(uid)))
        out: dict[int, OldRecord] = {}
        for uid in sorted(digests):
            for record in old.get(digests[uid], ()):
                if record not in claimed:
                    claimed.add(record)
                    out[uid] = record
                    break
        return out

    def forget_previous(self, state: FolderState) -> FolderState:
        """Drop the records of other UIDVALIDITYs: the folder has been fetched again under this one."""
        if not state.previous:
            return state
        with self.store.transaction() as conn:
            conn.execute(
                "DELETE FROM fetch_delivered WHERE account = ? AND folder = ? AND uidvalidity != ?",
                (state.account, state.folder, state.uidvalidity),
            )
        return FolderState(state.account, state.folder, state.uidvalidity, state.last_uid, False)

    def advance(
        self,
        state: FolderState,
        last_uid: int,
        *,
        written: Iterable[tuple[int, bytes]] = (),
        recognised: Sequence[OldRecord] = (),
    ) -> FolderState:
        """Record that every UID up to ``last_uid`` is delivered (durably: call after the files are).

        ``written`` are (UID, SHA-256 of the message as fetched) of the
        messages of the batch that are in the sink, recognised ones included;
        ``recognised`` the old records they replace. All in one transaction
        with the progress.
        """
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
            conn.executemany(
                "INSERT OR REPLACE INTO fetch_delivered (account, folder, uidvalidity, uid, digest)"
                " VALUES (?, ?, ?, ?, ?)",
                [(state.account, state.folder, state.uidvalidity, uid, digest) for uid, digest in written],
            )
            conn.executemany(
                "DELETE FROM fetch_delivered WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ?",
                [(state.account, state.folder, old_validity, old_uid) for old_validity, old_uid in recognised],
            )
        return FolderState(
            state.account, state.folder, state.uidvalidity, max(state.last_uid, last_uid), state.previous
        )

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

    def since(self, state: FolderState) -> date | None:
        """The date before which this folder's mail was left out (``--since``), or None: nothing was."""
        rows = self.store.read(
            "SELECT since FROM fetch_since WHERE account = ? AND folder = ? AND uidvalidity = ?",
            (state.account, state.folder, state.uidvalidity),
        )
        return date.fromisoformat(str(rows[0][0])) if rows else None

    def set_since(self, state: FolderState, since: date) -> None:
        """Remember that mail before ``since`` was left out (call once the mail since then is delivered)."""
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO fetch_since (account, folder, uidvalidity, since) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (account, folder, uidvalidity) DO UPDATE SET since = excluded.since",
                (state.account, state.folder, state.uidvalidity, since.isoformat()),
            )

    def delivered(self, state: FolderState, uids: Sequence[int]) -> set[int]:
        """Those of ``uids`` whose delivery is recorded (``fetch_delivered``) under the folder's UIDVALIDITY."""
        found: set[int] = set()
        for i in range(0, len(uids), _CHUNK):
            chunk = tuple(uids[i : i + _CHUNK])
            placeholders = ",".join("?" * len(chunk))
            rows = self.store.read(
                "SELECT uid FROM fetch_delivered WHERE account = ? AND folder = ? AND uidvalidity = ?"  # noqa: S608
                f" AND uid IN ({placeholders})",
                (state.account, state.folder, state.uidvalidity, *chunk),
            )
            found.update(int(r[0]) for r in rows)
        return found

    def note_delimiter(self, account: str, delimiter: str | None) -> None:
        """Remember the account's hierarchy delimiter (None: a flat namespace)."""
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO fetch_delimiter (account, delimiter) VALUES (?, ?)"
                " ON CONFLICT (account) DO UPDATE SET delimiter = excluded.delimiter",
                (account, delimiter or ""),
            )

    def delimiter(self, account: str) -> tuple[bool, str | None]:
        """(known, delimiter): whether a fetch recorded the account's delimiter, and which (None: flat)."""
        rows = self.store.read("SELECT delimiter FROM fetch_delimiter WHERE account = ?", (account,))
        return (True, str(rows[0][0]) or None) if rows else (False, None)

    def released(self, account: str, folder: str, uidvalidity: int, uid: int) -> bool:
        """True when re-processing delivered this quarantined message (``release``)."""
        rows = self.store.read(
            "SELECT 1 FROM quarantine_released WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ?",
            (account, folder, uidvalidity, uid),
        )
        return bool(rows)

    def release(self, conn: sqlite3.Connection, account: str, folder: str, uidvalidity: int, uid: int) -> None:
        """Record, inside the caller's transaction ``conn``, that a quarantined message was delivered."""
        conn.execute(
            "INSERT OR IGNORE INTO quarantine_released (account, folder, uidvalidity, uid, released_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (account, folder, uidvalidity, uid, int(time.time())),
        )

"""Re-processing the Quarantine: deliver what the current keys and settings can now read (DESIGN.md §2).

Quarantine is not a dead end: after a missing identity was imported or a
setting changed, ``Requeue.run`` takes every message in an account's
Quarantine folder of a Maildir target, recovers the server's bytes from
under the fields the fetcher put on top (``X-Mailcrypt-Status``,
``X-Mailcrypt-Arrival``, ``X-Mailcrypt-Source``, in that order, nothing
else: a forged field of the original below them stays part of the
original), and runs it through ``MessageProcessor.process`` again, with the
arrival the copy recorded. What is readable now is delivered into the
Maildir++ folder of the server folder it came from, under the same file
name the fetcher gives it (so that a later fetch or ``--accept-uidvalidity``
finds it) and with the flags a mail client gave the quarantined copy; the
rest stays, its status field replaced when the verdict changed (a replay
stays a replay: its key is in the replay cache).

Each delivery runs in this order, and ``fault(step, uid)`` is called after
each step for the crash tests: ``processed``; ``written``, ``fsynced``,
``renamed`` (the Maildir writer, through ``tmp/``); ``synced`` (the
directory); ``recorded`` (the replay keys and a ``quarantine_released`` entry
in one transaction); ``unlinked`` (the quarantined copy). A rerun that
finds a message both delivered and quarantined knows a crash came between
the rename and the unlink: it records what is missing (the same
transaction, idempotent) and unlinks, so every message ends up exactly
once.

A copy quarantined before the fetcher recorded arrivals has no
``X-Mailcrypt-Arrival``: its arrival is unknown and its freshness is
judged around the time of re-processing, as for any message without an
arrival (``ReplayGuard.check_freshness``). Naming a folder's Maildir++
directory needs the server's hierarchy delimiter, which every fetch records
per account (``FetchState.note_delimiter``); for a folder name holding a
"/" or "." before any fetch recorded it, the message stays, and the
summary says why.

What it won't do: talk to the server, re-process an ``imap:`` target's
Quarantine, or touch a file whose top fields are not the fetcher's.
"""

from __future__ import annotations

import email.utils
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mailcrypt.fetch.maildir import Maildir, MaildirFolder, maildir_folder_name, message_stem, to_lf
from mailcrypt.fetch.process import ARRIVAL_FIELD, STATUS_FIELD, MessageProcessor
from mailcrypt.fetch.state import FetchState

__all__ = ["REQUEUE_STEPS", "Quarantined", "Requeue", "RequeueCounts", "read_quarantined"]

log = logging.getLogger(__name__)

#: Every point a crash test can stop a delivery at, in the order they happen.
REQUEUE_STEPS = ("processed", "written", "fsynced", "renamed", "synced", "recorded", "unlinked")

Fault = Callable[[str, int], None]


def _no_fault(step: str, uid: int) -> None:
    return None


_SOURCE_FIELD = "X-Mailcrypt-Source"


@dataclass(frozen=True)
class Quarantined:
    """One quarantined copy, read back: where it came from and the server's bytes."""

    raw: bytes
    source: str
    status: str
    arrival: datetime | None
    head: str
    stem: str


def read_quarantined(data: bytes) -> Quarantined | None:
    """The fetcher's top fields and the original under them; None when ``data`` does not start with them.

    Only the fields ``MessageProcessor`` writes on a quarantined copy are
    taken, in its order (status, arrival if known, source) and each once;
    the original starts right after ``X-Mailcrypt-Source``.
    """
    values: dict[str, str] = {}
    order = (STATUS_FIELD.lower(), ARRIVAL_FIELD.lower(), _SOURCE_FIELD.lower())
    at = 0
    while _SOURCE_FIELD.lower() not in values:
        end = data.find(b"\n", at)
        if end < 0:
            return None
        name, sep, text = data[at:end].partition(b":")
        key = name.decode("ascii", "replace").lower()
        if not sep or key not in order or key in values:
            return None
        # The fields come in order: a later one never precedes an earlier one.
        if any(order.index(seen) > order.index(key) for seen in values):
            return None
        values[key] = text.strip().decode("utf-8", "replace")
        at = end + 1
    if STATUS_FIELD.lower() not in values:
        return None
    head, mark, rest = values[_SOURCE_FIELD.lower()].rpartition(" <")
    if not mark or not rest.endswith(">"):
        return None
    arrival = None
    if ARRIVAL_FIELD.lower() in values:
        try:
            arrival = email.utils.parsedate_to_datetime(values[ARRIVAL_FIELD.lower()]).astimezone(UTC)
        except (TypeError, ValueError):
            return None
    return Quarantined(data[at:], values[_SOURCE_FIELD.lower()], values[STATUS_FIELD.lower()], arrival, head, rest[:-1])


def _origin(q: Quarantined, account: str) -> tuple[str, int, int] | None:
    """(server folder, UIDVALIDITY, UID) of a copy of ``account``, checked against its file name scheme."""
    if not q.head.startswith(f"{account}/"):
        return None
    folder = q.head[len(account) + 1 :]
    prefix, sep, uid_text = q.stem.rpartition(",U=")
    validity_text = prefix.rpartition(".")[2]
    if not sep or not uid_text.isdigit() or not validity_text.isdigit():
        return None
    uidvalidity, uid = int(validity_text), int(uid_text)
    if message_stem(account, folder, uidvalidity, uid) != q.stem:
        return None
    return folder, uidvalidity, uid


@dataclass
class RequeueCounts:
    """What one account's re-processing did."""

    examined: int = 0
    delivered: int = 0
    #: Delivered by an earlier, interrupted run: only the quarantined copy was left to remove.
    finished: int = 0
    #: Still unreadable, by reason; ``updated`` of them got a new status field.
    remaining: Counter[str] = field(default_factory=Counter)
    updated: int = 0
    #: Left alone: not the fetcher's fields, another account's, or a folder whose name cannot be made.
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


class Requeue:
    """Re-processes the Quarantine of Maildir targets with one processor (and its replay guard) and state store."""

    def __init__(
        self,
        *,
        state: FetchState,
        processor: MessageProcessor,
        fault: Fault = _no_fault,
    ) -> None:
        self.state = state
        self.processor = processor
        self.fault = fault

    def run(self, account: str, root: Path, quarantine: str = "Quarantine") -> RequeueCounts:
        """Re-process the copies of ``account`` in the Maildir ``root``'s ``quarantine`` folder.

        The caller holds the account's fetch lock: a fetch must not deliver
        into the same folders meanwhile.
        """
        maildir = Maildir(root)
        qfolder = maildir.folder(maildir_folder_name(quarantine, None))
        counts = RequeueCounts()
        # Each delivery records its replay keys before the next message is read, so a second copy
        # in the quarantine is found a replay by the store, as it will be on every rerun.
        for path in qfolder.messages():
            self._one(account, maildir, qfolder, path, counts)
        return counts

    def _target(self, maildir: Maildir, account: str, folder: str) -> MaildirFolder | None:
        known, delimiter = self.state.delimiter(account)
        if not known and ("/" in folder or "." in folder):
            # "a.b" is ".a_b" under "/" and ".a.b" under ".": only the server can tell.
            return None
        return maildir.folder(maildir_folder_name(folder, delimiter))

    def _one(
        self,
        account: str,
        maildir: Maildir,
        qfolder: MaildirFolder,
        path: Path,
        counts: RequeueCounts,
    ) -> None:
        data = path.read_bytes()
        q = read_quarantined(data)
        origin = None if q is None else _origin(q, account)
        if q is None or origin is None:
            # A file the fetcher did not write, or one of this account's whose name does not match
            # its source; another account's copy (a shared Maildir) is that account's business.
            if q is None or q.head.startswith(f"{account}/"):
                counts.skipped += 1
                counts.notes.append(f"{path.name}: not a quarantined copy this mailcrypt can read; left alone")
            return
        counts.examined += 1
        folder, uidvalidity, uid = origin
        if path.name.split(":", 1)[0] != q.stem:
            counts.skipped += 1
            counts.notes.append(f"{path.name}: its name is not the one its {_SOURCE_FIELD} gives; left alone")
            return
        target = self._target(maildir, account, folder)
        if target is None:
            counts.skipped += 1
            counts.notes.append(
                f"{account}/{folder} UID {uid}: the server's hierarchy delimiter is not known yet "
                f"(run mailcrypt fetch --account {account} once); left in the quarantine"
            )
            return
        if target.find(q.stem) is not None:
            # Delivered by a run that stopped before the unlink: finish it, never deliver again.
            self._finish(account, folder, uidvalidity, uid, q)
            qfolder.remove(path)
            self.fault("unlinked", uid)
            counts.finished += 1
            log.info("%s/%s UID %d: delivered by an interrupted run; quarantined copy removed", account, folder, uid)
            return
        outcome = self.processor.process(q.raw, source=q.source, arrival=q.arrival)
        self.fault("processed", uid)
        if outcome.quarantine:
            counts.remaining[outcome.reason] += 1
            # The copy on disk has LF line ends (the Maildir is written as local tools write it).
            if to_lf(outcome.data) != data:
                qfolder.replace(path, outcome.data)
                counts.updated += 1
            return
        target.clean_tmp(q.stem)
        # The flags a mail client gave the quarantined copy (``cur/NAME:2,FLAGS``) go with it.
        info = path.name.split(":", 1)[1] if path.parent.name == "cur" and ":" in path.name else ""
        letters = info[2:] if info.startswith("2,") else ""
        target.deliver(q.stem, outcome.data, info=letters, fault=lambda step: self.fault(step, uid))
        target.sync()
        self.fault("synced", uid)
        with self.state.store.transaction() as conn:
            if outcome.record is not None:
                r = outcome.record
                self.processor.guard.record_delivered([(r.digest, r.signing_time, r.now, r.kind, r.also)], within=conn)
            self.state.release(conn, account, folder, uidvalidity, uid)
        self.fault("recorded", uid)
        qfolder.remove(path)
        self.fault("unlinked", uid)
        counts.delivered += 1
        log.info("%s/%s UID %d: released from the quarantine: %s", account, folder, uid, outcome.note or outcome.reason)

    def _finish(self, account: str, folder: str, uidvalidity: int, uid: int, q: Quarantined) -> None:
        """Record what an interrupted delivery may not have recorded: its replay keys and its release."""
        if self.state.released(account, folder, uidvalidity, uid):
            return
        outcome = self.processor.process(q.raw, source=q.source, arrival=q.arrival)
        with self.state.store.transaction() as conn:
            if not outcome.quarantine and outcome.record is not None:
                r = outcome.record
                self.processor.guard.record_delivered([(r.digest, r.signing_time, r.now, r.kind, r.also)], within=conn)
            self.state.release(conn, account, folder, uidvalidity, uid)

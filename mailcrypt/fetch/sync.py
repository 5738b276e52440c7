"""One folder, incrementally and exactly once (STYLE.md §5).

``FolderSync.run(folder)`` works in this order, batch by batch:

1. SELECT the folder (EXAMINE unless ``--mark-seen``; a refusal is
   ``errors.FolderUnavailable``) and compare its UIDVALIDITY with the store
   (``state.begin``): a change stops the folder with
   ``errors.UIDValidityChanged``, and the runner goes on with the others.
2. Ask for the UIDs above the last one delivered (``--since`` narrows only a
   first sync; an earlier ``--since`` on a later run also takes the mail the
   first one left out, ``_left_out``) and the sizes of those larger than ``batch_bytes /
   batch_count`` (the others count as that much); cut them into batches of
   at most ``batch_count`` messages and ``batch_bytes`` bytes, so that only
   two batches of bodies are in memory (see below).
3. ``UID FETCH <batch> (BODY.PEEK[] FLAGS INTERNALDATE)``: one command per
   batch; the flags go with each message to the sink (Maildir info letters),
   the INTERNALDATE is the arrival the replay guard's freshness window lies
   around (DESIGN.md §2).
4. Per message, in UID order: if a copy already exists (a crashed run wrote
   it), keep it; else decrypt/verify/check replay (``process``), write to
   ``tmp/``, fsync, rename into ``new/`` (or quarantine). After the user
   accepted a new UIDVALIDITY, a message whose content (SHA-256 of the bytes
   fetched) was delivered under the old one is recognised
   (``state.recognise``) and neither processed nor delivered again, so it is
   not a replay of itself either.
5. Per batch: fsync the directories, record the replay keys of the
   messages delivered, then record the batch's last UID in the store, with
   the content digest of every message written or recognised.
6. Only then, and only with ``--mark-seen``, set ``\\Seen`` on the server.

Steps 4 and 5 of a batch run in a thread of their own while this one
fetches the next batch (step 3) and hands it to the worker processes that
decrypt large folders (``workers``): so two batches of bodies are in memory
at a time, and batches are still delivered and committed one after the
other, in order.

A crash anywhere leaves files that the rerun recognises by name (they are
derived from UIDVALIDITY and UID), progress that lags behind the files but
never runs ahead of them, and replay keys recorded only for messages that
are on disk. ``fault(step, uid)`` is called after every step, so that the
crash tests can stop the process at each one: ``fetched``, ``processed``,
``written``, ``fsynced``, ``renamed`` (per message), then ``synced``,
``recorded``, ``committed`` and ``flagged`` (per batch, with its last UID).

What it won't do: connect, pick folders or loop for ``--watch`` (``runner``).

Longer than 400 lines: the steps of one folder's sync, in STYLE.md §5 order, and
their crash points are kept in one place so that the order stays visible.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

from mailcrypt.fetch.imap import IMAPConnection, ranges
from mailcrypt.fetch.process import MessageProcessor, Outcome, Prepared
from mailcrypt.fetch.progress import Counts, Progress
from mailcrypt.fetch.sink import FolderSink, Sink, source_labels
from mailcrypt.fetch.state import FetchState, FolderState, OldRecord
from mailcrypt.fetch.workers import Workers
from mailcrypt.state import ReplayGuard

__all__ = ["FolderSync", "SyncOptions", "STEPS", "Fault"]

log = logging.getLogger(__name__)

#: Every point a crash test can stop at, in the order they happen.
STEPS = ("fetched", "processed", "written", "fsynced", "renamed", "synced", "recorded", "committed", "flagged")

Fault = Callable[[str, int], None]


def _fault_at(fault: Fault, uid: int) -> Callable[[str], None]:
    """``fault`` for one message, as a sink calls it (with the step alone)."""
    return lambda step: fault(step, uid)


def _no_fault(step: str, uid: int) -> None:
    return None


#: One fetched batch on its way: (UID, (message, source label), what ``prepare`` made of it), in UID order.
_Fetched = Iterator[tuple[int, tuple[bytes, str], "Prepared"]]


@dataclass(frozen=True)
class _Batch:
    """One batch between fetching and delivery."""

    uids: list[int]
    #: The messages to process and deliver (the recognised ones are not among them).
    prepared: _Fetched
    #: SHA-256 of every message fetched, as the server sent it.
    digests: dict[int, bytes]
    #: Messages delivered under an earlier UIDVALIDITY: UID -> that record.
    recognised: dict[int, OldRecord]
    #: When each message reached the server (INTERNALDATE), where the server said.
    arrivals: dict[int, datetime | None]
    #: The server's flags of each message fetched, read with its body.
    flags: dict[int, frozenset[str]]


# Messages whose replay keys are looked up together (about one worker chunk).
_REPLAY_GROUP = 32


def _settle(job: Future[tuple[FolderState, list[int]]]) -> None:
    """Wait for ``job`` when another error is already on its way up; log the job's own failure."""
    try:
        job.result()
    except BaseException:  # noqa: BLE001 - the error being raised already takes precedence.
        log.exception("delivering a batch failed as well")


@dataclass(frozen=True)
class SyncOptions:
    """How to sync: from the command line and the configuration."""

    mark_seen: bool = False
    since: date | None = None
    accept_uidvalidity: bool = False
    batch_count: int = 200
    batch_bytes: int = 32 << 20
    #: Decrypt in this many worker processes when a folder has at least ``parallel_from``
    #: new messages (0: one per CPU; 1: in this process only).
    workers: int = 0
    parallel_from: int = 64



def batches(uids: list[int], sizes: dict[int, int], *, count: int, limit: int, unlisted: int = 0) -> list[list[int]]:
    """UIDs cut into runs of at most ``count`` messages and ``limit`` bytes (a bigger message goes alone).

    A UID missing from ``sizes`` counts as ``unlisted`` bytes (its size or more).
    """
    out: list[list[int]] = []
    current: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, unlisted)
        if current and (len(current) >= count or total + size > limit):
            out.append(current)
            current, total = [], 0
        current.append(uid)
        total += size
    if current:
        out.append(current)
    return out


def _ahead(prepared: _Fetched, seen: dict[str, tuple[int, str]], guard: ReplayGuard) -> _Fetched:
    """``prepared`` unchanged, read a group at a time; ``seen`` holds what the store knows of the group's replay keys.

    One query per group instead of one per message. Keys recorded during the
    batch are not in the store yet either way: ``_batch`` checks those itself.
    """
    while group := list(itertools.islice(prepared, _REPLAY_GROUP)):
        seen.clear()
        seen.update(guard.seen(k for _u, _i, ready in group if ready.record is not None for k in ready.record.keys))
        yield from group


@dataclass(eq=False, kw_only=True)
class FolderSync:
    """Syncs the folders of one account over one connection into one sink (``runner.Fetcher`` makes it)."""

    account: str
    connection: IMAPConnection
    state: FetchState
    processor: MessageProcessor
    sink: Sink
    options: SyncOptions
    progress: Progress
    fault: Fault = _no_fault
    _delimiter: str | None | Literal[False] = field(init=False, default=False)
    # Old records matched in this run, not committed yet (state.recognise).
    _claimed: set[OldRecord] = field(init=False, default_factory=set)

    def _folder_delimiter(self) -> str | None:
        if self._delimiter is False:
            self._delimiter = self.connection.delimiter()
            # Re-processing the Quarantine names Maildir++ folders with it, offline (``requeue``).
            self.state.note_delimiter(self.account, self._delimiter)
        return self._delimiter

    def run(self, folder: str) -> Counts:
        """Fetch every new message of ``folder``; return the counts."""
        info = self.connection.select(folder, readonly=not self.options.mark_seen)
        fstate = self.state.begin(self.account, folder, info.uidvalidity, accept_new=self.options.accept_uidvalidity)
        sink = self.sink.open_folder(self.account, folder, self._folder_delimiter(), info.uidvalidity)
        sink.prepare(self.state.pending(fstate) if self.sink.needs_pending else set())
        # The sink may have used the connection for other folders: select ours again.
        self.connection.select(folder, readonly=not self.options.mark_seen)
        since = self.options.since if fstate.last_uid == 0 else None
        uids = self._left_out(fstate) + self.connection.new_uids(fstate.last_uid, since=since)
        counts = Counts()
        if uids:
            # Only messages above a batch's fair share of bytes can make it too large: the server
            # names those, and every other one counts as that share, an upper bound of its size.
            share = self.options.batch_bytes // max(1, self.options.batch_count)
            sizes = self.connection.sizes_above(uids, share)
            work = iter(
                batches(uids, sizes, count=self.options.batch_count, limit=self.options.batch_bytes, unlisted=share)
            )
            log.info("%s/%s: %d new message(s), UIDs %s", self.account, folder, len(uids), ranges(uids))
            self.progress.start(f"{self.account}/{folder}", len(uids))
            workers = self._workers(len(uids))
            try:
                fstate = self._batches(folder, fstate, work, sink, counts, workers)
            finally:
                self.progress.finish()
                if workers is not None:
                    workers.close()
        if since is not None and info.uidnext is not None and info.uidnext - 1 > fstate.last_uid:
            # Mail before --since was left out on purpose: later runs start after it.
            fstate = self.state.advance(fstate, info.uidnext - 1)
        if self.options.since is not None:
            # Recorded once what it left out is delivered: a crash before this fetches it again.
            left_out = self.state.since(fstate)
            if since is not None or (left_out is not None and self.options.since < left_out):
                self.state.set_since(fstate, self.options.since)
        # Every message of the new numbering has been seen: what is left of the old records
        # stands for mail no longer on the server, and must not hide a later arrival.
        self.state.forget_previous(fstate)
        return counts

    def _left_out(self, fstate: FolderState) -> list[int]:
        """UIDs an earlier ``--since`` left out that this run's earlier ``--since`` takes in, not yet delivered.

        The progress (``last_uid``) went past the mail left out, so it is
        found by date below it: arrived before the earlier run's date and on
        or after this one's. ``fetch_delivered`` names those a crashed run
        already delivered; a copy written but not recorded is found by name.
        """
        if self.options.since is None or fstate.last_uid == 0:
            return []
        left_out = self.state.since(fstate)
        if left_out is None or self.options.since >= left_out:
            return []
        found = self.connection.uids_before(fstate.last_uid, since=self.options.since, before=left_out)
        done = self.state.delivered(fstate, found)
        return [uid for uid in found if uid not in done]

    def _workers(self, count: int) -> Workers | None:
        """Worker processes for a large folder, or None (few messages, one CPU, or no fork)."""
        workers = self.options.workers or (os.cpu_count() or 1)
        if workers < 2 or count < self.options.parallel_from:
            return None
        if "fork" not in multiprocessing.get_all_start_methods():
            return None
        return Workers(workers, self.processor.prepare)

    def _batches(
        self,
        folder: str,
        fstate: FolderState,
        work: Iterator[list[int]],
        sink: FolderSink,
        counts: Counts,
        workers: Workers | None,
    ) -> FolderState:
        """Every batch in order, delivered in a thread while the next one is fetched and decrypted.

        Delivery waits in fsync most of the time and fetching parses IMAP
        responses, so the two overlap; each batch still goes through
        ``_batch`` alone and in order, which keeps the steps of every
        message, and the commit after its batch's files, in the order of
        the module docstring. The workers get batch n+1 before batch n is
        delivered, so they are not idle while its files are written. The
        IMAP connection stays with this thread: ``\\Seen`` is set here, once
        the batch's ``_batch`` has returned.
        """
        batch: list[int] | None
        current: _Batch | None
        batch = next(work)
        current = self._fetch(folder, fstate, batch, workers)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailcrypt-deliver") as deliverer:
            while batch is not None and current is not None:
                job = deliverer.submit(self._batch, folder, fstate, current, sink, counts)
                try:
                    following = next(work, None)
                    upcoming = None if following is None else self._fetch(folder, fstate, following, workers)
                except BaseException:
                    # The batch being delivered is finished first: its files and its commit belong together.
                    _settle(job)
                    raise
                fstate, handled = job.result()
                if self.options.mark_seen and handled:
                    self.connection.mark_seen(handled)
                    self.fault("flagged", batch[-1])
                batch, current = following, upcoming
        return fstate

    def _fetch(self, folder: str, fstate: FolderState, batch: list[int], workers: Workers | None) -> _Batch:
        """Fetch one batch and start its processing (in the workers, or lazily in the delivering thread)."""
        if self.sink.needs_pending:
            self.state.add_pending(fstate, batch)
        fetched = self.connection.messages(batch)
        self.fault("fetched", batch[0])
        bodies = {uid: message.body for uid, message in fetched.items()}
        arrivals = {uid: message.arrival for uid, message in fetched.items()}
        digests = {uid: hashlib.sha256(body).digest() for uid, body in bodies.items()}
        recognised = self.state.recognise(fstate, digests, self._claimed)
        present = [uid for uid in batch if uid in bodies and uid not in recognised]
        label = source_labels(self.account, folder, fstate.uidvalidity)
        items = [(bodies[uid], label(uid)) for uid in present]
        prepared: Iterable[Prepared]
        if workers is not None:
            prepared = workers.submit(items)
        else:
            prepared = (self.processor.prepare(raw, source=source) for raw, source in items)
        flags = {uid: message.flags for uid, message in fetched.items()}
        return _Batch(batch, zip(present, items, prepared, strict=True), digests, recognised, arrivals, flags)

    def _batch(
        self,
        folder: str,
        fstate: FolderState,
        fetched: _Batch,
        sink: FolderSink,
        counts: Counts,
    ) -> tuple[FolderState, list[int]]:
        """Deliver one batch and commit it; return the new state and the UIDs handled (to flag)."""
        batch = fetched.uids
        pending_keys: set[str] = set()
        records = []
        handled = list(fetched.recognised)
        if handled:
            log.info(
                "%s/%s: UIDs %s delivered before the UIDVALIDITY changed (recognised by content), not again",
                self.account, folder, ranges(handled),
            )
            counts.recognised += len(handled)
            self.progress.advance(len(handled))
        missing = len(batch) - len(handled)
        seen: dict[str, tuple[int, str]] = {}
        for uid, (raw, source), ready in _ahead(fetched.prepared, seen, self.processor.guard):
            missing -= 1
            existing = sink.where(uid)
            outcome = self.processor.finish(
                raw, ready, source=source, pending=pending_keys, seen=seen, arrival=fetched.arrivals.get(uid)
            )
            self.fault("processed", uid)
            if existing is not None:
                # A crashed run wrote this one already: keep that copy, and make sure the
                # replay key of a delivered message gets recorded, as it would have been.
                counts.existing += 1
                if existing == "folder" and not outcome.quarantine and outcome.record is not None:
                    records.append(outcome.record)
                    pending_keys.update(outcome.record.keys)
            else:
                sink.deliver(
                    uid,
                    outcome.data,
                    quarantine=outcome.quarantine,
                    flags=fetched.flags.get(uid, frozenset()),
                    fault=_fault_at(self.fault, uid),
                )
                if outcome.record is not None and not outcome.quarantine:
                    records.append(outcome.record)
                    pending_keys.update(outcome.record.keys)
                self._count(counts, outcome)
                log.info("%s/%s UID %d: %s", self.account, folder, uid, outcome.note or outcome.reason)
            handled.append(uid)
            self.progress.advance()
        if missing:
            log.info("%s/%s: %d message(s) expunged before they could be fetched", self.account, folder, missing)
            self.progress.advance(missing)
        last = batch[-1]
        sink.sync()
        self.fault("synced", last)
        # One transaction for the batch. A key already present (the rerun after a
        # crash that had recorded it) stays: the message is delivered either way.
        self.processor.guard.record_delivered([(r.digest, r.signing_time, r.now, r.kind, r.also) for r in records])
        self.fault("recorded", last)
        written = [(uid, fetched.digests[uid]) for uid in handled]
        fstate = self.state.advance(fstate, last, written=written, recognised=list(fetched.recognised.values()))
        self.fault("committed", last)
        return fstate, handled

    @staticmethod
    def _count(counts: Counts, outcome: Outcome) -> None:
        counts.fetched += 1
        if outcome.quarantine:
            # A message that made processing fail is quarantined too, but counted as failed.
            if outcome.reason == "error":
                counts.failed += 1
            else:
                counts.quarantined += 1
            counts.reasons[outcome.reason] += 1
            return
        counts.decrypted += outcome.decrypted
        counts.verified += outcome.verified
        counts.plain += outcome.reason == "plain"
        counts.stripped += outcome.stripped

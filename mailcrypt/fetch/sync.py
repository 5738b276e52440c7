"""One folder, incrementally and exactly once (STYLE.md §5).

``FolderSync.run(folder)`` works in this order, batch by batch:

1. SELECT the folder (EXAMINE unless ``--mark-seen``) and compare its
   UIDVALIDITY with the store (``state.begin``): a change stops the folder
   with ``errors.UIDValidityChanged``.
2. Ask for the UIDs above the last one delivered (``--since`` narrows only a
   first sync) and their sizes; cut them into batches of at most
   ``batch_count`` messages and ``batch_bytes`` bytes, so that only one
   batch of bodies is in memory.
3. ``UID FETCH <batch> (BODY.PEEK[])``: one command per batch.
4. Per message, in UID order: if a copy already exists (a crashed run wrote
   it), keep it; else decrypt/verify/check replay (``process``), write to
   ``tmp/``, fsync, rename into ``new/`` (or quarantine).
5. Per batch: fsync the directories, record the replay keys of the
   messages delivered, then record the batch's last UID in the store.
6. Only then, and only with ``--mark-seen``, set ``\\Seen`` on the server.

A crash anywhere leaves files that the rerun recognises by name (they are
derived from UIDVALIDITY and UID), progress that lags behind the files but
never runs ahead of them, and replay keys recorded only for messages that
are on disk. ``fault(step, uid)`` is called after every step, so that the
crash tests can stop the process at each one: ``fetched``, ``processed``,
``written``, ``fsynced``, ``renamed`` (per message), then ``synced``,
``recorded``, ``committed`` and ``flagged`` (per batch, with its last UID).

What it won't do: connect, pick folders or loop for ``--watch`` (``runner``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date

from mailcrypt.fetch.imap import IMAPConnection, ranges
from mailcrypt.fetch.process import MessageProcessor, Outcome, Prepared
from mailcrypt.fetch.progress import Counts, Progress
from mailcrypt.fetch.sink import FolderSink, Sink, source_label
from mailcrypt.fetch.state import FetchState, FolderState
from mailcrypt.replay import ReplayGuard

__all__ = ["FolderSync", "SyncOptions", "STEPS", "Fault"]

log = logging.getLogger(__name__)

#: Every point a crash test can stop at, in the order they happen.
STEPS = ("fetched", "processed", "written", "fsynced", "renamed", "synced", "recorded", "committed", "flagged")

Fault = Callable[[str, int], None]


def _no_fault(step: str, uid: int) -> None:
    return None


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


_DEFAULT_OPTIONS = SyncOptions()

# The processor of the worker processes: set before they are forked, so they
# inherit it (its private keys never travel through a pipe). Workers only
# ``prepare``; the replay check against the store stays in the parent.
_WORKER_PROCESSOR: MessageProcessor | None = None


def _prepare_in_worker(item: tuple[bytes, str]) -> Prepared:
    assert _WORKER_PROCESSOR is not None
    raw, source = item
    return _WORKER_PROCESSOR.prepare(raw, source=source)


def batches(uids: list[int], sizes: dict[int, int], *, count: int, limit: int) -> list[list[int]]:
    """UIDs cut into runs of at most ``count`` messages and ``limit`` bytes (a bigger message goes alone)."""
    out: list[list[int]] = []
    current: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if current and (len(current) >= count or total + size > limit):
            out.append(current)
            current, total = [], 0
        current.append(uid)
        total += size
    if current:
        out.append(current)
    return out


class FolderSync:
    """Syncs the folders of one account over one connection into one sink."""

    def __init__(
        self,
        *,
        account: str,
        connection: IMAPConnection,
        state: FetchState,
        guard: ReplayGuard,
        processor: MessageProcessor,
        sink: Sink,
        options: SyncOptions = _DEFAULT_OPTIONS,
        progress: Progress | None = None,
        fault: Fault = _no_fault,
    ) -> None:
        self.account = account
        self.conn = connection
        self.state = state
        self.guard = guard
        self.processor = processor
        self.sink = sink
        self.options = options
        self.progress = progress or Progress(enabled=False)
        self.fault = fault
        self._delimiter: str | None | bool = False

    def _folder_delimiter(self) -> str | None:
        if self._delimiter is False:
            self._delimiter = self.conn.delimiter()
        return self._delimiter  # type: ignore[return-value]

    def run(self, folder: str) -> Counts:
        """Fetch every new message of ``folder``; return the counts."""
        info = self.conn.select(folder, readonly=not self.options.mark_seen)
        fstate = self.state.begin(self.account, folder, info.uidvalidity, accept_new=self.options.accept_uidvalidity)
        sink = self.sink.open_folder(self.account, folder, self._folder_delimiter(), info.uidvalidity)
        sink.prepare(self.state.pending(fstate) if self.sink.needs_pending else set())
        # The sink may have used the connection for other folders: select ours again.
        self.conn.select(folder, readonly=not self.options.mark_seen)
        since = self.options.since if fstate.last_uid == 0 else None
        uids = self.conn.new_uids(fstate.last_uid, since=since)
        counts = Counts()
        if uids:
            sizes = self.conn.sizes(uids)
            work = batches(uids, sizes, count=self.options.batch_count, limit=self.options.batch_bytes)
            log.info("%s/%s: %d new message(s), UIDs %s", self.account, folder, len(uids), ranges(uids))
            self.progress.start(f"{self.account}/{folder}", len(uids))
            pool = self._pool(len(uids))
            try:
                fstate = self._batches(folder, fstate, work, sink, counts, pool)
            finally:
                self.progress.finish()
                if pool is not None:
                    pool.terminate()
                    pool.join()
        if since is not None and info.uidnext is not None and info.uidnext - 1 > fstate.last_uid:
            # Mail before --since was left out on purpose: later runs start after it.
            fstate = self.state.advance(fstate, info.uidnext - 1)
        return counts

    def _pool(self, count: int):  # type: ignore[no-untyped-def]
        """Worker processes for a large folder, or None (few messages, one CPU, or no fork)."""
        workers = self.options.workers or (os.cpu_count() or 1)
        if workers < 2 or count < self.options.parallel_from:
            return None
        try:
            context = multiprocessing.get_context("fork")
        except ValueError:
            return None
        global _WORKER_PROCESSOR
        _WORKER_PROCESSOR = self.processor
        return context.Pool(workers)

    def _batches(
        self,
        folder: str,
        fstate: FolderState,
        work: list[list[int]],
        sink: FolderSink,
        counts: Counts,
        pool,  # type: ignore[no-untyped-def]
    ) -> FolderState:
        """Every batch, the next one fetched while the workers decrypt this one."""
        if self.sink.needs_pending:
            self.state.add_pending(fstate, work[0])
        following = self.conn.bodies(work[0])
        self.fault("fetched", work[0][0])
        for index, batch in enumerate(work):
            bodies = following
            present = [uid for uid in batch if uid in bodies]
            items = [(bodies[uid], source_label(self.account, folder, fstate.uidvalidity, uid)) for uid in present]
            prepared: Iterable[Prepared]
            if pool is not None:
                chunk = max(1, len(items) // (4 * (self.options.workers or os.cpu_count() or 1)))
                prepared = pool.imap(_prepare_in_worker, items, chunksize=chunk)
            else:
                prepared = (self.processor.prepare(raw, source=source) for raw, source in items)
            if index + 1 < len(work):
                if self.sink.needs_pending:
                    self.state.add_pending(fstate, work[index + 1])
                following = self.conn.bodies(work[index + 1])
                self.fault("fetched", work[index + 1][0])
            fstate = self._batch(folder, fstate, batch, zip(present, items, prepared, strict=True), sink, counts)
        return fstate

    def _batch(
        self,
        folder: str,
        fstate: FolderState,
        batch: list[int],
        prepared: Iterator[tuple[int, tuple[bytes, str], Prepared]],
        sink: FolderSink,
        counts: Counts,
    ) -> FolderState:
        pending_keys: set[str] = set()
        records = []
        handled = []
        missing = len(batch)
        for uid, (raw, source), ready in prepared:
            missing -= 1
            existing = sink.where(uid)
            outcome = self.processor.finish(raw, ready, source=source, pending=pending_keys)
            self.fault("processed", uid)
            if existing is not None:
                # A crashed run wrote this one already: keep that copy, and make sure the
                # replay key of a delivered message gets recorded, as it would have been.
                counts.existing += 1
                if existing == "folder" and not outcome.quarantine and outcome.record is not None:
                    records.append(outcome.record)
                    pending_keys.update(outcome.record.keys)
            else:
                sink.deliver(uid, outcome.data, quarantine=outcome.quarantine, fault=lambda s, u=uid: self.fault(s, u))
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
        self.guard.record_delivered([(r.digest, r.signing_time, r.now, r.kind, r.also) for r in records])
        self.fault("recorded", last)
        fstate = self.state.advance(fstate, last)
        self.fault("committed", last)
        if self.options.mark_seen and handled:
            self.conn.mark_seen(handled)
            self.fault("flagged", last)
        return fstate

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

"""Worker processes that run ``MessageProcessor.prepare`` for a large folder, results in order.

``Workers(count, prepare)`` forks ``count`` processes that inherit
``prepare`` (a bound method of the processor: the private keys never travel
through a pipe). ``submit(items)`` hands a batch of (message, source label)
pairs to them in chunks, round-robin, and returns an iterator over the
``Prepared`` results in the order of ``items``; batches are read in the
order they were submitted. ``close`` ends the processes.

Why not ``multiprocessing.Pool``: its worker-handler thread waits on the
result pipe as well as on the workers, so it spins for as long as results
are waiting to be read; with its task and result threads it held the
fetching process's GIL for 0.15 s per 1,000 messages (py-spy), longer than
parsing the fetch responses. Here each worker has a pipe for tasks, written
by a sender thread of its own (a blocked write holds no lock, and one busy
worker does not hold up the others), and a pipe for results, read by
whoever iterates.

A worker that dies makes the iteration raise ``errors.FetchError``. Workers
ignore SIGINT: Ctrl-C reaches the fetching process, which closes the pipes,
and they stop at the end of their input.

What it won't do: decide anything about a message, or touch the store.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

from mailcrypt import errors
from mailcrypt.fetch.process import Prepared

__all__ = ["Workers"]

Prepare = Callable[..., Prepared]
Item = tuple[bytes, str]


def _serve(tasks: Connection, results: Connection, prepare: Prepare, inherited: list[Connection]) -> None:
    # The parent's ends of the pipes came along with the fork; holding them would keep
    # this worker, or the parent, from seeing the other side close.
    for connection in inherited:
        connection.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            sequence, sources = pickle.loads(tasks.recv_bytes())
            messages = [tasks.recv_bytes() for _ in sources]
        except EOFError:
            return
        prepared = [prepare(raw, source=source) for raw, source in zip(messages, sources, strict=True)]
        results.send_bytes(pickle.dumps((sequence, prepared), protocol=pickle.HIGHEST_PROTOCOL))


class _Worker:
    def __init__(
        self, context: multiprocessing.context.ForkContext, prepare: Prepare, inherited: list[Connection], index: int
    ) -> None:
        task_reader, self.tasks = context.Pipe(duplex=False)
        self.results, result_writer = context.Pipe(duplex=False)
        # The child closes what it inherits of the parent's ends, its own included:
        # a write end left open in it would keep it from ever seeing end of file.
        self.process = context.Process(
            target=_serve,
            args=(task_reader, result_writer, prepare, [*inherited, self.tasks, self.results]),
            name=f"mailcrypt-decrypt-{index}",
            daemon=True,
        )
        self.process.start()
        task_reader.close()
        result_writer.close()
        self.outbox: queue.SimpleQueue[tuple[int, list[Item]] | None] = queue.SimpleQueue()
        self.sent = 0  # chunks handed to the sender
        self.received = 0  # chunks read back
        self.sender: threading.Thread | None = None

    def send_loop(self) -> None:
        # A chunk goes as its sequence number and source labels, then each message as
        # it is: messages are most of the bytes, and written on their own they are not copied.
        while (task := self.outbox.get()) is not None:
            sequence, items = task
            try:
                self.tasks.send_bytes(pickle.dumps((sequence, [source for _raw, source in items])))
                for raw, _source in items:
                    self.tasks.send_bytes(raw)
            except OSError:  # the worker is gone: whoever reads its results reports that
                return


class Workers:
    """``count`` forked processes running ``prepare`` (see the module docstring)."""

    def __init__(self, count: int, prepare: Prepare, *, chunk: int = 25) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        context = multiprocessing.get_context("fork")
        # A chunk is an eighth of a batch of 200 for two workers, as multiprocessing.Pool
        # cut it; chunks of 8 measured slower (1,000 messages: 1.11 s against 0.94 s).
        self._chunk = chunk
        self._workers: list[_Worker] = []
        # Fork every process first: threads are started only afterwards, so that no
        # child is forked while another thread holds a lock.
        for index in range(count):
            inherited = [c for w in self._workers for c in (w.tasks, w.results)]
            self._workers.append(_Worker(context, prepare, inherited, index))
        for worker in self._workers:
            worker.sender = threading.Thread(target=worker.send_loop, name="mailcrypt-to-worker", daemon=True)
            worker.sender.start()
        self._next = 0
        self._lock = threading.Lock()

    def submit(self, items: list[Item]) -> Iterator[Prepared]:
        """Start on ``items`` now; the iterator yields their results in order (read batches in submit order)."""
        size = self._chunk
        plan: list[tuple[_Worker, int]] = []
        with self._lock:
            for start in range(0, len(items), size):
                worker = self._workers[self._next % len(self._workers)]
                self._next += 1
                sequence = worker.sent
                worker.sent += 1
                worker.outbox.put((sequence, items[start : start + size]))
                plan.append((worker, sequence))
        return self._collect(plan)

    def _collect(self, plan: list[tuple[_Worker, int]]) -> Iterator[Prepared]:
        for worker, sequence in plan:
            try:
                data = worker.results.recv_bytes()
            except (EOFError, OSError):
                worker.process.join(1)
                raise errors.FetchError(
                    f"a decryption worker stopped unexpectedly (exit code {worker.process.exitcode})"
                ) from None
            got, prepared = pickle.loads(data)
            # Results come back in the order each worker was given its chunks.
            if got != sequence or sequence != worker.received:
                raise errors.FetchError("decryption results came back out of order")
            worker.received += 1
            yield from prepared

    def close(self) -> None:
        """Stop the processes: they finish their input and exit; any left after a while are terminated."""
        if any(worker.received < worker.sent for worker in self._workers):
            # Results nobody will read (an error stopped the sync): a worker could be
            # blocked writing them, and its sender writing to it. End them first.
            for worker in self._workers:
                worker.process.terminate()
        for worker in self._workers:
            worker.outbox.put(None)
        for worker in self._workers:
            if worker.sender is not None:
                worker.sender.join()
            worker.tasks.close()
        for worker in self._workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.results.close()

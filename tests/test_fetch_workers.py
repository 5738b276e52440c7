"""The fetcher's worker processes (``mailcrypt/fetch/workers.py``).

Results come back in the order of the messages, batch after batch, whatever
worker prepared them; a worker that dies is an error, not a hang; closing
with results nobody read returns. The real decryption in workers is covered
end to end in ``test_fetch_messages`` (a folder past ``parallel_from``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from mailcrypt import errors
from mailcrypt.fetch.process import Prepared
from mailcrypt.fetch.workers import Workers

T = TypeVar("T")

# Far below the suite's 300 s timeout, far above what these take (well under a second).
_HANG_SECONDS = 30.0


def _returns_within(seconds: float, what: str, call: Callable[[], T]) -> T:
    """``call()``, run in a thread; a clear failure when it has not returned after ``seconds`` (a hang)."""
    returned: list[T] = []
    raised: list[BaseException] = []

    def target() -> None:
        try:
            returned.append(call())
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread below.
            raised.append(exc)

    thread = threading.Thread(target=target, name=f"test: {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{what} has not returned after {seconds:.0f} s: it hangs"
    if raised:
        raise raised[0]
    return returned[0]


def _echo(raw: bytes, *, source: str) -> Prepared:
    return Prepared(data=raw + b"|" + source.encode(), reason="plain")


def test_results_come_back_in_order_batch_after_batch() -> None:
    workers = Workers(2, _echo)
    try:
        first = [(f"m{i}".encode(), f"s{i}") for i in range(61)]
        second = [(f"n{i}".encode(), f"t{i}") for i in range(7)]
        results_first = workers.submit(first)
        results_second = workers.submit(second)  # given out before the first is read
        assert [p.data for p in results_first] == [raw + b"|" + s.encode() for raw, s in first]
        assert [p.data for p in results_second] == [raw + b"|" + s.encode() for raw, s in second]
        assert list(workers.submit([])) == []
    finally:
        workers.close()


def test_a_worker_that_dies_is_an_error_not_a_hang() -> None:
    def prepare(raw: bytes, *, source: str) -> Prepared:
        if raw == b"die":
            os._exit(3)
        return Prepared(data=raw)

    workers = Workers(2, prepare)
    try:
        results = workers.submit([(b"ok", "a")] * 30 + [(b"die", "b")] + [(b"ok", "c")] * 30)
        with pytest.raises(errors.FetchError, match="stopped unexpectedly"):
            _returns_within(_HANG_SECONDS, "reading the results past a dead worker", lambda: list(results))
    finally:
        workers.close()


def test_closing_with_results_nobody_read_returns() -> None:
    workers = Workers(2, _echo)
    # More than a pipe holds in each direction: workers and senders are blocked when it closes.
    workers.submit([(b"x" * 200_000, "big")] * 40)
    _returns_within(_HANG_SECONDS, "Workers.close with results nobody read", workers.close)

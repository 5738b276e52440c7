"""The fetcher's worker processes (``mailcrypt/fetch/workers.py``).

Results come back in the order of the messages, batch after batch, whatever
worker prepared them; a worker that dies is an error, not a hang; closing
with results nobody read returns. The real decryption in workers is covered
end to end in ``test_fetch_messages`` (a folder past ``parallel_from``).
"""

from __future__ import annotations

import os

import pytest

from mailcrypt import errors
from mailcrypt.fetch.process import Prepared
from mailcrypt.fetch.workers import Workers


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
            list(results)
    finally:
        workers.close()


def test_closing_with_results_nobody_read_returns() -> None:
    workers = Workers(2, _echo)
    # More than a pipe holds in each direction: workers and senders are blocked when it closes.
    workers.submit([(b"x" * 200_000, "big")] * 40)
    workers.close()

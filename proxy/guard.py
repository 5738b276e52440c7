"""The guard against password guessing: a growing delay per failure, never a lockout.

Modelled on Dovecot's auth penalty (a delay of 2^n seconds after n failed
logins from one address, capped at 15 s, forgotten after a success) and
Postfix's anvil (counts per client, whatever the connection). Failures are
counted twice: per client address and per login name, each until
``window`` seconds have passed without a failure. Before a password is checked the attempt waits
``delay(client, login)``: ``base_delay`` doubled for each failure counted
against the client or the login (the larger count), capped at
``max_delay``. A success forgets both counts.

Every attempt from one client address waits in line (``turn``): attempts on
parallel connections are checked one after another, each after its delay,
so opening more connections buys no more guesses; nor does sending AUTH as
the first command of a connection, as the delay is taken for every attempt,
not tested once when AUTH starts. At most ``max_waiting`` attempts of one
address wait at a time; more are answered "try again later" at once, which
bounds the memory an attacker can tie up.

Why delays and not lockouts: on loopback every client is 127.0.0.1, and a
stale mail client retrying an old password would otherwise lock the real
user out for the whole window. With a delay the right password always
gets in after at most ``max_delay`` seconds (plus the attempts queued in
front of it), while a guesser gets one try per ``max_delay`` seconds per
address.

What it won't do: check passwords (``auth.UserStore`` does) or speak SMTP
(``handler`` does). The delay is asynchronous: it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import KW_ONLY, dataclass, field

__all__ = ["LoginGuard", "GuardBusy"]

# Clients and names remembered at once: a guesser who makes up names or
# addresses must not grow the table without bound.
_MAX_ENTRIES = 10_000


class GuardBusy(Exception):
    """Too many attempts of one client address are already waiting."""


@dataclass(eq=False)
class LoginGuard:
    """Failed logins per client and per login (see the module docstring).

    ``clock`` is ``time.monotonic`` unless a test gives another.
    """

    _: KW_ONLY
    base_delay: float = 1.0
    max_delay: float = 15.0
    window: float = 900.0
    max_waiting: int = 64
    clock: Callable[[], float] = time.monotonic
    # Keyed "client:<address>" and "login:<name>": (failures, time of the last
    # one), ordered by that time. The count ends ``window`` seconds after the
    # last failure: a slow guesser never gets back to no delay. Kept out of
    # ``repr``, which would otherwise list client addresses and login names.
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict, init=False, repr=False)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict, init=False, repr=False)
    _waiting: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def _count(self, key: str) -> int:
        record = self._failures.get(key)
        if record is None:
            return 0
        if self.clock() - record[1] >= self.window:
            del self._failures[key]
            return 0
        return int(record[0])

    def failures(self, *, client: str | None = None, login: str | None = None) -> int:
        """Failures counted against ``client`` or ``login`` (see ``window``)."""
        return self._count(f"client:{client}" if client is not None else f"login:{login}")

    def delay(self, client: str, login: str) -> float:
        """Seconds an attempt as ``login`` from ``client`` waits before its password is checked."""
        count = max(self._count(f"client:{client}"), self._count(f"login:{login}"))
        if count == 0:
            return 0.0
        # min() first: 2 ** count overflows a float for a very long guessing run.
        return min(self.max_delay, self.base_delay * 2 ** min(count - 1, 64))

    def failed(self, client: str, login: str) -> None:
        """Count a failed attempt against the client and the login."""
        now = self.clock()
        for key in (f"client:{client}", f"login:{login}"):
            count = self._count(key)
            # Re-inserted, so that the table stays ordered by the last failure.
            self._failures.pop(key, None)
            self._failures[key] = (count + 1, now)
        while len(self._failures) > _MAX_ENTRIES:
            # The entry whose last failure is oldest goes first.
            del self._failures[next(iter(self._failures))]

    def succeeded(self, client: str, login: str) -> None:
        """Forget the failures of the client and the login (Dovecot resets its penalty on success too)."""
        self._failures.pop(f"client:{client}", None)
        self._failures.pop(f"login:{login}", None)

    @asynccontextmanager
    async def turn(self, client: str) -> AsyncIterator[None]:
        """Wait in line behind the other attempts of ``client``; raises ``GuardBusy`` when the line is full."""
        waiting = self._waiting.get(client, 0)
        if waiting >= self.max_waiting:
            raise GuardBusy(client)
        self._waiting[client] = waiting + 1
        lock = self._locks.setdefault(client, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            left = self._waiting[client] - 1
            if left:
                self._waiting[client] = left
            else:
                # Nobody else holds or waits for this lock: it can go.
                del self._waiting[client]
                self._locks.pop(client, None)

    async def attempt(self, client: str, login: str) -> None:
        """Inside ``turn``: sleep this attempt's delay."""
        wait = self.delay(client, login)
        if wait > 0:
            await asyncio.sleep(wait)

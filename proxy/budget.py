"""Admission control for the memory client messages take: a byte budget shared by every session.

A message stays in the proxy's memory while it is received, signed and
encrypted (the encrypted copies spill to disk, ``spill``), so N messages at
once would take N times their size with no bound. ``ByteBudget`` bounds
that sum by ``proxy.message_memory``: before the proxy answers 354 to DATA
(``handler.handle_DATA_COMMAND``) a session reserves the size the client
declared with ``MAIL FROM:<...> SIZE=n`` (RFC 1870 §6), else the largest
message it may send (``declared_size``). A reservation waits, first come
first served, until that many bytes are free, so a large message is not
starved by a stream of small ones; a message can never need more than the
whole budget, as the configuration keeps ``max_message_size`` within it.

Waiting is bounded by ``wait`` seconds (60 by default: a client waits only
2 minutes for the reply to DATA, RFC 5321 §4.5.3.2.3, far less than the
5-minute idle timeout of the session). A reservation not granted by then is
refused with ``452 4.3.1 Insufficient system storage`` (RFC 5321 §4.2.2,
RFC 3463 4.3.1): a temporary refusal, the client tries again later and
nothing is lost.

SIZE is the client's estimate (RFC 1870 §4), so a body may outgrow its
reservation: the DATA reader (``session.ProxySMTP``) then tops it up
(``Reservation.cover``), waiting at most ``wait`` seconds too, ahead of
reservations not yet granted (a message half received is finished before a
new one starts, which keeps two growing messages from waiting on the ones
queued behind them). A top-up not granted in time makes the reader discard
the rest of the body and answer 452 4.3.1 at its end; a body over the size
limit still gets 552 5.3.4 there. Reading ahead by one piece of the reader
(1 MiB) before the top-up is the only excess.

A reservation rides on the aiosmtpd session (``hold``, ``held``,
``let_go``) and is given back on every way out of DATA (``ProxySMTP``'s
DATA command ends in ``let_go``, whether by a reply, a refusal, a client
that hangs up or an exception), except when the message goes on being
relayed after its client left: then the relay task keeps it
(``keep_until_done``) until it ends, as it still holds the message.
``release`` is idempotent, so no path can give bytes back twice.

What it won't do: measure memory (it counts the bytes of client messages,
not the working set beside them) or decide anything about a message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from proxy.relay import Refused

__all__ = ["BUSY", "ByteBudget", "Reservation", "declared_size", "hold", "held", "keep_until_done", "let_go"]

log = logging.getLogger(__name__)

#: RFC 3463 4.3.1 "Mail system full", with 452 "Insufficient system storage" (RFC 5321 §4.2.2): try again later.
BUSY = "452 4.3.1 Insufficient system storage, try again later"

_ATTRIBUTE = "mailcrypt_reservation"


class _Waiter:
    """One reservation or top-up waiting for ``size`` bytes."""

    __slots__ = ("future", "size")

    def __init__(self, size: int, future: asyncio.Future[None]) -> None:
        self.size = size
        self.future = future


class ByteBudget:
    """``total`` bytes for the messages in the proxy at once; waits end after ``wait`` seconds (module docstring)."""

    def __init__(self, total: int, *, wait: float = 60.0) -> None:
        if total < 1:
            raise ValueError("a byte budget needs at least one byte")
        self.total = total
        self.wait = wait
        self._free = total
        # Top-ups of messages being received are served before new reservations.
        self._topping: deque[_Waiter] = deque()
        self._waiting: deque[_Waiter] = deque()

    @property
    def free(self) -> int:
        """The bytes not reserved now."""
        return self._free

    @property
    def waiting(self) -> int:
        """How many reservations and top-ups are waiting."""
        return len(self._topping) + len(self._waiting)

    async def reserve(self, size: int) -> Reservation:
        """A reservation of ``size`` bytes (at most ``total``), once they are free; ``Refused`` (452) after ``wait``."""
        if not 0 <= size <= self.total:
            raise ValueError(f"cannot reserve {size} bytes of a budget of {self.total}")
        await self._take(size, self._waiting)
        return Reservation(self, size)

    async def _take(self, size: int, queue: deque[_Waiter]) -> None:
        waiter = _Waiter(size, asyncio.get_running_loop().create_future())
        queue.append(waiter)
        # Granted at once when nothing is ahead of it: a top-up is ahead of every
        # reservation still waiting, so it must not wait for them (they wait for it).
        self._grant()
        if waiter.future.done():
            return
        granted = False
        try:
            async with asyncio.timeout(self.wait):
                await waiter.future
            granted = True
        except TimeoutError:
            log.warning("%d bytes of message memory not free within %.0f s: %s", size, self.wait, BUSY)
            raise Refused(BUSY) from None
        finally:
            if not granted:
                if waiter.future.done() and not waiter.future.cancelled():
                    # Granted just as the wait ended (timeout or cancellation): give it back.
                    self._free += size
                else:
                    waiter.future.cancel()
                    queue.remove(waiter)
                # The waiter gone may have blocked smaller ones behind it.
                self._grant()

    def _release(self, size: int) -> None:
        self._free += size
        assert self._free <= self.total, "more bytes given back than reserved"
        self._grant()

    def _grant(self) -> None:
        # Strictly in order: the head of the queue is granted first, so it is never overtaken.
        for queue in (self._topping, self._waiting):
            while queue and queue[0].size <= self._free:
                waiter = queue.popleft()
                self._free -= waiter.size
                waiter.future.set_result(None)
            if queue:
                return


class Reservation:
    """``size`` bytes of a ``ByteBudget``, held until ``release``."""

    def __init__(self, budget: ByteBudget, size: int) -> None:
        self.budget = budget
        self.size = size
        self._released = False

    async def cover(self, size: int) -> bool:
        """Grow to at least ``size`` bytes (at most the budget's total); False when not granted within ``wait``."""
        if self._released:
            raise RuntimeError("a released reservation cannot grow")
        more = size - self.size
        if more <= 0:
            return True
        if size > self.budget.total:
            return False
        try:
            await self.budget._take(more, self.budget._topping)
        except Refused:
            return False
        if self._released:
            # Released while it waited (the session ended): the new bytes go back at once.
            self.budget._release(more)
            return False
        self.size = size
        return True

    def release(self) -> None:
        """Give the bytes back; only the first call does anything."""
        if not self._released:
            self._released = True
            self.budget._release(self.size)


def declared_size(mail_options: list[str], limit: int) -> int:
    """The size to reserve: ``SIZE=n`` of MAIL (RFC 1870 §6) when given, else ``limit``; never over ``limit``."""
    for option in mail_options:
        keyword, _, value = option.partition("=")
        if keyword.upper() == "SIZE" and value.isdigit():
            return min(int(value), limit)
    return limit


def hold(session: Any, reservation: Reservation) -> None:
    """Put ``reservation`` on the aiosmtpd session (one a session; any earlier one is released)."""
    let_go(session)
    setattr(session, _ATTRIBUTE, reservation)


def held(session: Any) -> Reservation | None:
    """The reservation on the session, if any."""
    reservation = getattr(session, _ATTRIBUTE, None)
    return reservation if isinstance(reservation, Reservation) else None


def let_go(session: Any) -> None:
    """Release the session's reservation, if any (every way out of DATA ends here)."""
    reservation = held(session)
    setattr(session, _ATTRIBUTE, None)
    if reservation is not None:
        reservation.release()


def keep_until_done(session: Any, task: asyncio.Future[Any]) -> None:
    """Move the session's reservation to ``task``: released when it ends, not when the session does."""
    reservation = held(session)
    setattr(session, _ATTRIBUTE, None)
    if reservation is not None:
        task.add_done_callback(lambda _: reservation.release())

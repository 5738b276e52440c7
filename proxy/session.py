"""One client connection: aiosmtpd's SMTP with the proxy's own DATA reader and checks.

``ProxySMTP`` is aiosmtpd's SMTP with a DATA reader of its own: the stock
one keeps every line as a separate object (about three times the message
in memory, and slow on a 25 MB message); this one reads large pieces into
one buffer, finds the end with one search and undoes dot-stuffing only when
a line starts with a dot. It refuses every command whose argument holds a
CR or NUL before aiosmtpd parses it (``wire.check_command``: such an
address would end the proxy's own command line early upstream). It remembers the addresses it parsed (aiosmtpd
parses each MAIL and RCPT argument with the e-mail header parser, 50 µs a
time, and a client names the same few addresses over and over). It
refuses ``MAIL FROM:<...> SIZE=n`` with 552 5.3.4 when n is over the size
that fits upstream once encrypted (the handler's ``message_limit``, which
the DATA reader enforces too). It also tells the handler when a client goes away.
The DATA reader tops up the message's memory reservation when a body
outgrows its ``SIZE=`` (452 4.3.1 at the end when it cannot), and every way
out of DATA gives the reservation back (``budget``).

What it won't do: decide anything about a message (``handler`` does) or
build the proxy (``server`` does).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, syntax

from proxy.budget import BUSY, held, let_go
from proxy.relay import Refused
from proxy.wire import check_command

__all__ = ["ProxySMTP"]

log = logging.getLogger(__name__)

_PIECE = 1 << 20
_END = b"\r\n.\r\n"
# Parsed MAIL/RCPT arguments: bounded, as clients choose what they send.
_ADDRESSES_KEPT = 1024
_addresses: dict[tuple[str, int], tuple[str | None, str | None]] = {}


class ProxySMTP(SMTP):
    """aiosmtpd's SMTP: a one-buffer DATA reader, checked commands, remembered addresses (see the module docstring)."""

    def __init__(self, *args: Any, sessions: set[ProxySMTP] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The server's open sessions, for a stop that lets transactions finish.
        self._sessions = sessions if sessions is not None else set()
        # aiosmtpd dispatches every command through this table: checking here
        # covers every command, the ones added by later aiosmtpd versions too.
        self._smtp_methods = {verb: self._checked(verb, method) for verb, method in self._smtp_methods.items()}

    def _checked(
        self, verb: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        # functools.wraps keeps the syntax attributes that HELP reads from the method.
        @functools.wraps(method)
        async def checked(arg: str | None) -> None:
            try:
                check_command(verb, arg)
            except Refused as exc:
                await self.push(exc.reply)
                return
            await method(arg)

        return checked

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # The parse depends on the argument and on the local-part limit only,
        # and its result (address, rest) is immutable: remembering it is exact.
        key = (arg, self.local_part_limit)
        found = _addresses.get(key)
        if found is None:
            found = super()._getaddr(arg)
            if len(_addresses) >= _ADDRESSES_KEPT:
                _addresses.clear()
            _addresses[key] = found
        return found

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        limit = getattr(self.event_handler, "message_limit", None)
        if limit is not None and self.session is not None and self.session.extended_smtp:
            # The upstream server's SIZE may have changed since EHLO (a new pooled connection).
            self.data_size_limit = limit() or self.data_size_limit
        size = _size_parameter(arg)
        if size is not None and self.data_size_limit and size > self.data_size_limit:
            # RFC 1870 §6.1: refuse before the body, with the code for a message too big (RFC 3463 5.3.4).
            await self.push(f"552 5.3.4 Message too big: the limit is {self.data_size_limit} bytes")
            return
        await super().smtp_MAIL(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        session = self.session
        try:
            await self._data(arg)
        finally:
            # Every way out of DATA (a reply, a refusal, a client that hangs up, an
            # exception) gives back the message memory reserved for it (``budget``).
            let_go(session)

    async def _data(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        before = getattr(self.event_handler, "handle_DATA_COMMAND", None)
        if before is not None:
            refusal = await before(self, self.session, self.envelope)
            if refusal is not None:
                # The transaction ends here: a client that tries again starts with MAIL.
                self._set_post_data_state()
                await self.push(refusal)
                return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # A CRLF in front makes the first line look like every other line, for
        # the end marker and for dot-stuffing (RFC 5321 §4.5.2).
        data = bytearray(b"\r\n")
        limit = self.data_size_limit
        too_big = False
        reservation = held(self.session)
        no_memory = False
        while True:
            # Every read empties the reader's buffer (it holds far less than a
            # piece), so anything after the end marker can be handed back in order.
            chunk = await self._reader.read(_PIECE)
            if not chunk:
                return  # The client closed the connection; eof_received ends the session.
            if reservation is not None and not no_memory and not too_big:
                # SIZE= was an estimate (RFC 1870 §4): a body that outgrows it waits for more memory.
                # The size as RFC 1870 §5 counts it, without the leading CRLF and the final ".", CRLF.
                no_memory = not await reservation.cover(len(data) + len(chunk) - 2 - 3)
            start = max(0, len(data) - len(_END) + 1)
            data += chunk
            end = data.find(_END, start)
            if end >= 0:
                if end + len(_END) < len(data):
                    self._reader.feed_data(bytes(data[end + len(_END) :]))
                del data[end + 2 :]
                break
            if limit and len(data) - 2 > limit:
                too_big = True
            if too_big or no_memory:
                # The rest is read to its end and dropped: the reply comes after it.
                del data[2 : len(data) - len(_END)]
            self._reset_timeout()
        if too_big or (limit and len(data) - 2 > limit):
            self._set_post_data_state()
            await self.push(f"552 5.3.4 Message too big: the limit is {limit} bytes")
            return
        if no_memory:
            self._set_post_data_state()
            await self.push(BUSY)
            return
        if data.find(b"\r\n.") >= 0:
            data = data.replace(b"\r\n.", b"\r\n")
        del data[:2]
        # aiosmtpd declares bytes here; the bytearray is handed on as it is rather than copied.
        self.envelope.content = data  # type: ignore[assignment]
        self.envelope.original_content = data  # type: ignore[assignment]
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            self._set_post_data_state()
        await self.push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._sessions.add(self)

    @property
    def in_transaction(self) -> bool:
        """Between MAIL and the reply to the end of the data (or RSET)."""
        return self.envelope is not None and self.envelope.mail_from is not None

    async def shut(self, reply: str) -> None:
        """Tell the client ``reply`` (a 421) and close the connection (RFC 5321 §3.8)."""
        if self.transport is not None and not self.transport.is_closing():
            await self.push(reply)
            self.transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        session = self.session
        super().connection_lost(error)
        closed = getattr(self.event_handler, "session_closed", None)
        if closed is not None and session is not None and getattr(session, "mailcrypt_probe", None) is not None:
            task = self.loop.create_task(closed(session))
            _background.add(task)
            task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()


def _size_parameter(arg: str | None) -> int | None:
    """The number of a ``SIZE=`` parameter of MAIL (RFC 1870 §3), None when there is none or it is no number."""
    for word in (arg or "").split()[1:]:
        keyword, _, value = word.partition("=")
        if keyword.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None

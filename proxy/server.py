"""Putting the proxy together and running it: listener, TLS, the pieces, a clean stop.

``ProxyServer`` builds everything from the settings: the key directory and
policy (``groups``), the sender's identities for signing, the relay (the
upstream server, or the outbox Maildir when none is configured), the retry
spool and its runner, the user store and login guard, and the listening
socket — STARTTLS with the home's certificate, or TLS from the first byte
(``proxy.tls = "implicit"``). AUTH is allowed without TLS only when the
proxy listens on loopback; elsewhere STARTTLS comes first. ``serve``
runs until SIGTERM or SIGINT and then stops cleanly: no new connections,
running transactions finish, pooled connections are closed.

``ProxySMTP`` is aiosmtpd's SMTP with a DATA reader of its own: the stock
one keeps every line as a separate object (about three times the message
in memory, and slow on a 25 MB message); this one reads large pieces into
one buffer, finds the end with one search and undoes dot-stuffing only when
a line starts with a dot. It refuses every command whose argument holds a
CR or NUL before aiosmtpd parses it (``wire.check_command``: such an
address would end the proxy's own command line early upstream). It remembers the addresses it parsed (aiosmtpd
parses each MAIL and RCPT argument with the e-mail header parser, 50 µs a
time, and a client names the same few addresses over and over). It also
tells the handler when a client goes away.

What it won't do: parse the configuration (``mailcrypt.config`` does) or
decide anything about a message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import ssl
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, syntax

from mailcrypt import errors
from mailcrypt.config import Settings, is_loopback
from mailcrypt.keydir import KeyDirectory, PassphraseSource
from proxy.announced import Announced
from proxy.auth import LoginGuard, UserStore
from proxy.client import ServerConfig
from proxy.groups import RecipientBook
from proxy.handler import ProxyHandler
from proxy.late import LateGroups
from proxy.outbox import Outbox
from proxy.relay import Credentials, OutboxRelay, Pool, Refused, UpstreamRelay
from proxy.senders import Senders
from proxy.spool import INTERVALS, Spool, SpoolRunner
from proxy.wire import check_command

__all__ = ["ProxySMTP", "ProxyServer", "ProxyThread"]

log = logging.getLogger(__name__)

_PIECE = 1 << 20
_END = b"\r\n.\r\n"
# Parsed MAIL/RCPT arguments: bounded, as clients choose what they send.
_ADDRESSES_KEPT = 1024
_addresses: dict[tuple[str, int], tuple[str | None, str | None]] = {}


class ProxySMTP(SMTP):
    """aiosmtpd's SMTP: a one-buffer DATA reader, checked commands, remembered addresses (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
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
        while True:
            # Every read empties the reader's buffer (it holds far less than a
            # piece), so anything after the end marker can be handed back in order.
            chunk = await self._reader.read(_PIECE)
            if not chunk:
                return  # The client closed the connection; eof_received ends the session.
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
                del data[2 : len(data) - len(_END)]
            self._reset_timeout()
        if too_big or (limit and len(data) - 2 > limit):
            self._set_post_data_state()
            await self.push(f"552 5.3.4 Message too big: the limit is {limit} bytes")
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

    def connection_lost(self, error: Exception | None) -> None:
        session = self.session
        super().connection_lost(error)
        closed = getattr(self.event_handler, "session_closed", None)
        if closed is not None and session is not None and getattr(session, "mailcrypt_probe", None) is not None:
            task = self.loop.create_task(closed(session))
            _background.add(task)
            task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The listening side's TLS: the home's certificate, TLS 1.2 or newer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise errors.ConfigError(
            f"proxy TLS certificate {cert} / key {key}: {exc}; `mailcrypt init` makes them, "
            "or set proxy.tls_cert and proxy.tls_key"
        ) from None
    return context


def upstream_tls_context(settings: Settings) -> ssl.SSLContext:
    upstream = settings.upstream
    assert upstream is not None
    if not upstream.tls_verify:
        log.warning("upstream.tls_verify = false: the certificate of %s is NOT checked", upstream.host)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(upstream.ca_file) if upstream.ca_file else None)


def _return_large_buffers() -> None:
    """Have glibc give large buffers back to the system when they are freed.

    glibc raises its mmap threshold after a large block is freed, so the next
    25 MB message would come from the heap and stay resident afterwards;
    a fixed threshold of 1 MiB keeps every message buffer in its own mapping.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class ProxyServer:
    """The whole proxy for one home; ``start`` and ``stop`` run inside an event loop.

    ``listen`` overrides ``proxy.listen``; ``intervals`` and ``poll`` set the
    spool's retry timing and ``guard`` the login guard (tests shorten them).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        listen: tuple[str, int] | None = None,
        passphrase: PassphraseSource | None = None,
        intervals: tuple[float, ...] = INTERVALS,
        poll: float = 30.0,
        guard: LoginGuard | None = None,
    ) -> None:
        self.settings = settings
        proxy = settings.proxy
        self.host, self.port = listen or (proxy.listen_host, proxy.listen_port)
        if proxy.auth == "none" and not is_loopback(self.host):
            raise errors.ConfigError(f'proxy.auth = "none" is allowed only on a loopback address, not {self.host}')
        self.loopback = is_loopback(self.host)
        keys = KeyDirectory.from_settings(settings)
        self.senders = Senders.load(keys, settings, passphrase or PassphraseSource.from_settings(settings))
        self.announced = Announced(settings.state_db)
        self.book = RecipientBook(keys, settings.policy, advertised=self.announced)
        self.tls = server_tls_context(proxy.tls_cert, proxy.tls_key)
        self.guard = guard or LoginGuard(max_failures=proxy.max_auth_failures)
        upstream = settings.upstream
        self.runner: SpoolRunner | None = None
        self.late: LateGroups | None = None
        client_login = upstream is not None and upstream.login == "client"
        self.users = None if client_login else UserStore(proxy.users_file or settings.home / "proxy" / "users")
        if upstream is None:
            self.relay: UpstreamRelay | OutboxRelay = OutboxRelay(Outbox(settings.outbox))
            self.pool = None
        else:
            tls = upstream_tls_context(settings) if upstream.security != "none" else None
            config = ServerConfig(upstream.host, upstream.port, upstream.security, tls, float(upstream.timeout))
            creds = None
            if upstream.username is not None and upstream.password is not None:
                creds = Credentials(upstream.username, upstream.password.read())
            self.pool = Pool(config, credentials=creds)
            self.relay = UpstreamRelay(self.pool, check_recipients=upstream.check_recipients)
            spool = Spool(settings.spool, intervals=intervals)
            self.late = LateGroups(
                self.relay, spool, sender_certificate=self.senders.certificate, client_login=client_login
            )
            self.runner = SpoolRunner(
                spool, self.late.send, self.late.bounce, retry_hours=upstream.retry_hours, poll=poll
            )
            self.late.on_spooled = self.runner.wake
        self.handler = ProxyHandler(
            book=self.book,
            senders=self.senders.for_message,
            relay=self.relay,
            late=self.late,
            users=self.users,
            guard=self.guard,
            auth_required=proxy.auth == "required",
        )
        self._server: asyncio.Server | None = None
        self._runner_task: asyncio.Task[None] | None = None

    def _factory(self) -> ProxySMTP:
        implicit = self.settings.proxy.tls == "implicit"
        return ProxySMTP(
            self.handler,
            data_size_limit=self.settings.proxy.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname="mailcrypt-proxy",
            ident="mailcrypt proxy",
            tls_context=None if implicit else self.tls,
            # Off loopback nothing but EHLO and STARTTLS before TLS (RFC 3207 §4).
            require_starttls=not implicit and not self.loopback,
            # AUTH in the clear only on loopback; the handler's MAIL hook enforces the login.
            auth_require_tls=not implicit and not self.loopback,
            auth_required=False,
            timeout=300,
        )

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        ssl_context = self.tls if self.settings.proxy.tls == "implicit" else None
        try:
            self._server = await loop.create_server(self._factory, self.host, self.port, ssl=ssl_context)
        except OSError as exc:
            raise errors.ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        sockname = self._server.sockets[0].getsockname()
        self.port = sockname[1]
        if self.runner is not None:
            self._runner_task = loop.create_task(self.runner.run())
        log.info("listening on %s:%d", self.host, self.port)
        return self.host, self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._runner_task is not None:
            self._runner_task.cancel()
            await asyncio.gather(self._runner_task, return_exceptions=True)
        if self.late is not None:
            await self.late.wait()
        if self.pool is not None:
            await self.pool.close()
        self.announced.close()

    async def serve(self, *, ready: Any = None) -> None:
        """Run until SIGTERM or SIGINT; ``ready(host, port)`` is called once listening."""
        _return_large_buffers()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        host, port = await self.start()
        if ready is not None:
            ready(host, port)
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await self.stop()


class ProxyThread:
    """A ``ProxyServer`` on an event loop in a thread of its own (tests, benchmarks)."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mailcrypt-proxy", daemon=True)

    def start(self) -> tuple[str, int]:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
            asyncio.run_coroutine_threadsafe(self.loop.shutdown_default_executor(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()

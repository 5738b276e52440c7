"""Putting the proxy together and running it: listener, TLS, the pieces, a clean stop.

``ProxyServer`` builds everything from the settings: the key directory and
policy (``groups``), the sender's identities for signing, the relay (the
upstream server, or the outbox Maildir when none is configured), the retry
spool and its runner, the user store and login guard, and the listening
socket — STARTTLS with the home's certificate, or TLS from the first byte
(``proxy.tls = "implicit"``). AUTH is allowed without TLS only when the
proxy listens on loopback; elsewhere STARTTLS comes first. ``serve``
runs until SIGTERM or SIGINT and then stops cleanly (``stop``): no new
connections; clients between transactions hear 421 and are closed; running
transactions get ``proxy.shutdown_grace`` seconds to finish (so a client
never loses the 250 of a message the server stored and sends it again),
then 421; messages being relayed are relayed to the end; pooled
connections are closed; only then does it return. SIGHUP, and
any change to the identities folder (looked for at every MAIL), reload the
identities without a restart (``refresh``).

``ProxySMTP`` (``session``) is the protocol object of one client connection.

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
from pathlib import Path
from typing import Any

from mailcrypt import errors
from mailcrypt.config import Settings, is_loopback
from mailcrypt.keydir import KeyDirectory, PassphraseSource
from proxy.announced import Announced
from proxy.auth import UserStore
from proxy.budget import ByteBudget
from proxy.groups import RecipientBook
from proxy.guard import LoginGuard
from proxy.handler import ProxyHandler
from proxy.late import LateGroups
from proxy.outbox import Outbox, OutboxRelay
from proxy.relay import Credentials, Pool, UpstreamRelay
from proxy.senders import Senders
from proxy.session import ProxySMTP
from proxy.sizes import MessageLimit
from proxy.smtp import ServerConfig
from proxy.spool import INTERVALS, Spool, SpoolRunner

__all__ = ["ProxyServer", "ProxyThread"]

log = logging.getLogger(__name__)

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
    spool's retry timing, ``guard`` the login guard and ``memory_wait`` how
    long a message waits for memory before 452 4.3.1 (``budget``; tests shorten them).
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
        memory_wait: float = 60.0,
    ) -> None:
        self.settings = settings
        proxy = settings.proxy
        self.host, self.port = listen or (proxy.listen_host, proxy.listen_port)
        if proxy.auth == "none" and not is_loopback(self.host):
            raise errors.ConfigError(f'proxy.auth = "none" is allowed only on a loopback address, not {self.host}')
        self.loopback = is_loopback(self.host)
        keys = KeyDirectory.from_settings(settings)
        self.senders = Senders.load(keys, settings, passphrase or PassphraseSource.from_settings(settings))
        # Reloads run while the proxy serves: they never prompt on the terminal
        # (identities unlocked at start stay unlocked, so a passphrase typed
        # then is not needed again).
        self._given_passphrase = passphrase
        self._reload_passphrase = passphrase or PassphraseSource.from_settings(settings, interactive=False)
        self._reloading = asyncio.Lock()
        self.announced = Announced(settings.state_db)
        self.book = RecipientBook(keys, settings.policy, advertised=self.announced)
        self.tls = server_tls_context(proxy.tls_cert, proxy.tls_key)
        self.guard = guard or LoginGuard()
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
            config = ServerConfig(
                upstream.host,
                upstream.port,
                upstream.security,
                tls,
                float(upstream.timeout),
                data_timeout=float(upstream.data_timeout),
            )
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
            login_required=proxy.auth == "required",
            max_failures=proxy.max_auth_failures,
            refresh=self.refresh,
            limit=MessageLimit(proxy.max_message_size, recipients=proxy.max_recipients, pool=self.pool),
            max_recipients=proxy.max_recipients,
            budget=ByteBudget(proxy.message_memory, wait=memory_wait),
        )
        self._server: asyncio.Server | None = None
        self._sessions: set[ProxySMTP] = set()
        self._runner_task: asyncio.Task[None] | None = None

    async def refresh(self, *, force: bool = False) -> None:
        """Pick up changes to the identities: when their folder changed, or always with ``force`` (SIGHUP).

        The check is one ``stat``; the reload (unlocking keys) runs in a
        worker thread, one at a time. ``force`` also retries identities that
        could not be unlocked before. The user file needs nothing here:
        ``UserStore`` notices its changes itself, and recipient certificates
        are looked up afresh when their folders change (``RecipientBook``).
        """
        if not force and not self.senders.changed():
            return
        async with self._reloading:
            if not force and not self.senders.changed():
                return  # Another transaction reloaded while this one waited.
            if force and self._given_passphrase is None:
                # A source keeps the passphrase it read: after SIGHUP read it
                # again, as the administrator may have corrected the file.
                self._reload_passphrase = PassphraseSource.from_settings(self.settings, interactive=False)
            loop = asyncio.get_running_loop()
            reload = functools.partial(self.senders.reload, self._reload_passphrase, retry=force)
            await loop.run_in_executor(None, reload)
            signers, failed = len(self.senders.signers), len(self.senders.failed)
            log.info("identities reloaded: %d can sign, %d cannot be unlocked", signers, failed)

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
            sessions=self._sessions,
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

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop accepting, let transactions finish (up to ``grace`` s, else ``proxy.shutdown_grace``), close.

        Every session not in a transaction hears 421 and is closed at once
        (and every one that finishes its transaction during the grace
        period); those still in one when it ends hear 421 too. Messages
        being relayed then are relayed to the end (the relay's own
        timeouts bound that), so none is left half-sent.
        """
        if self._server is not None:
            self._server.close()  # No new connections; wait_closed follows once the sessions are.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.settings.proxy.shutdown_grace if grace is None else grace)
        bye = "421 4.3.2 mailcrypt proxy shutting down; try again later"
        while True:
            busy = [s for s in self._sessions if s.in_transaction]
            for session in [s for s in self._sessions if not s.in_transaction]:
                await session.shut(bye)
            if not busy or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for session in list(self._sessions):
            log.warning("a client is still in a transaction after the grace period: 421")
            await session.shut(bye)
        if self.handler.relaying:
            await asyncio.gather(*self.handler.relaying, return_exceptions=True)
        if self._server is not None:
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
        """Run until SIGTERM or SIGINT (SIGHUP reloads identities); ``ready(host, port)`` is called when listening."""
        _return_large_buffers()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task[None]] = set()

        def hangup() -> None:
            log.info("SIGHUP: reloading the identities")
            task = loop.create_task(self.refresh(force=True))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hangup)
        host, port = await self.start()
        if ready is not None:
            ready(host, port)
        try:
            await stop.wait()
        finally:
            log.info("stopping: no new connections; transactions in flight may finish")
            await self.stop()
            log.info("stopped")


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
            grace = self.server.settings.proxy.shutdown_grace
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(grace + 30)
            asyncio.run_coroutine_threadsafe(self.loop.shutdown_default_executor(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()

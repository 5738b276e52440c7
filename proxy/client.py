"""An SMTP client on asyncio streams, for relaying to the upstream server.

``Connection.open`` connects (TLS from the first byte, or STARTTLS, which
is then required: a server that does not offer it is not used in the
clear), says EHLO and logs in with AUTH PLAIN or LOGIN (RFC 4954). The
commands return the server's ``Reply`` whatever its code; I/O failures —
refused connection, timeout, connection lost, a 421 — raise
``UpstreamUnavailable``, and the connection is then closed and unusable.
A connection counts the replies it still owes (pipelined commands sent,
not yet answered); an exchange interrupted on the way (the caller was
cancelled: its mail client went away) closes the connection, since its next
reply would answer a command nobody asked, and ``in_step`` tells the pool
whether a connection may be kept. The reply to the end of a message is
awaited for ``ServerConfig.data_timeout`` (RFC 5321 §4.5.3.2.6), every
other step for ``ServerConfig.timeout``.
MAIL and RCPT (the null sender as ``<>``) are pipelined when the server
offers PIPELINING (RFC 2920); a ``Transaction`` sends them in the
background while recipients are still being named.
``data`` streams the message in pieces, dot-stuffed (RFC 5321 §4.5.2),
waiting for the socket to drain between pieces, so a large message is never
copied whole into the transport's buffer; a ``spill.Spilled`` message is read
from its file a piece at a time. ``start_data`` sends DATA ahead, so that the
server's 354 comes back while the message is still being made.

It replaces ``smtplib`` because that blocks: the proxy must not stall
every other client while one message goes out. What it won't do: decide
what a refusal means for the mail client (``relay`` does), or retry.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from proxy.smtp import LoginRefused, Reply, ServerConfig, UpstreamUnavailable, mail_command, rcpt_command, stuff
from proxy.spill import Spilled

__all__ = ["Connection", "Transaction"]

_PIECE = 1 << 18


class Connection:
    """One open SMTP session with a server; make it with ``Connection.open``."""

    def __init__(self, config: ServerConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.config = config
        self._reader = reader
        self._writer = writer
        self.extensions: dict[str, str] = {}
        self.broken = False
        self.login: str | None = None
        self.opened = time.monotonic()
        self._data_sent = False
        # Replies owed for commands sent: a reply read while one is owed for
        # an earlier command would be taken as the answer to the wrong one.
        self.pending = 0

    @property
    def in_step(self) -> bool:
        """Open and between commands: nothing sent is unanswered, so it can be reused."""
        return not self.broken and self.pending == 0 and not self._data_sent

    # ------------------------------------------------------------------ setup

    @classmethod
    async def open(
        cls, config: ServerConfig, *, username: str | None = None, password: bytes | None = None
    ) -> Connection:
        """Connect, greet, secure and log in. Raises ``UpstreamUnavailable`` or ``LoginRefused``."""
        tls = config.tls_context if config.security == "tls" else None
        try:
            async with asyncio.timeout(config.timeout):
                reader, writer = await asyncio.open_connection(
                    config.host, config.port, ssl=tls, server_hostname=config.host if tls else None
                )
        except TimeoutError:
            raise UpstreamUnavailable(
                f"no connection to {config.host}:{config.port} (timeout)", stage="connect"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamUnavailable(f"no connection to {config.host}:{config.port}: {exc}", stage="connect") from None
        conn = cls(config, reader, writer)
        try:
            await conn._setup(username, password)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _setup(self, username: str | None, password: bytes | None) -> None:
        greeting = await self._reply("greeting")
        if not greeting.ok:
            raise UpstreamUnavailable(f"the server greeted with {greeting}", stage="greeting", reply=greeting)
        await self._hello()
        if self.config.security == "starttls":
            if "starttls" not in self.extensions:
                # Never fall back to the clear: the configuration asked for TLS.
                raise UpstreamUnavailable("the server does not offer STARTTLS", stage="tls")
            reply = await self.command(b"STARTTLS", "tls")
            if reply.code != 220:
                raise UpstreamUnavailable(f"STARTTLS refused: {reply}", stage="tls", reply=reply)
            context = self.config.tls_context
            assert context is not None, "a ServerConfig for starttls comes with its tls_context"
            try:
                async with asyncio.timeout(self.config.timeout):
                    await self._writer.start_tls(context, server_hostname=self.config.host)
            except (TimeoutError, OSError, ssl.SSLError) as exc:
                raise UpstreamUnavailable(f"TLS with the server failed: {exc or 'timeout'}", stage="tls") from None
            await self._hello()
        if username is not None:
            await self._login(username, password or b"")

    async def _hello(self) -> None:
        reply = await self.command(b"EHLO " + self.config.local_hostname.encode("ascii"), "greeting")
        if not reply.ok:
            raise UpstreamUnavailable(f"EHLO refused: {reply}", stage="greeting", reply=reply)
        self.extensions = {}
        for line in reply.text.split("\n")[1:]:
            keyword, _, params = line.partition(" ")
            self.extensions[keyword.lower()] = params

    async def _login(self, username: str, password: bytes) -> None:
        mechanisms = self.extensions.get("auth", "").upper().split()
        user = username.encode("utf-8")
        if "PLAIN" in mechanisms or "LOGIN" not in mechanisms:
            token = base64.b64encode(b"\0" + user + b"\0" + password)
            reply = await self.command(b"AUTH PLAIN " + token, "auth")
        else:
            reply = await self.command(b"AUTH LOGIN " + base64.b64encode(user), "auth")
            if reply.code == 334:
                reply = await self.command(base64.b64encode(password), "auth")
        if reply.code == 235:
            self.login = username
            return
        if reply.temporary:
            raise UpstreamUnavailable(f"login to the server failed: {reply}", stage="auth", reply=reply)
        raise LoginRefused(reply)

    # ------------------------------------------------------------------ talking

    @contextmanager
    def _exchange(self, stage: str, *, timed_out: str) -> Iterator[None]:
        """Around one read or write of the server's: any failure closes the connection.

        A timeout is ``UpstreamUnavailable`` saying ``timed_out``, a lost
        connection one saying so; anything else (an ``UpstreamUnavailable``
        of the reader's own, a cancellation) passes on as it is, since
        with replies unread or a write half done the server's view is
        unknown and the connection can never be used again.
        """
        try:
            yield
        except TimeoutError:
            self.close()
            raise UpstreamUnavailable(f"{timed_out} ({stage})", stage=stage) from None
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise UpstreamUnavailable(f"connection to the server lost ({stage}): {exc}", stage=stage) from None
        except BaseException:
            self.close()
            raise

    async def _reply(self, stage: str, *, timeout: float | None = None) -> Reply:
        return (await self._replies(1, stage, timeout=timeout))[0]

    async def _replies(self, count: int, stage: str, *, timeout: float | None = None) -> list[Reply]:
        """The server's next ``count`` replies (pipelined commands), under one timeout."""
        replies = []
        limit = self.config.timeout if timeout is None else timeout
        with self._exchange(stage, timed_out=f"the server did not answer in {limit:g} s"):
            async with asyncio.timeout(limit):
                for _ in range(count):
                    replies.append(await self._read_reply(stage))
                    self.pending = max(0, self.pending - 1)
        return replies

    async def _read_reply(self, stage: str) -> Reply:
        lines = []
        while True:
            line = await self._reader.readline()
            if not line.endswith(b"\n"):
                raise UpstreamUnavailable(f"the server closed the connection ({stage})", stage=stage)
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if len(text) < 3 or not text[:3].isdigit():
                raise UpstreamUnavailable(f"not an SMTP reply: {text[:40]!r}", stage=stage)
            lines.append(text[4:])
            if text[3:4] != "-":
                break
        reply = Reply(int(text[:3]), "\n".join(lines))
        if reply.code == 421:
            # RFC 5321 §3.8: the server is closing the connection.
            raise UpstreamUnavailable(f"the server is shutting down: {reply}", stage=stage, reply=reply)
        return reply

    async def _send(self, data: bytes | bytearray | memoryview, stage: str, *, commands: int = 0) -> None:
        """Write ``data``, holding ``commands`` commands, each of which owes a reply."""
        if self.broken or self._writer.transport.is_closing():
            self.close()
            raise UpstreamUnavailable("the connection to the server is closed", stage=stage)
        self.pending += commands
        with self._exchange(stage, timed_out="the server stopped reading"):
            self._writer.write(data)
            if not self._writer.transport.get_write_buffer_size():
                return  # All of it went to the kernel at once: nothing to wait for.
            async with asyncio.timeout(self.config.timeout):
                await self._writer.drain()

    async def command(self, line: bytes, stage: str) -> Reply:
        await self._send(line + b"\r\n", stage, commands=1)
        return await self._reply(stage)

    async def envelope(
        self, sender: str, recipients: Sequence[str], *, options: Sequence[str] = ()
    ) -> tuple[Reply, list[Reply]]:
        """MAIL FROM and one RCPT TO per recipient, pipelined when the server allows it."""
        mail = mail_command(sender, options)
        rcpts = [rcpt_command(r) for r in recipients]
        if "pipelining" in self.extensions:
            await self._send(b"".join(line + b"\r\n" for line in (mail, *rcpts)), "mail", commands=1 + len(rcpts))
            mail_reply, *rcpt_replies = await self._replies(1 + len(rcpts), "mail")
            return mail_reply, rcpt_replies
        mail_reply = await self.command(mail, "mail")
        if not mail_reply.ok:
            return mail_reply, []
        return mail_reply, [await self.command(line, "rcpt") for line in rcpts]

    async def rcpt(self, recipient: str) -> Reply:
        return await self.command(rcpt_command(recipient), "rcpt")

    def transaction(self, sender: str, *, options: Sequence[str] = ()) -> Transaction:
        """Start MAIL FROM now, in the background; add recipients as they come (see ``Transaction``)."""
        return Transaction(self, mail_command(sender, options))

    async def start_data(self) -> None:
        """Send DATA now; the next ``data`` reads its answer. Raises ``UpstreamUnavailable``.

        The server's 354 then travels while the caller makes the message. Once
        DATA is out, the only way back is to close the connection, which ends
        the transaction without a delivery (RFC 5321 §3.3): a caller that
        cannot send the message must release the connection as unclean.
        """
        await self._send(b"DATA\r\n", "data", commands=1)
        self._data_sent = True

    async def data(self, message: bytes | bytearray | memoryview | Spilled) -> Reply:
        """DATA (unless ``start_data`` sent it), the message, and the final dot; the server's answer."""
        if not self._data_sent:
            await self._send(b"DATA\r\n", "data", commands=1)
        reply = await self._reply("data")
        self._data_sent = False
        if reply.code != 354:
            return reply
        # From here until the final reply is read the connection is in the
        # middle of a message: if anything stops it, it is closed, never reused.
        self._data_sent = True
        if isinstance(message, Spilled):
            await self._send_pieces(message)
        else:
            body = memoryview(stuff(message))
            ending = b".\r\n" if body[-2:] == b"\r\n" or not body else b"\r\n.\r\n"
            if len(body) <= _PIECE:
                # One write for a small message: every write to a loopback peer costs a system call and a wakeup.
                await self._send(b"".join((body, ending)), "data", commands=1)
            else:
                for start in range(0, len(body), _PIECE):
                    await self._send(body[start : start + _PIECE], "data")
                await self._send(ending, "data", commands=1)
        # RFC 5321 §4.5.3.2.6: the reply to the end of the data may take 10
        # minutes; giving up earlier would make the client send again a
        # message the server may have stored.
        final = await self._reply("data", timeout=self.config.data_timeout)
        self._data_sent = False
        return final

    async def _send_pieces(self, message: Spilled) -> None:
        """The message from its file, dot-stuffed (RFC 5321 §4.5.2) across piece boundaries, and the final dot."""
        line_start, tail = True, b""
        for piece in message.pieces():
            if not piece:
                continue
            if b"\n." in piece:
                piece = piece.replace(b"\n.", b"\n..")
            if line_start and piece[:1] == b".":
                piece = b"." + piece
            line_start = piece[-1:] == b"\n"
            tail = (tail + piece[-2:])[-2:]
            await self._send(piece, "data")
        await self._send(b".\r\n" if tail in (b"", b"\r\n") else b"\r\n.\r\n", "data", commands=1)

    async def rset(self) -> Reply:
        """RSET, when the connection is in step; else it is closed (``UpstreamUnavailable``).

        With a reply still owed, RSET's answer could not be told from it.
        """
        if not self.in_step:
            self.close()
            raise UpstreamUnavailable("the connection is out of step with the server; closed", stage="rset")
        return await self.command(b"RSET", "rset")

    def mail_options(self, *, size: int, eight_bit: bool, smtputf8: bool) -> list[str]:
        """The MAIL FROM parameters this server understands for a message like this."""
        options = []
        if "size" in self.extensions:
            options.append(f"SIZE={size}")
        if eight_bit and "8bitmime" in self.extensions:
            options.append("BODY=8BITMIME")
        if smtputf8 and "smtputf8" in self.extensions:
            options.append("SMTPUTF8")
        return options

    async def quit(self) -> None:
        if not self.broken:
            try:
                await self.command(b"QUIT", "quit")
            except UpstreamUnavailable:
                pass
        self.close()

    def close(self) -> None:
        self.broken = True
        try:
            self._writer.close()
        except (OSError, RuntimeError):
            pass


class Transaction:
    """MAIL and RCPT commands sent while the mail client is still naming recipients.

    ``add`` queues a recipient and returns at once; a background task sends
    each command as soon as the server may take it (with PIPELINING all
    queued ones in one write, MAIL with the first RCPT; else one by one) and
    keeps the replies. So the server checks the recipients while the client
    is busy with its own commands. ``finish`` waits for every reply: (MAIL's
    reply, the RCPT replies in order), none for RCPT when MAIL was refused.
    It raises ``UpstreamUnavailable`` when the connection failed on the way.
    """

    def __init__(self, conn: Connection, mail: bytes) -> None:
        self.conn = conn
        self._lines = [mail]
        self._replies: list[Reply] = []
        self._more = asyncio.Event()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, recipient: str) -> None:
        if self._closed:
            raise RuntimeError("the transaction's commands are finished")
        self._lines.append(rcpt_command(recipient))
        self._more.set()

    async def _run(self) -> None:
        conn = self.conn
        pipelining = "pipelining" in conn.extensions
        sent = 0
        # With PIPELINING MAIL goes with the first RCPT (or at the end): one write and wakeup, not two.
        while pipelining and len(self._lines) == 1 and not self._closed:
            self._more.clear()
            await self._more.wait()
        while True:
            if sent < len(self._lines):
                batch = self._lines[sent:] if pipelining else self._lines[sent : sent + 1]
                stage = "mail" if sent == 0 else "rcpt"
                await conn._send(b"".join(line + b"\r\n" for line in batch), stage, commands=len(batch))
                sent += len(batch)
                self._replies.extend(await conn._replies(len(batch), stage))
                if not self._replies[0].ok and not pipelining:
                    return  # MAIL refused: no RCPT goes after it.
                continue
            if self._closed:
                return
            self._more.clear()
            await self._more.wait()

    async def finish(self) -> tuple[Reply, list[Reply]]:
        self._closed = True
        self._more.set()
        await self._task
        mail, *rcpts = self._replies
        return mail, (rcpts if mail.ok else [])

    def cancel(self) -> None:
        """Stop at once (the client left): a command still unanswered closes the connection."""
        self._closed = True
        if not self._task.done():
            self._task.cancel()
            self.conn.close()

    async def settle(self) -> None:
        """Wait for the commands under way to be answered, whatever the outcome."""
        try:
            await self.finish()
        except UpstreamUnavailable:
            pass

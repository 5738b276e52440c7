"""Raw peers for the smuggling tests: a server that ends lines too eagerly, and a client that sends anything.

``LooseServer`` ends a line at CRLF, a bare CR or a bare LF, as the
receivers that SMTP smuggling exploits do (the 2023 research: Postfix before
``smtpd_forbid_bare_newline``, Exchange Online, Sendmail and others read a
line end, and so "<LF>.<LF>" or "<CR>.<CR>" as the end of data, where a
strict peer sees none). It keeps every byte it got, so a test can tell
whether the proxy let anything through that such a server would read as a
second transaction. ``RawClient`` is the attacker's side: it sends exactly
the bytes it is given, on a raw socket. ``FaultServer`` is a strict server
(CRLF lines, pipelining, a thread per connection) whose ``rule`` injects
faults at any step: a stall, a hang-up without a reply, or another reply.
All run on 127.0.0.1 with ephemeral ports (STYLE.md §6); ``proxy_kit``
exports them.
"""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Self

__all__ = ["LoopbackServer", "LooseServer", "LooseTransaction", "RawClient", "FaultServer", "Stored"]

# Any of CRLF, a bare CR or a bare LF ends a line for the loose server.
_ANY_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass
class LooseTransaction:
    """One transaction as the loose server read it: MAIL's and RCPT's arguments, the data lines."""

    sender: bytes
    recipients: list[bytes] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    delivered: bool = False


@dataclass
class _State:
    transaction: LooseTransaction | None = None
    in_data: bool = False


class LoopbackServer:
    """A listening socket on 127.0.0.1 and the thread that serves it; ``stop`` ends both.

    ``_serve`` talks to one connection at a time through ``_talk``; a server
    that wants more overrides ``_serve`` and takes its connections from
    ``_connections``.
    """

    def __init__(self, backlog: int = 8) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _connections(self) -> Iterator[socket.socket]:
        """Each connection accepted until ``stop``: the short accept timeout only lets the loop see ``stop``."""
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # ``stop`` closed the socket under a late accept.
            yield conn

    def _serve(self) -> None:
        # One connection at a time, each with a 5 s read timeout; a peer that
        # hangs up mid-conversation ends only its own connection.
        for conn in self._connections():
            with conn:
                conn.settimeout(5)
                try:
                    self._talk(conn)
                except OSError:
                    pass

    def _talk(self, conn: socket.socket) -> None:
        raise TypeError(f"{type(self).__name__} must define _talk")


class LooseServer(LoopbackServer):
    """An SMTP server on a thread that ends a line at CRLF, a bare CR or a bare LF (see the module docstring).

    ``raw`` holds every byte received, ``commands`` every command line as
    this server read it, ``transactions`` every transaction begun with MAIL
    (``delivered`` once its data ended and was answered 250). It offers
    PIPELINING and 8BITMIME, answers every line as soon as it is read and
    accepts everything.
    """

    def __init__(self) -> None:
        self.raw = bytearray()
        self.commands: list[bytes] = []
        self.transactions: list[LooseTransaction] = []
        super().__init__()

    @property
    def delivered(self) -> list[LooseTransaction]:
        return [t for t in self.transactions if t.delivered]

    def _talk(self, conn: socket.socket) -> None:
        conn.sendall(b"220 loose.test ESMTP\r\n")
        buf = b""
        state = _State()
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            self.raw += chunk
            buf += chunk
            while (end := _ANY_LINE_END.search(buf)) is not None:
                if end.group() == b"\r" and end.end() == len(buf):
                    break  # Maybe the first half of a CRLF: wait for the next byte.
                line, buf = buf[: end.start()], buf[end.end() :]
                reply = self._line(line, state)
                if reply:
                    conn.sendall(reply)
                if reply.startswith(b"221"):
                    return

    def _line(self, line: bytes, state: _State) -> bytes:
        transaction = state.transaction
        if state.in_data:
            assert transaction is not None
            if line == b".":
                state.in_data, state.transaction = False, None
                transaction.delivered = True
                return b"250 2.0.0 accepted\r\n"
            transaction.lines.append(line[1:] if line.startswith(b".") else line)
            return b""
        self.commands.append(line)
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            return b"250-loose.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        if verb == b"QUIT":
            return b"221 bye\r\n"
        if verb == b"MAIL":
            state.transaction = LooseTransaction(line[10:])
            self.transactions.append(state.transaction)
        elif verb in (b"RCPT", b"DATA") and transaction is None:
            return b"503 5.5.1 need MAIL first\r\n"
        elif verb == b"RCPT" and transaction is not None:
            transaction.recipients.append(line[8:])
        elif verb == b"DATA":
            state.in_data = True
            return b"354 go ahead\r\n"
        elif verb == b"RSET":
            state.transaction = None
        elif verb != b"NOOP":
            return b"500 5.5.1 unknown command\r\n"
        return b"250 OK\r\n"


class RawClient:
    """An SMTP client on a raw socket: it sends exactly the bytes it is given."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self._replies = self.sock.makefile("rb")
        self.greeting = self.read()

    def read(self) -> bytes:
        """The next reply, its lines joined."""
        lines = [self._replies.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(self._replies.readline())
        return b"".join(lines)

    def send(self, data: bytes, replies: int = 1) -> list[bytes]:
        """Send ``data`` as it is and read ``replies`` replies."""
        self.sock.sendall(data)
        return [self.read() for _ in range(replies)]

    def login(self, user: str, password: str) -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode())
        ehlo, auth = self.send(b"EHLO attacker.test\r\nAUTH PLAIN " + token + b"\r\n", 2)
        assert ehlo.startswith(b"250") and auth.startswith(b"235"), (ehlo, auth)

    def close(self) -> None:
        self._replies.close()
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ faults on purpose

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.MULTILINE | re.IGNORECASE)

#: ``rule(connection, step, sender)``: None (answer normally), a float (wait so
#: many seconds, then answer normally), "drop" (hang up without a reply) or a
#: reply line to give instead (b"451 4.3.0 busy"). ``step`` is MAIL, RCPT,
#: DATA or DOT (the end of the data); ``connection`` counts from 1.
Rule = Callable[[int, str, bytes], "float | str | bytes | None"]


@dataclass
class Stored:
    """A message the server answered 250 at the end of its data: its envelope and its data (unstuffed)."""

    sender: bytes
    recipients: list[bytes]
    data: bytes

    @property
    def message_id(self) -> bytes | None:
        found = _MESSAGE_ID.search(self.data.split(b"\r\n\r\n", 1)[0])
        return found.group(1) if found else None


class FaultServer(LoopbackServer):
    """A strict SMTP server on a thread per connection that fails on purpose (see ``Rule``).

    It stores a message only when it answers 250 to its end, so what is in
    ``stored`` is exactly what an upstream server would have accepted; a
    hang-up or a refusal stores nothing. ``lines`` holds each connection's
    command lines.
    """

    def __init__(self, rule: Rule | None = None) -> None:
        self.rule = rule
        self.stored: list[Stored] = []
        self.lines: list[list[bytes]] = []
        self.lock = threading.Lock()
        self._open: set[socket.socket] = set()
        super().__init__(backlog=64)

    def stop(self) -> None:
        super().stop()
        with self.lock:
            for conn in list(self._open):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Stored]:
        deadline = time.monotonic() + timeout
        while len(self.stored) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.stored

    def _serve(self) -> None:
        for conn in self._connections():
            with self.lock:
                self._open.add(conn)
                lines: list[bytes] = []
                self.lines.append(lines)
                number = len(self.lines)
            threading.Thread(target=self._run, args=(conn, number, lines), daemon=True).start()

    def _run(self, conn: socket.socket, number: int, lines: list[bytes]) -> None:
        try:
            with conn:
                conn.settimeout(60)
                self._converse(conn, number, lines)
        except OSError:
            pass
        finally:
            with self.lock:
                self._open.discard(conn)

    def _fault(self, number: int, step: str, sender: bytes) -> bytes | None:
        """The reply instead of the normal one, b"" to hang up, or None to go on."""
        fault = self.rule(number, step, sender) if self.rule is not None else None
        if isinstance(fault, float):
            time.sleep(fault)
            return None
        if fault == "drop":
            return b""
        if isinstance(fault, bytes):
            return fault + b"\r\n"
        return None

    def _converse(self, conn: socket.socket, number: int, lines: list[bytes]) -> None:
        conn.sendall(b"220 fault.test ESMTP\r\n")
        reader = conn.makefile("rb")
        sender: bytes | None = None
        recipients: list[bytes] = []
        while True:
            line = reader.readline()
            if not line.endswith(b"\r\n"):
                return
            lines.append(line)
            verb = line[:4].upper()
            step = {b"MAIL": "MAIL", b"RCPT": "RCPT", b"DATA": "DATA"}.get(verb)
            fault = None
            if step is not None and (sender is not None or step == "MAIL"):
                fault = self._fault(number, step, sender or line[10:].strip())
            if fault == b"":
                return  # Hang up without a reply.
            if fault is not None:
                if step == "MAIL":
                    sender = None
                conn.sendall(fault)
                continue
            if verb == b"EHLO":
                conn.sendall(b"250-fault.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            elif verb == b"MAIL" and sender is None:
                sender, recipients = line[10:].strip(), []
                conn.sendall(b"250 2.1.0 OK\r\n")
            elif verb == b"RCPT" and sender is not None:
                recipients.append(line[8:].strip())
                conn.sendall(b"250 2.1.5 OK\r\n")
            elif verb == b"DATA" and sender is not None and recipients:
                conn.sendall(b"354 go ahead\r\n")
                data = bytearray()
                while (piece := reader.readline()) != b".\r\n":
                    if not piece.endswith(b"\r\n"):
                        return
                    data += piece[1:] if piece.startswith(b".") else piece
                fault = self._fault(number, "DOT", sender)
                if fault == b"":
                    return
                if fault is None:
                    with self.lock:
                        self.stored.append(Stored(sender, recipients, bytes(data)))
                    fault = b"250 2.0.0 stored\r\n"
                sender, recipients = None, []
                conn.sendall(fault)
            elif verb in (b"MAIL", b"RCPT", b"DATA"):
                conn.sendall(b"503 5.5.1 bad sequence of commands\r\n")
            elif verb == b"RSET":
                sender, recipients = None, []
                conn.sendall(b"250 2.0.0 OK\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 2.0.0 bye\r\n")
                return
            else:
                conn.sendall(b"250 2.0.0 OK\r\n")

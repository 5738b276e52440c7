"""What the proxy's tests share: a recording upstream, fault servers, homes, and the proxy itself.

Everything is real and on 127.0.0.1 with ephemeral ports (STYLE.md §6):
``Upstream`` is an aiosmtpd server on its own event loop thread that
records what it accepts and can answer 421/451/550 or stall, per recipient
or per transaction; ``RawServer`` is a minimal SMTP peer for the faults
aiosmtpd cannot make (421 at the greeting, a connection dropped in the
middle of DATA); ``LooseServer`` and ``RawClient`` (from ``loose_peers``)
are a server that ends lines at a bare CR or LF and an attacker's client
for the smuggling tests. Homes are made with the library (``init_home``) and the
proxy runs in-process (``ProxyThread``); certificates are made with
``keygen`` and written as PEM for ``openssl cms``.
"""

from __future__ import annotations

import asyncio
import functools
import re
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from aiosmtpd.smtp import SMTP, AuthResult
from cryptography.hazmat.primitives import serialization
from loose_peers import FaultServer as FaultServer
from loose_peers import LoopbackServer
from loose_peers import LooseServer as LooseServer  # Re-exported: the tests import every peer from here.
from loose_peers import LooseTransaction as LooseTransaction
from loose_peers import RawClient as RawClient
from loose_peers import Stored as Stored

from mailcrypt import config
from mailcrypt.keydir import KeyDirectory, init_home, keygen
from mailcrypt.keydir.passphrase import PassphraseSource
from proxy.auth import UserStore
from proxy.guard import LoginGuard
from proxy.server import ProxyServer, ProxyThread

SENDER = "alice@example.org"
PASSWORD = "proxy password 1234"


def mail(
    to: str,
    subject: str,
    body: bytes,
    *,
    message_id: str,
    sender: str = f"Alice <{SENDER}>",
    cc: str = "",
    bcc: str = "",
    content_type: str = "",
    encoding: str = "",
) -> bytes:
    """A message for the proxy to send, one CRLF line a field (RFC 5322 §2.2, §3.6).

    Cc, Bcc, Content-Type and Content-Transfer-Encoding are written only when given.
    """
    fields = [
        ("From", sender),
        ("To", to),
        ("Cc", cc),
        ("Bcc", bcc),
        ("Subject", subject),
        ("Message-ID", message_id),
        ("Content-Type", content_type),
        ("Content-Transfer-Encoding", encoding),
    ]
    return "".join(f"{name}: {value}\r\n" for name, value in fields if value).encode() + b"\r\n" + body


# ------------------------------------------------------------------ people


@dataclass(frozen=True)
class Person:
    address: str
    key_path: Path
    cert_path: Path


@functools.cache
def _identity(address: str, key_type: str) -> tuple[bytes, bytes]:
    key, cert = keygen.generate_identity(address, key_type=key_type)
    return (
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def person(directory: Path, address: str, key_type: str = "p256") -> Person:
    key_pem, cert_pem = _identity(address, key_type)
    key_path, cert_path = directory / f"{address}.key", directory / f"{address}.crt"
    key_path.write_bytes(key_pem)
    key_path.chmod(0o600)
    cert_path.write_bytes(cert_pem)
    return Person(address, key_path, cert_path)


# ------------------------------------------------------------------ the upstream


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes


class _Recorder:
    def __init__(self, upstream: Upstream) -> None:
        self.up = upstream

    async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
        rule = self.up.rcpt_rules.get(address)
        if rule is not None:
            reply = rule() if callable(rule) else rule
            if isinstance(reply, float):
                await asyncio.sleep(reply)
                return "451 4.4.2 too slow"
            if reply is not None:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.up.attempts.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        rule = self.up.data_rule(envelope.rcpt_tos) if self.up.data_rule else None
        if isinstance(rule, float):
            await asyncio.sleep(rule)
            return "451 4.4.2 took too long, not accepted"
        if rule is not None:
            return rule
        self.up.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 accepted"


class Upstream:
    """A recording aiosmtpd server (see the module docstring).

    ``size`` is the SIZE it announces and enforces (None: none).
    ``rcpt_rules[address]`` is a reply, a float (seconds to stall), or a
    callable returning one of them (or None for "accept"); ``data_rule(rcpts)``
    likewise at the end of DATA.
    """

    def __init__(
        self, *, tls_context: object = None, auth: dict[str, str] | None = None, size: int | None = None
    ) -> None:
        self.tls_context = tls_context
        self.size = size
        self.auth = auth
        self.received: list[Received] = []
        self.attempts: list[Received] = []
        self.rcpt_rules: dict[str, object] = {}
        self.data_rule: Callable[[list[str]], object] | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def start(self) -> Upstream:
        self._thread.start()

        async def up() -> asyncio.base_events.Server:
            return await self.loop.create_server(self._protocol, "127.0.0.1", 0)

        self._server = asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _protocol(self) -> SMTP:
        options: dict[str, object] = {}
        if self.tls_context is not None:
            options.update(tls_context=self.tls_context, require_starttls=True)
        if self.auth is not None:
            users = self.auth

            def check(server, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
                ok = users.get(data.login.decode()) == data.password.decode()
                return AuthResult(success=ok, handled=False)

            options.update(authenticator=check, auth_require_tls=self.tls_context is not None)
        return SMTP(_Recorder(self), hostname="upstream.test", data_size_limit=self.size, **options)  # type: ignore[arg-type]

    def stop(self) -> None:
        async def down() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


def copy_for(received: list[Received], address: str) -> Received:
    """The one envelope among ``received`` addressed to ``address`` alone."""
    (copy,) = [r for r in received if r.recipients == [address]]
    return copy


class RawServer(LoopbackServer):
    """A minimal SMTP peer on a thread: ``greeting`` first; with ``drop_after`` bytes of DATA, hang up.

    ``drop_on``: hang up, without a reply, at the first command line that
    starts with it (on every connection when ``drop_every_time`` is set).
    ``accept``: answer the end of DATA with 250 and go on (else hang up
    there too), and refuse DATA outside a transaction (503).
    ``lines`` holds the command lines of each connection.
    """

    def __init__(
        self,
        *,
        greeting: bytes = b"220 raw.test ESMTP\r\n",
        drop_after: int | None = None,
        drop_on: bytes | None = None,
        accept: bool = False,
    ) -> None:
        self.greeting = greeting
        self.drop_after = drop_after
        self.drop_on = drop_on
        self.accept = accept
        self.lines: list[list[bytes]] = []
        self.connections = 0
        self.drop_every_time = False
        self.data = b""
        super().__init__()

    def _talk(self, conn: socket.socket) -> None:
        self.connections += 1
        conn.sendall(self.greeting)
        if not self.greeting.startswith(b"220"):
            return
        reader = conn.makefile("rb")
        lines: list[bytes] = []
        self.lines.append(lines)
        in_transaction = False
        while True:
            line = reader.readline()
            if not line:
                return
            lines.append(line)
            if self.drop_on is not None and line.startswith(self.drop_on):
                if not self.drop_every_time:
                    self.drop_on = None
                return  # Hang up without a reply.
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-raw.test\r\n250 PIPELINING\r\n")
            elif verb in (b"MAIL", b"RSET"):
                in_transaction = verb == b"MAIL"
                conn.sendall(b"250 OK\r\n")
            elif verb == b"DATA" and self.accept and not in_transaction:
                conn.sendall(b"503 5.5.1 need MAIL first\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                seen = 0
                while self.drop_after is None or seen < self.drop_after:
                    chunk = reader.readline()
                    if not chunk or chunk == b".\r\n":
                        break
                    seen += len(chunk)
                    self.data += chunk
                if not self.accept:
                    return  # Hang up in the middle of DATA: no reply.
                in_transaction = False
                conn.sendall(b"250 2.0.0 accepted\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 OK\r\n")



def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ homes and the proxy


def make_home(
    home: Path,
    *,
    upstream_port: int | None = None,
    extra: str = "",
    recipients: tuple[Person, ...] = (),
    upstream_extra: str = "",
    timeout: int = 2,
) -> config.Settings:
    """A home for SENDER with the proxy's certificate, one user and the recipients' certificates imported."""
    init_home(home, SENDER, passphrase=PassphraseSource.unencrypted(), key_type="p256")
    text = (home / "config.toml").read_text()
    if upstream_port is not None:
        text += (
            f'\n[upstream]\nhost = "127.0.0.1"\nport = {upstream_port}\nsecurity = "none"\ntimeout = {timeout}\n'
            + upstream_extra
        )
    (home / "config.toml").write_text(text + extra)
    settings = config.load_settings(home)
    from proxy.setup import make_certificate

    make_certificate(settings.proxy.tls_cert, settings.proxy.tls_key)
    UserStore(settings.home / "proxy" / "users").add(SENDER, PASSWORD.encode(), addresses=(SENDER,))
    keys = KeyDirectory.from_settings(settings)
    for p in recipients:
        keys.import_file(p.cert_path)
    return settings


def sender_key(settings: config.Settings) -> tuple[Path, Path]:
    """The PEM key and certificate of the home's own identity (stored unencrypted by make_home)."""
    folder = settings.keys.directory / "identities"
    (key,) = folder.glob("*.key")
    return key, key.with_suffix(".crt")


@dataclass
class Proxy:
    thread: ProxyThread
    host: str
    port: int
    server: ProxyServer = field(repr=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        # Stop the proxy whether or not the block failed, as a try/finally would.
        self.thread.stop()

    def client(self, *, login: bool = True) -> smtplib.SMTP:
        client = smtplib.SMTP(self.host, self.port, timeout=20)
        if login:
            client.login(SENDER, PASSWORD)
        return client


def start_proxy(settings: config.Settings, **options: object) -> Proxy:
    options.setdefault("guard", LoginGuard(base_delay=0.01, max_delay=0.05))
    options.setdefault("intervals", (0.2, 0.2, 0.2))
    options.setdefault("poll", 0.1)
    server = ProxyServer(settings, listen=("127.0.0.1", 0), **options)  # type: ignore[arg-type]
    thread = ProxyThread(server)
    host, port = thread.start()
    return Proxy(thread, host, port, server)


# ------------------------------------------------------------------ reading what arrived


def decrypt(data: bytes, key: Path, cert: Path) -> bytes | None:
    """``openssl cms -decrypt`` with this key; None when it cannot (not for this key)."""
    proc = subprocess.run(
        ["openssl", "cms", "-decrypt", "-inkey", str(key), "-recip", str(cert)],
        input=data,
        capture_output=True,
        timeout=60,
    )
    return proc.stdout if proc.returncode == 0 else None


def inner_body(decrypted: bytes) -> bytes:
    """The body the client wrote: the first part of multipart/signed when the proxy signed, else the body."""
    head, _, body = decrypted.partition(b"\r\n\r\n")
    boundary = re.search(rb'boundary="([^"]+)"', head)
    if b"multipart/signed" in head and boundary:
        delimiter = b"--" + boundary.group(1)
        first = body.split(delimiter + b"\r\n", 1)[1].split(b"\r\n" + delimiter, 1)[0]
        return first.partition(b"\r\n\r\n")[2]
    return body


def outer_header(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def recipient_info_kinds(data: bytes) -> list[str]:
    """The RecipientInfo choices of an S/MIME message's envelope, in order: "ktri", "kari", ..."""
    from asn1crypto import cms
    from nss import envelope_der

    return [info.name for info in cms.ContentInfo.load(envelope_der(data))["content"]["recipient_infos"]]


def is_encrypted(data: bytes) -> bool:
    return b"application/pkcs7-mime" in outer_header(data) and b"enveloped-data" in outer_header(data).lower()

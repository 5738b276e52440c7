"""The embedded default upstream: a Maildir in the home that stands in for a mail server.

With no ``[upstream]`` configured, the proxy delivers what it would relay
into ``$MAILCRYPT_HOME/outbox/`` (DESIGN.md §5), so the whole flow runs with
no outside server. Delivery is in two steps so that a message with several
envelopes (one per Bcc recipient) lands whole or not at all: ``stage``
writes each copy into ``tmp/`` and syncs it; ``commit`` renames them all
into ``new/`` and syncs the directory; ``discard`` removes staged copies
after a failure. A reader never sees a half-written file (Maildir).
``OutboxRelay`` is the relay the proxy uses in this mode.

Each stored copy starts with ``Return-Path`` and ``X-Envelope-To`` fields
naming its SMTP envelope, which a real server would keep outside the message.

What it won't do: read the messages back, or write anything but the bytes
it is given (the proxy hands it encrypted messages, or plaintext copies the
policy allowed, exactly as they would go to a server).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailcrypt.state import fsync_dir
from proxy.relay import Credentials, Delivery, Group, temporary
from proxy.spill import Spilled, body_pieces

__all__ = ["Outbox", "OutboxRelay", "Staged"]

log = logging.getLogger(__name__)

_counter = itertools.count()


@dataclass(frozen=True)
class Staged:
    """A copy written to ``tmp/`` and synced, waiting for ``commit``."""

    tmp: Path
    new: Path


class Outbox:
    """One Maildir (``tmp/``, ``new/``, ``cur/``), created 0700 on first use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def ensure(self) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    def _unique(self) -> str:
        # Maildir's unique name: time, then microseconds, pid and a counter, then the host.
        now = time.time()
        host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        return f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}Q{next(_counter)}R{os.urandom(4).hex()}.{host}"

    def stage(
        self, sender: str, recipients: Sequence[str], message: bytes | bytearray | memoryview | Spilled
    ) -> Staged:
        """Write one copy into ``tmp/`` and sync it. Raises ``OSError`` (disk full, ...)."""
        self.ensure()
        name = self._unique()
        tmp = self.path / "tmp" / name
        envelope = f"Return-Path: <{sender}>\r\nX-Envelope-To: {', '.join(recipients)}\r\n".encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(envelope)
                for piece in body_pieces(message):
                    f.write(piece)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Staged(tmp, self.path / "new" / name)

    def commit(self, staged: Sequence[Staged]) -> None:
        """Move staged copies into ``new/`` and sync the directories."""
        for item in staged:
            os.rename(item.tmp, item.new)
        if staged:
            fsync_dir(self.path / "new")
            fsync_dir(self.path / "tmp")

    @staticmethod
    def discard(staged: Sequence[Staged]) -> None:
        """Remove staged copies that will not be committed."""
        for item in staged:
            item.tmp.unlink(missing_ok=True)


class OutboxRelay:
    """The embedded default: every group into the outbox Maildir, all or none."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.check_recipients = False

    async def begin(self, sender: str, login: Credentials | None, *, smtputf8: bool) -> None:
        return None

    def check(self, probe: object, recipient: str) -> None:
        return None

    async def open(self, probe: object, recipients: Sequence[str]) -> None:
        return None

    async def abandon(self, probe: object, *, leaving: bool = False) -> None:
        return None

    async def deliver(
        self, probe: object, sender: str, groups: Sequence[Group], login: Credentials | None, *, smtputf8: bool
    ) -> Delivery:
        loop = asyncio.get_running_loop()
        staged: list[Staged] = []
        try:
            for group in groups:
                message = await group.render()
                staged.append(await loop.run_in_executor(None, self.outbox.stage, sender, group.recipients, message))
            await loop.run_in_executor(None, self.outbox.commit, staged)
        except OSError as exc:
            Outbox.discard(staged)
            log.error("outbox %s: cannot store the message: %s", self.outbox.path, exc)
            return Delivery(temporary(f"cannot store the message in the outbox ({exc.strerror or exc})"))
        except BaseException:
            # A group that cannot be made (the caller tells the client why): nothing stays in tmp/.
            Outbox.discard(staged)
            raise
        return Delivery("250 2.0.0 OK: in the outbox")

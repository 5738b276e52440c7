"""The durable retry spool: encrypted groups that failed after another group was accepted.

See ``relay`` for when a group lands here. An entry is one file in
``spool/new/``, written to ``spool/tmp/``, synced and renamed, before the
mail client hears 250: a first line of JSON (sender, recipients, the login
to relay with by name, when it was spooled and why) and then the message.
Only encrypted messages are accepted (``put`` refuses anything else), so no
plaintext ever lands on the disk; the one exception is a delivery report
(``delivery_report``, ``put(report=True)``) to a sender without a
certificate, which quotes nothing of the message. Retry state (attempts, next try, last
reason) lives beside it in a small ``.retry`` file, replaced atomically.

``SpoolRunner`` retries due entries in the background: after 1, 5, 15 and
30 minutes and then hourly, until ``retry_hours`` have passed. A permanent
refusal, or giving up, sends the sender a delivery status notification
(RFC 3464) naming the recipients and the reason — never the content — and
removes the entry. A successful retry removes it. (A crash between the
server's 250 and the removal sends that group once more: SMTP cannot tell
us more, RFC 1047.)

What it won't do: hold plaintext, or keep a password (entries name a
login; its password is known only while that user's client is logged in).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from email.utils import format_datetime, make_msgid
from pathlib import Path

from mailcrypt.state import fsync_dir
from proxy.spill import Body, body_pieces

__all__ = ["Spool", "Entry", "SpoolRunner", "delivery_report", "INTERVALS"]

log = logging.getLogger(__name__)

#: Seconds between tries: 1, 5, 15, 30 minutes, then hourly.
INTERVALS = (60, 300, 900, 1800, 3600)


@dataclass
class Entry:
    """One spooled group, as read back (the message stays on disk until ``Spool.message``)."""

    path: Path
    sender: str
    recipients: tuple[str, ...]
    login: str | None
    spooled: float
    message_id: str
    attempts: int = 0
    next_try: float = 0.0
    reason: str = ""


def _write_atomic(directory: Path, target: Path, parts: Iterable[bytes | memoryview]) -> None:
    tmp = directory / f".{target.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


class Spool:
    """The spool directory (see the module docstring); all methods block, so call them off the event loop."""

    def __init__(self, path: Path, *, intervals: Sequence[float] = INTERVALS) -> None:
        self.path = Path(path)
        self.intervals = tuple(intervals)

    def ensure(self) -> None:
        for sub in ("tmp", "new"):
            (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    def put(
        self,
        sender: str,
        recipients: Sequence[str],
        message: Body,
        *,
        encrypted: bool,
        login: str | None,
        reason: str,
        message_id: str = "",
        report: bool = False,
    ) -> Path:
        """Store one encrypted group durably; return its file. Raises ``ValueError`` for plaintext.

        ``report`` marks a delivery report made by ``delivery_report``: it
        names recipients and reasons and never the content, so it may be
        stored unencrypted when the sender has no certificate to encrypt to.
        """
        if not encrypted and not report:
            raise ValueError("the spool holds encrypted messages only")
        self.ensure()
        now = time.time()
        meta = {
            "sender": sender,
            "recipients": list(recipients),
            "login": login,
            "spooled": now,
            "message_id": message_id,
            "reason": reason,
        }
        target = self.path / "new" / f"{int(now)}.{uuid.uuid4().hex}.msg"
        _write_atomic(
            self.path / "tmp", target, itertools.chain([json.dumps(meta).encode() + b"\n"], body_pieces(message))
        )
        self._write_retry(target, attempts=0, next_try=now + self.intervals[0], reason=reason)
        return target

    def _retry_file(self, path: Path) -> Path:
        return path.with_suffix(".retry")

    def _write_retry(self, path: Path, *, attempts: int, next_try: float, reason: str) -> None:
        data = json.dumps({"attempts": attempts, "next_try": next_try, "reason": reason}).encode()
        _write_atomic(self.path / "tmp", self._retry_file(path), [data])

    def entries(self) -> list[Entry]:
        """Every entry, oldest first. Unreadable files are logged and skipped."""
        out = []
        try:
            names = sorted(p for p in (self.path / "new").iterdir() if p.suffix == ".msg")
        except FileNotFoundError:
            return []
        for path in names:
            try:
                with open(path, "rb") as f:
                    meta = json.loads(f.readline())
                entry = Entry(
                    path,
                    meta["sender"],
                    tuple(meta["recipients"]),
                    meta.get("login"),
                    float(meta["spooled"]),
                    meta.get("message_id", ""),
                    reason=meta.get("reason", ""),
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("spool entry %s is unreadable (%s); left in place", path.name, exc)
                continue
            try:
                state = json.loads(self._retry_file(path).read_bytes())
                entry.attempts, entry.next_try = int(state["attempts"]), float(state["next_try"])
                entry.reason = state.get("reason", entry.reason)
            except (OSError, ValueError, KeyError, TypeError):
                entry.next_try = entry.spooled
            out.append(entry)
        return out

    def message(self, entry: Entry) -> bytes:
        with open(entry.path, "rb") as f:
            f.readline()
            return f.read()

    def retry_later(self, entry: Entry, reason: str, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        attempts = entry.attempts + 1
        wait = self.intervals[min(attempts, len(self.intervals) - 1)]
        self._write_retry(entry.path, attempts=attempts, next_try=now + wait, reason=reason)

    def remove(self, entry: Entry) -> None:
        entry.path.unlink(missing_ok=True)
        self._retry_file(entry.path).unlink(missing_ok=True)
        fsync_dir(entry.path.parent)


def delivery_report(
    sender: str,
    failures: Sequence[tuple[str, str, bool]],
    *,
    message_id: str = "",
    now: datetime.datetime | None = None,
) -> bytes:
    """A delivery status notification (RFC 3464) to ``sender`` for ``(recipient, reason, permanent)``.

    It names the recipients, the reason and the original Message-ID; it
    never quotes the message.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    host = socket.gethostname() or "localhost"
    boundary = f"mailcrypt-report-{uuid.uuid4().hex}"
    lines = []
    for rcpt, reason, is_permanent in failures:
        state = "could not be delivered" if is_permanent else "could not be delivered yet and is no longer retried"
        lines.append(f"  {rcpt}: {state}: {reason}")
    human = (
        "The mailcrypt proxy accepted your message"
        + (f" {message_id}" if message_id else "")
        + ", but it did not reach these recipients:\r\n\r\n"
        + "\r\n".join(lines)
        + "\r\n\r\nThe other recipients got it. Send it again to the recipients above.\r\n"
    )
    status = [f"Reporting-MTA: dns; {host}", f"Arrival-Date: {format_datetime(now)}", ""]
    for rcpt, reason, is_permanent in failures:
        status += [
            f"Final-Recipient: rfc822; {rcpt}",
            "Action: failed",
            f"Status: {'5.0.0' if is_permanent else '4.4.7'}",
            f"Diagnostic-Code: smtp; {' '.join(reason.split())[:400]}",
            "",
        ]
    text = (
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n"
        f"To: <{sender}>\r\n"
        "Subject: Undelivered mail: some recipients did not get your message\r\n"
        f"Date: {format_datetime(now)}\r\n"
        f"Message-ID: {make_msgid(domain=host)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        'Content-Type: text/plain; charset="us-ascii"\r\n\r\n'
        f"{human}\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n" + "\r\n".join(status) + f"\r\n--{boundary}--\r\n"
    )
    return text.encode("ascii", "replace")


# The runner's way out: send(sender, recipients, message, login) -> None, raising
# TemporaryFailure or PermanentFailure; bounce(sender, failures, message_id) -> None.
Send = Callable[[str, Sequence[str], bytes, "str | None"], Awaitable[None]]
Bounce = Callable[[str, Sequence[tuple[str, str, bool]], str], Awaitable[None]]


class TemporaryFailure(Exception):
    """The spooled message could not be sent now; try later."""


class PermanentFailure(Exception):
    """The server refused the spooled message for good."""


class SpoolRunner:
    """Retries due entries every ``poll`` seconds until stopped."""

    def __init__(self, spool: Spool, send: Send, bounce: Bounce, *, retry_hours: float, poll: float = 30.0) -> None:
        self.spool = spool
        self.send = send
        self.bounce = bounce
        self.retry_seconds = retry_hours * 3600
        self.poll = poll
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the spool now (a new entry arrived, or a user logged in)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retry spool pass failed")
            try:
                async with asyncio.timeout(self.poll):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def run_once(self, *, now: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        for entry in await loop.run_in_executor(None, self.spool.entries):
            current = time.time() if now is None else now
            if entry.next_try > current:
                continue
            message = await loop.run_in_executor(None, self.spool.message, entry)
            try:
                await self.send(entry.sender, entry.recipients, message, entry.login)
            except PermanentFailure as exc:
                log.warning("spooled message %s to %s refused: %s", entry.path.name, ", ".join(entry.recipients), exc)
                await self._give_up(entry, str(exc), True)
            except TemporaryFailure as exc:
                if current - entry.spooled >= self.retry_seconds:
                    log.warning(
                        "spooled message %s: giving up after %d tries: %s", entry.path.name, entry.attempts, exc
                    )
                    await self._give_up(entry, str(exc), False)
                else:
                    await loop.run_in_executor(None, self.spool.retry_later, entry, str(exc))
            else:
                log.info("spooled message %s delivered to %s", entry.path.name, ", ".join(entry.recipients))
                await loop.run_in_executor(None, self.spool.remove, entry)

    async def _give_up(self, entry: Entry, reason: str, is_permanent: bool) -> None:
        if entry.sender:  # Never bounce a bounce (RFC 5321 §4.5.5: null reverse-path).
            await self.bounce(entry.sender, [(r, reason, is_permanent) for r in entry.recipients], entry.message_id)
        await asyncio.get_running_loop().run_in_executor(None, self.spool.remove, entry)

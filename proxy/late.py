"""Groups that failed after another group of the same message was accepted.

The mail client has been (or is about to be) told 250, so these must not be
lost and must not make the client send again (``relay`` explains why). An
encrypted group that failed temporarily goes into the durable ``Spool``
before the client hears 250; a permanent refusal, a plaintext copy (which
never touches the disk) or a group the spool cannot take is reported to the
sender at once in a delivery status notification, encrypted to the sender's
own certificate when there is one (else as it is: it names recipients and
reasons, never the content), and spooled like a group when the server
cannot take it at once. The ``SpoolRunner`` sends spooled groups
later through ``send`` and gives up with ``bounce``.

What it won't do: retry plaintext, or write any to disk.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field

from cryptography import x509

from mailcrypt.mime import encrypt_message
from proxy.relay import Credentials, Late, UpstreamRelay
from proxy.smtp import LoginRefused, UpstreamUnavailable
from proxy.spool import PermanentFailure, Spool, TemporaryFailure, delivery_report

__all__ = ["LateGroups"]

log = logging.getLogger(__name__)


def _nobody_to_tell() -> None:
    """The default ``LateGroups.on_spooled``: nothing waits for spooled messages."""


@dataclass(eq=False)
class LateGroups:
    """Spooling, retrying and bouncing for one upstream relay.

    ``sender_certificate(address)`` gives the sender's own certificate (to
    encrypt the notification) or None. ``logins`` maps user names to the
    credentials of clients logged in with ``upstream.login = "client"``;
    it is filled by the handler and only ever held in memory.
    """

    relay: UpstreamRelay
    spool: Spool
    _: KW_ONLY
    sender_certificate: Callable[[str], x509.Certificate | None]
    client_login: bool = False
    logins: dict[str, Credentials] = field(default_factory=dict, init=False, repr=False)
    # A factory, not a plain default: a function stored only on the class would be
    # called as a method (with ``self``) until the server sets its own.
    on_spooled: Callable[[], None] = field(default_factory=lambda: _nobody_to_tell, init=False, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    async def handle(self, late: Sequence[Late], sender: str, login: Credentials | None, message_id: str) -> None:
        """Spool what can be spooled (durably, before returning); bounce the rest in the background."""
        loop = asyncio.get_running_loop()
        bounces: list[tuple[str, str, bool]] = []
        spooled = False
        for item in late:
            if item.group.encrypted and not item.permanent and item.message is not None:
                try:
                    path = await loop.run_in_executor(
                        None,
                        functools.partial(
                            self.spool.put,
                            sender,
                            item.recipients,
                            item.message,
                            encrypted=True,
                            login=login.username if login else None,
                            reason=item.reason,
                            message_id=message_id,
                        ),
                    )
                    log.warning(
                        "%s group to %s failed after another was accepted (%s); spooled as %s",
                        item.group.kind,
                        ", ".join(item.recipients),
                        item.reason,
                        path.name,
                    )
                    spooled = True
                    continue
                except OSError as exc:
                    log.error("cannot spool the group to %s (%s); the sender is told", ", ".join(item.recipients), exc)
            log.warning(
                "%s group to %s failed after another was accepted (%s); the sender is told",
                item.group.kind,
                ", ".join(item.recipients),
                item.reason,
            )
            bounces += [(r, item.reason, item.permanent) for r in item.recipients]
        if spooled:
            self.on_spooled()
        if bounces and sender:
            task = asyncio.create_task(self.bounce(sender, bounces, message_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def bounce(self, sender: str, failures: Sequence[tuple[str, str, bool]], message_id: str) -> None:
        """Send the sender a delivery status notification; spool it (encrypted) if the server is away."""
        loop = asyncio.get_running_loop()
        report = delivery_report(sender, failures, message_id=message_id)
        certificate = await loop.run_in_executor(None, self.sender_certificate, sender)
        if certificate is not None:
            report = await loop.run_in_executor(None, encrypt_message, report, [certificate])
        try:
            await self.send("", [sender], report, None)
            log.info("told %s that %d recipient(s) did not get the message", sender, len(failures))
            return
        except PermanentFailure as exc:
            log.error("the delivery report to %s was refused: %s", sender, exc)
            return
        except TemporaryFailure as exc:
            reason = str(exc)
        # A report the sender's certificate could not encrypt quotes nothing of
        # the message (``delivery_report``): it is spooled as it is, never dropped.
        encrypted = certificate is not None
        try:
            await loop.run_in_executor(
                None,
                lambda: self.spool.put(
                    "",
                    [sender],
                    report,
                    encrypted=encrypted,
                    report=True,
                    login=None,
                    reason=reason,
                    message_id=message_id,
                ),
            )
            log.warning("the delivery report to %s could not be sent yet (%s); spooled for retry", sender, reason)
            self.on_spooled()
        except OSError as exc:
            log.error("the delivery report to %s could not be sent or spooled: %s", sender, exc)

    async def send(self, sender: str, recipients: Sequence[str], message: bytes, login: str | None) -> None:
        """One retry for the spool runner; raises ``TemporaryFailure`` or ``PermanentFailure``."""
        creds = None
        if self.client_login and login is not None:
            creds = self.logins.get(login)
            if creds is None:
                raise TemporaryFailure(f"waiting for {login} to log in to the proxy again (their login relays)")
        try:
            reply = await self.relay.send_one(sender, recipients, message, creds)
        except UpstreamUnavailable as exc:
            raise TemporaryFailure(str(exc)) from None
        except LoginRefused as exc:
            raise TemporaryFailure(f"the server refused the login: {exc.reply}") from None
        if reply.ok:
            return
        if reply.temporary:
            raise TemporaryFailure(str(reply))
        raise PermanentFailure(str(reply))

    async def wait(self) -> None:
        """Let running notifications finish (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

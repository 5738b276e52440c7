"""The aiosmtpd hooks of the proxy: who may send, to whom, and what the client hears.

- AUTH PLAIN and LOGIN (the hooks inherited from ``login.AuthHooks``) are
  checked against the ``UserStore`` (scrypt, in a worker thread) or, with
  ``upstream.login = "client"``, against the upstream server itself. Every
  attempt waits its turn and its delay in the ``LoginGuard`` (``guard``)
  before the password is checked; after ``max_failures`` failures on one
  connection it is closed (421).
- MAIL needs a login unless ``proxy.auth = "none"`` (loopback only): 530
  otherwise, so the proxy is never an open relay. A login sends only as
  its addresses (``users add NAME --address A``; with ``upstream.login =
  "client"``, the login name itself when it is an address): 553 5.7.1 for
  any other. With recipient checks on, the upstream transaction opens
  here. The null reverse-path (``MAIL FROM:<>``, of read receipts and
  vacation replies) is allowed for every login and relayed as ``<>``; an
  address with a control character is refused (``wire``). Changes to the
  key directory are looked for here (``refresh``), once a transaction.
- EHLO advertises the SIZE that still fits the upstream server's limit
  once encrypted (``sizes.MessageLimit``); ``session.ProxySMTP`` enforces it.
- RCPT takes at most ``max_recipients`` (default 100, like Postfix's
  smtpd_recipient_limit); the next one gets 452 4.5.3 (RFC 5321
  §4.5.3.1.10), and the client sends the rest in another transaction.
- RCPT decides each recipient at once (STYLE.md §4) by policy and key
  directory: 550 5.7.1 for a ``require`` recipient without a certificate;
  the upstream server is asked about it in the background.
- The DATA command (``handle_DATA_COMMAND``) first reserves the message's
  memory (``budget``: 452 4.3.1 when it is not free in time), then waits
  for the upstream server's answers; a refusal is the answer to DATA, before the body.
- DATA first checks what would go upstream in the clear (``wire``: the
  header block always, the body when a plaintext copy goes out) and refuses
  a message that breaks the line rules or whose header block is too large
  with a 5xx, then groups, signs, encrypts and relays (``groups``,
  ``relay``) and answers 250 only when every group is accepted upstream, in
  the outbox or in the retry spool; temporary failures are 451, permanent
  ones the server's 5xx, a message the MIME layer cannot take 554 5.6.0,
  and a sender whose identity the proxy cannot unlock 451 4.7.0 (never
  unsigned). Only identities of the login's addresses sign.
- ``handle_exception`` logs the details and answers a generic 451.

What it won't do: parse SMTP (aiosmtpd and ``session.ProxySMTP`` do) or log
message content: only addresses, decisions and hashed Message-IDs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mailcrypt import errors
from mailcrypt.addresses import address_key, recipient_key
from mailcrypt.mime import Field
from proxy.auth import UserStore
from proxy.budget import ByteBudget, declared_size, hold, keep_until_done
from proxy.groups import Plan, RecipientBook, SenderKeys, from_addresses, header_fields, make_groups
from proxy.guard import LoginGuard
from proxy.late import LateGroups
from proxy.login import AuthHooks, Login
from proxy.outbox import OutboxRelay
from proxy.relay import Credentials, Probe, Refused, UpstreamRelay, client_text
from proxy.sizes import MessageLimit
from proxy.wire import check_address, check_message

#: ``senders(mail_from, header_from, allowed)``: the sender's keys (``senders.Senders.for_message``).
SenderLookup = Callable[[str, list[str], Callable[[str], bool] | None], SenderKeys]

__all__ = ["ProxyHandler"]

log = logging.getLogger(__name__)


def reverse_path(mail_from: str) -> str:
    """The sender as the relay and the spool know it: "" for the null reverse-path.

    aiosmtpd gives ``MAIL FROM:<>`` as the address "<>" (and keeps it in the
    envelope, where an empty sender would mean "no MAIL yet"); relayed as it
    is, it became ``MAIL FROM:<<>>``, which servers refuse (RFC 5321 §4.1.2:
    the reverse-path is "<" mailbox ">" or "<>").
    """
    return "" if mail_from == "<>" else mail_from


def _message_id_hash(fields: list[Field]) -> str:
    for f in fields:
        if f.name == "message-id":
            return "sha256:" + hashlib.sha256(f.value.encode()).hexdigest()[:16]
    return "none"


def _retrieve(task: asyncio.Task[str]) -> None:
    # A relay whose client left has nobody to await it: its failure is logged here.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("relaying a message failed after its client left: %s", exc, exc_info=exc)


@dataclass(eq=False, kw_only=True)
class ProxyHandler(AuthHooks):
    """The hooks (see the module docstring).

    ``senders`` picks the sender's keys; ``refresh``, when given, is awaited
    at every MAIL to pick up changes to the key directory. ``limit`` is the
    message size advertised at EHLO (the configured one when not given).
    """

    book: RecipientBook
    senders: SenderLookup
    relay: UpstreamRelay | OutboxRelay
    late: LateGroups | None
    users: UserStore | None
    guard: LoginGuard
    #: Every MAIL needs a login first (``[proxy] auth = "required"``). Not named ``auth_...``:
    #: aiosmtpd offers every handler attribute of that name as an AUTH mechanism.
    login_required: bool
    max_failures: int = 5
    refresh: Callable[[], Awaitable[None]] | None = None
    limit: MessageLimit | None = None
    max_recipients: int = 100
    #: The memory messages may take at once (``proxy.message_memory``); None: not bounded.
    budget: ByteBudget | None = None
    #: Messages being relayed (``handle_DATA``); they run to the end even if their client leaves.
    relaying: set[asyncio.Task[str]] = field(init=False, default_factory=set)

    # ------------------------------------------------------------------ greeting

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.limit is not None:
            # What fits upstream once encrypted; ProxySMTP checks MAIL's SIZE= and the end of DATA against it.
            size = await self.limit.learn()
            server.data_size_limit = size
            responses = [f"250-SIZE {size}" if r.startswith("250-SIZE ") else r for r in responses]
        # aiosmtpd reads pipelined commands in order; say so (RFC 2920).
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    def message_limit(self) -> int | None:
        """The message size that fits now (``session.ProxySMTP`` asks at every MAIL); None when not limited here."""
        return self.limit.current() if self.limit is not None else None

    # ------------------------------------------------------------------ the transaction

    def _login(self, session: Any) -> Credentials | None:
        data = getattr(session, "auth_data", None)
        return data.credentials if isinstance(data, Login) else None

    async def _drop_probe(self, session: Any, *, leaving: bool = False) -> None:
        probe = getattr(session, "mailcrypt_probe", None)
        session.mailcrypt_probe = None
        if probe is not None:
            await self.relay.abandon(probe, leaving=leaving)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.login_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        try:
            check_address("MAIL", address)
        except Refused as exc:
            return exc.reply
        refusal = self._sender_refusal(session, address)
        if refusal is not None:
            log.warning("MAIL FROM %s refused: %s", address, refusal)
            return refusal
        if self.refresh is not None:
            await self.refresh()
        await self._drop_probe(session)
        smtputf8 = "SMTPUTF8" in [o.upper() for o in options]
        try:
            session.mailcrypt_probe = await self.relay.begin(
                reverse_path(address), self._login(session), smtputf8=smtputf8
            )
        except Refused as exc:
            log.warning("MAIL FROM %s: %s", address, exc.reply)
            return exc.reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        envelope.mailcrypt_plans = {}
        return "250 2.1.0 OK"

    def _allowed(self, session: Any) -> Callable[[str], bool] | None:
        """Which addresses the session's login may send as; None when there is no login (``auth = "none"``)."""
        data = getattr(session, "auth_data", None)
        if not isinstance(data, Login):
            return None
        if self.users is None:
            # upstream.login = "client": the upstream server judged the login,
            # which is the one address it stands for (the server checks too).
            own = address_key(data.login)
            return lambda address: address_key(address) == own
        user = self.users.get(data.login)
        if user is None:
            # Removed since it logged in: it may send as nobody.
            return lambda address: False
        return user.may_send_as

    def _sender_refusal(self, session: Any, address: str) -> str | None:
        """553 5.7.1 when the login may not send as ``address`` (the null sender is every login's)."""
        allowed = self._allowed(session)
        if allowed is None or address == "<>" or allowed(address):
            return None
        name = session.auth_data.login
        if self.users is not None and (user := self.users.get(name)) is not None and not user.addresses:
            why = (
                f"Login {name} has no sender address; the administrator assigns one with "
                f"mailcrypt users add {name} --address ADDRESS"
            )
        else:
            why = f"Login {name} may not send as {address}"
        return f"553 5.7.1 {client_text(why)}"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        try:
            check_address("RCPT", address)
        except Refused as exc:
            return exc.reply
        if address == "<>":
            return "501 5.5.2 Syntax error: <> is the null reverse-path, not a recipient (RFC 5321 section 4.1.1.3)"
        plans: dict[str, Plan] = envelope.mailcrypt_plans
        # One recipient once (mailcrypt.addresses.recipient_key: IDNA form, any case).
        key = recipient_key(address)
        if any(recipient_key(a) == key for a in plans):
            return "250 2.1.5 OK (already a recipient)"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            # RFC 5321 §4.5.3.1.10: 452, and the client sends the rest in a later transaction.
            return "452 4.5.3 Too many recipients"
        loop = asyncio.get_running_loop()
        try:
            plan = self.book.cached(address)
            if plan is None:
                plan = await loop.run_in_executor(None, self.book.plan, address)
        except Refused as exc:
            log.warning("RCPT TO %s refused: %s", address, exc.reply)
            return exc.reply
        probe: Probe | None = getattr(session, "mailcrypt_probe", None)
        if probe is not None:
            self.relay.check(probe, address)
        plans[address] = plan
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        await self._drop_probe(session)
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        await self._drop_probe(session, leaving=True)
        return "221 2.0.0 Bye"

    async def handle_DATA_COMMAND(self, server: Any, session: Any, envelope: Any) -> str | None:
        """Before the body: the upstream server's word on the sender and every recipient; a refusal or None."""
        if self.budget is not None:
            # The message's memory first (proxy.budget): a client told to try again later has no
            # upstream transaction left open for it.
            try:
                size = declared_size(envelope.mail_options, server.data_size_limit or self.budget.total)
                hold(session, await self.budget.reserve(min(size, self.budget.total)))
            except Refused as exc:
                await self._drop_probe(session)
                return exc.reply
        probe: Probe | None = getattr(session, "mailcrypt_probe", None)
        if probe is None:
            return None
        try:
            await self.relay.open(probe, envelope.rcpt_tos)
        except Refused as exc:
            log.warning("message from %s refused before its body: %s", envelope.mail_from, exc.reply)
            await self._drop_probe(session)
            return exc.reply
        return None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        probe = getattr(session, "mailcrypt_probe", None)
        session.mailcrypt_probe = None
        message = envelope.content
        mail_from = reverse_path(envelope.mail_from)
        plans: dict[str, Plan] = envelope.mailcrypt_plans
        try:
            # What goes upstream in the clear is checked before anything is made or sent.
            check_message(message, plaintext=any(plans[a].certificate is None for a in envelope.rcpt_tos))
        except Refused as exc:
            await self.relay.abandon(probe)
            log.warning("message from %s refused: %s", envelope.mail_from, exc.reply)
            return exc.reply
        try:
            fields = header_fields(message)
            sender = self.senders(mail_from, from_addresses(fields), self._allowed(session))
            decisions: list[str] = []
            groups = make_groups(message, envelope.rcpt_tos, plans, sender, fields=fields, decisions=decisions)
        except Refused as exc:
            await self.relay.abandon(probe)
            return exc.reply
        except BaseException:
            await self.relay.abandon(probe)
            raise
        message_id = _message_id_hash(fields)
        login = self._login(session)
        smtputf8 = bool(envelope.smtp_utf8)

        async def relay() -> str:
            try:
                delivery = await self.relay.deliver(probe, mail_from, groups, login, smtputf8=smtputf8)
            except errors.MessageError as exc:
                # The MIME layer cannot take this message (the relay has closed any
                # transaction it opened, and nothing was accepted): sending it
                # again would fail the same way, so the refusal is permanent.
                log.warning("message %s from %s cannot be sent: %s", message_id, envelope.mail_from, exc)
                return f"554 5.6.0 {client_text(f'Message refused: {exc}')}"
            if delivery.late and self.late is not None:
                await self.late.handle(delivery.late, mail_from, login, message_id)
            # One line a message: what was decided for each recipient, and the outcome.
            log.info(
                "message %s from %s in %d envelope(s): %s; %s",
                message_id,
                envelope.mail_from,
                len(groups),
                "; ".join(decisions),
                delivery.reply,
            )
            return delivery.reply

        # The relay runs in a task of its own that the client cannot cancel:
        # once the first group went upstream, a client that hangs up must not
        # leave the others unsent, unspooled and unreported (nor a connection
        # in the middle of a message). A stop waits for these (``relaying``).
        task = asyncio.get_running_loop().create_task(relay())
        self.relaying.add(task)
        keep_until_done(session, task)  # The relay holds the message, and its memory, to its end.
        task.add_done_callback(self.relaying.discard)
        task.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            log.warning(
                "message %s from %s: the client left while it was relayed; relaying goes on",
                message_id,
                envelope.mail_from,
            )
            raise

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session failed: %s", error, exc_info=error)
        return "451 4.3.0 Local error in processing; the message was not sent, try again later"

    async def session_closed(self, session: Any) -> None:
        """The client went away: end an open upstream transaction at once."""
        await self._drop_probe(session, leaving=True)

"""The aiosmtpd hooks of the proxy: who may send, to whom, and what the client hears.

- AUTH PLAIN and LOGIN are checked against the ``UserStore`` (scrypt, in a
  worker thread) or, with ``upstream.login = "client"``, against the
  upstream server itself; ``LoginGuard`` slows down and stops guessing.
- MAIL needs a login unless ``proxy.auth = "none"`` (loopback only): 530
  otherwise, so the proxy is never an open relay. With recipient checks on,
  the upstream transaction opens here. The null reverse-path (``MAIL
  FROM:<>``, of read receipts and vacation replies) is relayed as ``<>``;
  an address with a control character is refused (``wire``).
- RCPT decides each recipient at once (STYLE.md §4) by policy and key
  directory: 550 5.7.1 for a ``require`` recipient without a certificate;
  the upstream server is asked about it in the background.
- The DATA command (``handle_DATA_COMMAND``) waits for the upstream
  server's answers; a refusal is the answer to DATA, before the body.
- DATA first checks what would go upstream in the clear (``wire``: the
  header block always, the body when a plaintext copy goes out) and refuses
  a message that breaks the line rules or whose header block is too large
  with a 5xx, then groups, signs, encrypts and relays (``groups``,
  ``relay``) and answers 250 only when every group is accepted upstream, in
  the outbox or in the retry spool; temporary failures are 451, permanent
  ones the server's 5xx, a message the MIME layer cannot take 554 5.6.0.
- ``handle_exception`` logs the details and answers a generic 451.

What it won't do: parse SMTP (aiosmtpd and ``server.ProxySMTP`` do) or log
message content: only addresses, decisions and hashed Message-IDs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult

from mailcrypt import errors
from mailcrypt.addresses import recipient_key
from mailcrypt.mime import Field
from proxy.auth import LoginGuard, UserStore
from proxy.client import LoginRefused, UpstreamUnavailable
from proxy.groups import Plan, RecipientBook, SenderKeys, from_addresses, header_fields, make_groups
from proxy.late import LateGroups
from proxy.relay import Credentials, OutboxRelay, Probe, Refused, UpstreamRelay, client_text
from proxy.wire import check_address, check_message

__all__ = ["ProxyHandler", "Login"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Login:
    """Who logged in; ``credentials`` only when their login also relays (``upstream.login = "client"``)."""

    login: str
    credentials: Credentials | None = field(default=None, repr=False)


def _decode_initial_response(text: str) -> bytes | None:
    """The initial response of an AUTH command, or None when it is not base64.

    RFC 4954 §4: the initial response is base64 (strict: no characters
    outside the alphabet), and a single "=" stands for an empty response.
    """
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


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


class ProxyHandler:
    """The hooks (see the module docstring). ``senders(mail_from, header_from)`` picks the sender's keys."""

    def __init__(
        self,
        *,
        book: RecipientBook,
        senders: Callable[[str, list[str]], SenderKeys],
        relay: UpstreamRelay | OutboxRelay,
        late: LateGroups | None,
        users: UserStore | None,
        guard: LoginGuard,
        auth_required: bool,
    ) -> None:
        self.book = book
        self.senders = senders
        self.relay = relay
        self.late = late
        self.users = users
        self.guard = guard
        self.login_required = auth_required

    # ------------------------------------------------------------------ greeting

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd reads pipelined commands in order; say so (RFC 2920).
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    # ------------------------------------------------------------------ AUTH

    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:
        peer = self._peer(server)
        if await self._locked(server, peer):
            return AuthResult(success=False, handled=True)
        blob = await self._auth_response(server, args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await server.push("501 5.5.2 Cannot split the AUTH PLAIN value")
            return AuthResult(success=False, handled=True)
        return await self._check(server, peer, parts[1], parts[2])

    async def auth_LOGIN(self, server: Any, args: list[str]) -> AuthResult:
        peer = self._peer(server)
        if await self._locked(server, peer):
            return AuthResult(success=False, handled=True)
        user = await self._auth_response(server, args, "Username:")
        if user is None:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._check(server, peer, user, password)

    @staticmethod
    async def _auth_response(server: Any, args: list[str], challenge: str) -> bytes | None:
        """The client's first answer: the initial response on the AUTH line, else the answer to ``challenge``.

        None when the client cancelled or sent what is not base64; it has
        had its 501 reply by then (from here, or from aiosmtpd's
        ``challenge_auth``, which decodes the answers it asks for).
        """
        if len(args) == 1:
            answer = await server.challenge_auth(challenge)
            return None if answer is MISSING else bytes(answer)
        decoded = _decode_initial_response(args[1])
        if decoded is None:
            await server.push("501 5.5.2 Cannot decode base64")
        return decoded

    @staticmethod
    def _peer(server: Any) -> str:
        peer = getattr(server.session, "peer", None)
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    async def _locked(self, server: Any, peer: str) -> bool:
        wait = self.guard.locked_for(peer)
        if wait > 0:
            log.warning("AUTH from %s refused: too many failed logins", peer)
            await server.push(f"454 4.7.0 Too many failed logins; try again in {int(wait) + 1} seconds")
            return True
        return False

    async def _check(self, server: Any, peer: str, user: bytes, password: bytes) -> AuthResult:
        name = user.decode("utf-8", "replace")
        ok, credentials = await self._verify(name, password)
        if not ok:
            delay = self.guard.failed(peer)
            log.warning("failed login as %r from %s", name, peer)
            await asyncio.sleep(delay)
            return AuthResult(success=False, handled=False)
        self.guard.succeeded(peer)
        if credentials is not None and self.late is not None:
            self.late.logins[name] = credentials
        log.info("%s logged in from %s", name, peer)
        return AuthResult(success=True, auth_data=Login(name, credentials))

    async def _verify(self, name: str, password: bytes) -> tuple[bool, Credentials | None]:
        if isinstance(self.relay, UpstreamRelay) and self.users is None:
            # upstream.login = "client": the server is the judge of the login.
            credentials = Credentials(name, password)
            try:
                conn = await self.relay.pool.acquire(credentials, fresh=True)
            except LoginRefused:
                return False, None
            except UpstreamUnavailable as exc:
                log.warning("cannot check a login with the upstream server: %s", exc)
                return False, None
            self.relay.pool.release(conn, credentials, clean=True)
            return True, credentials
        assert self.users is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self.users.verify, name, password), None
        except errors.ConfigError as exc:
            log.error("%s", exc)
            return False, None

    # ------------------------------------------------------------------ the transaction

    def _login(self, session: Any) -> Credentials | None:
        data = getattr(session, "auth_data", None)
        return data.credentials if isinstance(data, Login) else None

    async def _drop_probe(self, session: Any) -> None:
        probe = getattr(session, "mailcrypt_probe", None)
        session.mailcrypt_probe = None
        if probe is not None:
            await self.relay.abandon(probe)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.login_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        try:
            check_address("MAIL", address)
        except Refused as exc:
            return exc.reply
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

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        try:
            check_address("RCPT", address)
        except Refused as exc:
            return exc.reply
        if address == "<>":
            return "501 5.5.2 Syntax error: <> is the null reverse-path, not a recipient (RFC 5321 section 4.1.1.3)"
        plans: dict[str, Plan] = envelope.mailcrypt_plans
        # One recipient once (mailcrypt.addresses.recipient_key: IDNA form, any case).
        if any(recipient_key(a) == recipient_key(address) for a in plans):
            return "250 2.1.5 OK (already a recipient)"
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
        await self._drop_probe(session)
        return "221 2.0.0 Bye"

    async def handle_DATA_COMMAND(self, server: Any, session: Any, envelope: Any) -> str | None:
        """Before the body: the upstream server's word on the sender and every recipient; a refusal or None."""
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
            sender = self.senders(mail_from, from_addresses(fields))
            decisions: list[str] = []
            groups = make_groups(
                message, envelope.rcpt_tos, plans, sender, fields=fields, decisions=decisions, own_copy=bool(mail_from)
            )
        except BaseException:
            await self.relay.abandon(probe)
            raise
        message_id = _message_id_hash(fields)
        login = self._login(session)
        smtputf8 = bool(envelope.smtp_utf8)
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

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session failed: %s", error, exc_info=error)
        return "451 4.3.0 Local error in processing; the message was not sent, try again later"

    async def session_closed(self, session: Any) -> None:
        """The client went away: end an open upstream transaction."""
        await self._drop_probe(session)

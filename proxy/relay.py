"""Relaying finished messages: to the upstream server, or into the outbox Maildir.

A message from the mail client becomes one or more *groups* (``Group``):
the To/Cc recipients share one envelope, every Bcc recipient gets its own,
plaintext copies (where the policy allows them) go separately. Each group
is one SMTP transaction upstream. The mail client hears 250 only when every
group is safe: accepted upstream, or (see below) in the durable retry spool.

Exactly once, nothing lost (issue: the SMTP proxy, item 5):

- Until a group has been accepted, nothing is committed: any refusal is the
  client's answer — 451 for everything temporary (server down, 421, 4xx,
  timeout, connection lost mid-DATA), the server's own 5xx code and reason
  for a permanent refusal — and the client's retry sends everything again.
- With ``check_recipients`` (the default) the recipients are checked with
  the server before the client sends the body: ``begin`` takes a connection
  and sends MAIL at the client's MAIL (a server that is down is the answer
  to MAIL), ``check`` adds each RCPT while the client goes on naming
  recipients (``client.Transaction``, in the background), and at the
  client's DATA command ``open`` reads the answers; a refused address
  refuses the DATA command, naming it. A message without Bcc then goes out
  in that very transaction.
- Once one group was accepted, a later group that fails must neither make
  the client retry (which would send the first group twice) nor be lost: an
  encrypted group goes into the durable ``Spool`` (written and synced before
  the client hears 250) and is retried in the background, with a bounce to
  the sender on a permanent refusal or when ``retry_hours`` have passed.
  Plaintext never touches the disk: the plaintext copies are sent first, so
  only a second plaintext copy can fail late, and that one is bounced
  (the sender learns which recipient did not get it) instead of spooled.
- The outbox (``outbox.OutboxRelay``) stages every group in ``tmp/`` and
  commits them together.

Pooled connections are reused; one that went stale while idle is replaced
before anything of the message was sent on it.

What it won't do: decide recipients or encrypt (``groups`` does), or speak
to the mail client (``handler`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from proxy.client import Connection, Transaction
from proxy.pool import Credentials, Pool
from proxy.smtp import LoginRefused, Reply, UpstreamUnavailable
from proxy.spill import Body

__all__ = [
    "Credentials",
    "Group",
    "Pool",
    "Probe",
    "Late",
    "Delivery",
    "UpstreamRelay",
    "Refused",
    "client_text",
]

log = logging.getLogger(__name__)


@dataclass
class Group:
    """One envelope: its recipients, and how to make the message (``render`` runs just before sending)."""

    recipients: tuple[str, ...]
    render: Callable[[], Awaitable[Body]]
    encrypted: bool
    kind: str  # "to/cc", "bcc", "plaintext" or "plaintext bcc"


class Refused(Exception):
    """The answer for the mail client when a step was refused: ``reply`` is the full SMTP reply line."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def client_text(text: str, limit: int = 300) -> str:
    """Server text made safe for one reply line to the client: printable ASCII, bounded."""
    clean = "".join(c if " " <= c <= "~" else " " for c in " ".join(text.split()))
    return clean[:limit]


def temporary(what: str) -> str:
    return f"451 4.4.1 {client_text(what)}; the message was not sent, try again later"


def permanent(reply: Reply, host: str) -> str:
    code = reply.code if 500 <= reply.code < 600 else 554
    return f"{code} {client_text(f'upstream {host} refused: {reply.text}')}"


# ---------------------------------------------------------------------- upstream


@dataclass
class Probe:
    """A transaction opened at MAIL time, its recipients added at RCPT time, its answers read at DATA."""

    conn: Connection
    login: Credentials | None
    sender: str
    options: list[str]
    transaction: Transaction
    accepted: list[str] = field(default_factory=list)


@dataclass
class Late:
    """A group that failed after another had been accepted: spooled or bounced by the caller."""

    group: Group
    recipients: tuple[str, ...]
    message: Body | None
    reason: str
    permanent: bool


@dataclass
class Delivery:
    """What became of a message: ``reply`` for the client, and groups to spool or bounce."""

    reply: str
    late: list[Late] = field(default_factory=list)


class UpstreamRelay:
    """Relays groups to the upstream server through a ``Pool`` (see the module docstring)."""

    def __init__(self, pool: Pool, *, check_recipients: bool = True) -> None:
        self.pool = pool
        self.check_recipients = check_recipients
        self.host = pool.config.host

    # -------------------------------------------------------------- RCPT time

    async def begin(self, sender: str, login: Credentials | None, *, smtputf8: bool) -> Probe | None:
        """At MAIL time, when recipients are checked: take a connection and send MAIL. Raises ``Refused``.

        MAIL goes out in the background (``client.Transaction``); a server
        that is down or refuses the proxy's login is the answer to MAIL.
        """
        if not self.check_recipients:
            return None
        try:
            conn = await self.pool.acquire(login)
        except UpstreamUnavailable as exc:
            raise Refused(temporary(f"upstream {self.host} unavailable: {exc}")) from None
        except LoginRefused as exc:
            raise Refused(temporary(f"upstream {self.host} refused the proxy's login: {exc.reply}")) from None
        options = [o for o in conn.mail_options(size=0, eight_bit=False, smtputf8=smtputf8) if not o.startswith("SIZE")]
        return Probe(conn, login, sender, options, conn.transaction(sender, options=options))

    def check(self, probe: Probe, recipient: str) -> None:
        """At RCPT time: the server is asked about ``recipient`` in the background; ``open`` tells its answer."""
        probe.transaction.add(recipient)

    async def open(self, probe: Probe, recipients: Sequence[str]) -> None:
        """At the client's DATA command: the server's answers to MAIL and every RCPT. Raises ``Refused``.

        The client hears the server's refusal before it sends the body; a
        refused recipient refuses the message, naming the address and the
        server's reason. When the connection failed on the way (a pooled
        one that went stale), the whole envelope goes once more on a new
        connection, pipelined.
        """
        try:
            mail, rcpts = await probe.transaction.finish()
        except UpstreamUnavailable:
            self.pool.release(probe.conn, probe.login, clean=False)
            try:
                probe.conn = await self.pool.acquire(probe.login, fresh=True)
                mail, rcpts = await probe.conn.envelope(probe.sender, recipients, options=probe.options)
            except (UpstreamUnavailable, LoginRefused) as exc:
                raise Refused(temporary(f"upstream {self.host} unavailable: {exc}")) from None
        if mail.ok and len(rcpts) != len(recipients):
            raise AssertionError("the upstream transaction and the client's recipients differ")
        if not mail.ok:
            raise Refused(
                temporary(f"upstream {self.host} answered MAIL with {mail}")
                if mail.temporary
                else permanent(mail, self.host)
            )
        refused = [(r, reply) for r, reply in zip(recipients, rcpts, strict=True) if not reply.ok]
        probe.accepted = [r for r, reply in zip(recipients, rcpts, strict=True) if reply.ok]
        if not refused:
            return
        # A permanent refusal is the more useful thing to tell: the client must change something.
        worst = next(((r, reply) for r, reply in refused if not reply.temporary), refused[0])
        others = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        address, reply = worst
        if reply.temporary:
            raise Refused(temporary(f"upstream {self.host} answered RCPT TO:<{address}>{others} with {reply}"))
        code = reply.code if 500 <= reply.code < 600 else 554
        raise Refused(f"{code} {client_text(f'upstream {self.host} refused <{address}>{others}: {reply.text}')}")

    async def abandon(self, probe: Probe | None, *, leaving: bool = False) -> None:
        """The client reset (RSET) or, with ``leaving``, went away: end the open transaction.

        A client that leaves frees its upstream transaction at once: the
        connection is closed, which ends the transaction (RFC 5321 §3.3),
        rather than waiting for answers nobody will read. After RSET the
        connection is kept only when every reply was read and RSET's own
        answer is the next one (``Connection.rset``).
        """
        if probe is None:
            return
        if leaving:
            probe.transaction.cancel()
            probe.conn.close()
            self.pool.release(probe.conn, probe.login, clean=False)
            return
        await probe.transaction.settle()
        clean = False
        if not probe.conn.broken:
            try:
                clean = (await probe.conn.rset()).ok
            except UpstreamUnavailable:
                pass
        self.pool.release(probe.conn, probe.login, clean=clean)

    # -------------------------------------------------------------- DATA time

    async def deliver(
        self,
        probe: Probe | None,
        sender: str,
        groups: Sequence[Group],
        login: Credentials | None,
        *,
        smtputf8: bool,
    ) -> Delivery:
        """Send every group (see the module docstring).

        Upstream failures never raise: they become the client's reply, or
        ``Late`` groups once another group was accepted. An exception from
        a group's ``render`` propagates only while nothing is committed.
        """
        order = sorted(groups, key=lambda g: g.encrypted)  # Plaintext first: it can never be spooled.
        reuse = probe is not None and len(order) == 1 and sorted(order[0].recipients) == sorted(probe.accepted)
        conn: Connection | None = probe.conn if probe is not None else None
        if probe is not None and not reuse:
            await self._rset(probe.conn)
        delivery = Delivery("250 2.0.0 OK")
        committed = False
        if reuse and conn is not None:
            # The transaction is open with every recipient accepted: DATA can go
            # now, and the server's 354 comes back while the message is signed
            # and encrypted (one round trip less). Should the message not be
            # made, the connection is closed below, which ends the transaction.
            try:
                await conn.start_data()
            except UpstreamUnavailable:
                pass  # The connection is closed; a new one is opened below.
        for group in order:
            try:
                message = await group.render()
            except Exception as exc:
                if not committed:
                    if conn is not None:
                        self.pool.release(conn, login, clean=False)
                    raise
                log.exception("a later group (%s) could not be made; it is bounced", group.kind)
                delivery.late.append(Late(group, group.recipients, None, f"not sent: {type(exc).__name__}", True))
                continue
            if conn is None or conn.broken:
                conn = None
                # A new connection has no transaction: the envelope is sent on it.
                reuse = False
                try:
                    conn = await self.pool.acquire(login)
                except (UpstreamUnavailable, LoginRefused) as exc:
                    if not committed:
                        return Delivery(temporary(f"upstream {self.host} unavailable: {exc}"))
                    delivery.late.append(Late(group, group.recipients, message, str(exc), False))
                    continue
            outcome = await self._send(conn, sender, group, message, smtputf8=smtputf8, open_envelope=not reuse)
            reuse = False
            if not outcome.refused:
                committed = True
                self.pool.release(conn, login, clean=True)
                conn = None
                continue
            self.pool.release(conn, login, clean=False)
            conn = None
            if not committed:
                return Delivery(outcome.client_reply)
            for addrs, reason, is_permanent in outcome.refused:
                delivery.late.append(Late(group, addrs, message, reason, is_permanent))
        if conn is not None:
            self.pool.release(conn, login, clean=False)
        return delivery

    async def _send(
        self, conn: Connection, sender: str, group: Group, message: Body, *, smtputf8: bool, open_envelope: bool
    ) -> _Outcome:
        """One transaction for one group, all its recipients or none of them."""
        outcome = _Outcome()
        everyone = group.recipients
        try:
            if open_envelope:
                options = conn.mail_options(size=len(message), eight_bit=not message.isascii(), smtputf8=smtputf8)
                mail, rcpts = await conn.envelope(sender, everyone, options=options)
                if not mail.ok:
                    await self._rset(conn)
                    outcome.fail(everyone, mail, self.host)
                    return outcome
                for r, reply in zip(everyone, rcpts, strict=True):
                    if not reply.ok:
                        outcome.fail((r,), reply, self.host)
                if outcome.refused:
                    # A group goes to all its recipients or to none, so that a
                    # first group's refusal can be told to the client whole.
                    await self._rset(conn)
                    refused = {a for addrs, _, _ in outcome.refused for a in addrs}
                    outcome.also((r for r in everyone if r not in refused), "not sent with the refused recipients")
                    return outcome
            reply = await conn.data(message)
        except UpstreamUnavailable as exc:
            outcome.unavailable(everyone, f"upstream {self.host} unavailable: {exc}")
            return outcome
        if not reply.ok:
            outcome.fail(everyone, reply, self.host)
        return outcome

    @staticmethod
    async def _rset(conn: Connection) -> None:
        try:
            if not (await conn.rset()).ok:
                conn.close()
        except UpstreamUnavailable:
            pass

    async def send_one(
        self, sender: str, recipients: Sequence[str], message: bytes, login: Credentials | None
    ) -> Reply:
        """One transaction outside a client session (spool, bounces); raises UpstreamUnavailable, LoginRefused."""
        conn = await self.pool.acquire(login)
        clean = False
        try:
            options = conn.mail_options(size=len(message), eight_bit=not message.isascii(), smtputf8=False)
            mail, rcpts = await conn.envelope(sender, recipients, options=options)
            if not mail.ok:
                return mail
            bad = [r for r in rcpts if not r.ok]
            if bad:
                await self._rset(conn)
                clean = not conn.broken
                return max(bad, key=lambda r: r.code)
            reply = await conn.data(message)
            clean = True
            return reply
        finally:
            self.pool.release(conn, login, clean=clean and not conn.broken)


@dataclass
class _Outcome:
    """Who refused one group's transaction and why, and the reply for the client if it was the first."""

    refused: list[tuple[tuple[str, ...], str, bool]] = field(default_factory=list)
    client_reply: str = ""

    def fail(self, addrs: tuple[str, ...], reply: Reply, host: str) -> None:
        if not addrs:
            return
        is_permanent = not reply.temporary
        text = permanent(reply, host) if is_permanent else temporary(f"upstream {host} answered with {reply}")
        self.refused.append((addrs, str(reply), is_permanent))
        # A permanent refusal is the more useful thing to tell the client.
        if not self.client_reply or (is_permanent and self.client_reply.startswith("4")):
            self.client_reply = text

    def unavailable(self, addrs: tuple[str, ...], reason: str) -> None:
        self.refused.append((addrs, reason, False))
        self.client_reply = temporary(reason)

    def also(self, addrs: Iterable[str], reason: str) -> None:
        rest = tuple(addrs)
        if rest:
            self.refused.append((rest, reason, False))

"""AUTH for the proxy's clients: PLAIN and LOGIN (RFC 4954), checked under the guessing guard.

``AuthHooks`` holds aiosmtpd's ``auth_PLAIN`` and ``auth_LOGIN`` hooks for
``handler.ProxyHandler``: every attempt, on every connection, waits in line
for its turn and its delay (``guard``) before the password is looked at; a
connection that keeps failing is closed. The password is checked against
the proxy's user file (``auth.UserStore``), or, with ``upstream.login =
"client"``, by logging in to the upstream server with it. A successful
login is a ``Login`` in the session's ``auth_data``.

What it won't do: decide what a login may send (``handler`` does, from the
addresses the user file assigns).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult

from mailcrypt import errors
from proxy.auth import UserStore
from proxy.guard import GuardBusy, LoginGuard
from proxy.late import LateGroups
from proxy.outbox import OutboxRelay
from proxy.relay import Credentials, UpstreamRelay
from proxy.smtp import LoginRefused, UpstreamUnavailable

__all__ = ["AuthHooks", "Login"]

# The AUTH hooks are the handler's: their log lines keep its logger name, which operators filter on.
log = logging.getLogger("proxy.handler")


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


class AuthHooks:
    """aiosmtpd's AUTH hooks; the handler that inherits them sets the attributes below."""

    users: UserStore | None
    guard: LoginGuard
    relay: UpstreamRelay | OutboxRelay
    late: LateGroups | None
    max_failures: int

    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:
        peer = self._peer(server)
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

    async def _check(self, server: Any, peer: str, user: bytes, password: bytes) -> AuthResult:
        name = user.decode("utf-8", "replace")
        try:
            # Every attempt, on every connection, waits in line for its turn and
            # its delay before the password is looked at (guard's docstring).
            async with self.guard.turn(peer):
                await self.guard.attempt(peer, name)
                ok, credentials = await self._verify(name, password)
                if ok:
                    self.guard.succeeded(peer, name)
                else:
                    self.guard.failed(peer, name)
        except GuardBusy:
            log.warning("AUTH from %s refused: too many login attempts waiting", peer)
            await server.push("454 4.7.0 Too many login attempts waiting from your address; try again later")
            return AuthResult(success=False, handled=True)
        if not ok:
            log.warning("failed login as %r from %s", name, peer)
            failures = getattr(server.session, "mailcrypt_failures", 0) + 1
            server.session.mailcrypt_failures = failures
            if failures >= self.max_failures:
                # Like Postfix's smtpd_hard_error_limit: a connection that keeps
                # failing is closed; the delay still applies to the next one.
                await server.push("421 4.7.0 Too many failed logins; closing the connection")
                server.transport.close()
                return AuthResult(success=False, handled=True)
            return AuthResult(success=False, handled=False)
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

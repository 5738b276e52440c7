"""Connections to the upstream server, kept open for reuse.

``Pool.acquire`` hands out a connection logged in as the given
``Credentials`` (or the configured ones): an idle one when there is one,
not older than ``idle_seconds`` (servers drop idle clients after a while),
else a new one, whose EHLO keywords become ``extensions`` (so what the
server offers, its SIZE among it, is followed when the pool reconnects).
``release`` keeps a connection that is between
transactions and closes anything else.

What it won't do: retry, or decide what a failure means (``relay``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import KW_ONLY, dataclass, field

from proxy.client import Connection
from proxy.smtp import ServerConfig

__all__ = ["Credentials", "Pool"]


@dataclass(frozen=True)
class Credentials:
    """A login for the upstream server. The password never appears in ``repr``."""

    username: str
    password: bytes = field(repr=False)


@dataclass(eq=False)
class Pool:
    """Open connections to one server, kept for reuse (per login) for up to ``idle_seconds``."""

    config: ServerConfig
    _: KW_ONLY
    credentials: Credentials | None = None
    max_idle: int = 16
    idle_seconds: float = 30.0
    _idle: list[tuple[Credentials | None, Connection, float]] = field(default_factory=list, init=False, repr=False)
    #: What the server offered at the latest new connection's EHLO; None before the first one.
    extensions: dict[str, str] | None = field(default=None, init=False)

    async def acquire(self, login: Credentials | None = None, *, fresh: bool = False) -> Connection:
        """A connection logged in as ``login`` (else the configured credentials).

        Raises ``UpstreamUnavailable`` and ``LoginRefused``.
        """
        creds = login or self.credentials
        now = time.monotonic()
        while not fresh and self._idle:
            for i, (who, conn, since) in enumerate(self._idle):
                if who == creds:
                    del self._idle[i]
                    if conn.in_step and now - since < self.idle_seconds:
                        return conn
                    conn.close()
                    break
            else:
                break
        conn = await Connection.open(
            self.config, username=creds.username if creds else None, password=creds.password if creds else None
        )
        self.extensions = conn.extensions
        return conn

    def release(self, conn: Connection, login: Credentials | None = None, *, clean: bool) -> None:
        """Give a connection back: kept if it is between transactions, else closed."""
        if not clean or not conn.in_step or len(self._idle) >= self.max_idle:
            conn.close()
            return
        self._idle.append((login or self.credentials, conn, time.monotonic()))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(conn.quit() for _, conn, _ in idle), return_exceptions=True)

"""How large a message the proxy takes: what still fits the upstream server's SIZE once encrypted.

The proxy advertises SIZE (RFC 1870) to its clients. Encryption makes a
message larger: the CMS content is base64 in lines of 76 characters and
CRLF (RFC 2045 §6.8), 57 bytes becoming 78, a factor of 1.368; beside it
come the outer header fields, the signature with its certificates, the
MIME wrappers and one RecipientInfo per recipient. A message the proxy
accepts must still fit the upstream server's own limit, or the client would
learn only after uploading it that it cannot go out. So ``MessageLimit``
offers ``fitting_size``: the upstream server's SIZE less a bound on what
encryption adds, divided by ``GROWTH``, never above ``proxy.max_message_size``.

The upstream server's SIZE is read from its EHLO reply on every new
connection (``Pool.extensions``), so a limit changed there is followed when
the pool reconnects. Before the first connection ``learn`` opens one (at a
client's EHLO), waiting at most ``wait`` seconds for it and trying again at
most every ``retry`` seconds while the server cannot be reached; until then
the configured limit stands, and the end of DATA checks again.

What it won't do: refuse anything itself (``session.ProxySMTP`` answers
``MAIL ... SIZE=`` and the end of DATA with 552 5.3.4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import KW_ONLY, dataclass, field

from proxy.pool import Pool
from proxy.smtp import LoginRefused, UpstreamUnavailable

__all__ = ["GROWTH", "MessageLimit", "fitting_size", "upstream_size"]

log = logging.getLogger(__name__)

#: How much larger encryption makes the content: base64 with a CRLF every 76 characters is 78/57 (1.368).
GROWTH = 1.37
#: Room for the outer header fields, the signature and its certificates, and the MIME and CMS wrappers.
FIXED_OVERHEAD = 64 * 1024
#: Room for one RecipientInfo: an RSA-4096 KeyTransRecipientInfo with a long issuer name is under 1.5 KiB.
PER_RECIPIENT = 2048


def upstream_size(extensions: dict[str, str] | None) -> int | None:
    """The server's fixed maximum message size from its EHLO keywords; None when it has none.

    RFC 1870 §4: "SIZE" without a number, or "SIZE 0", means no fixed maximum.
    """
    if extensions is None or "size" not in extensions:
        return None
    text = extensions["size"].strip()
    if not text.isdigit() or int(text) == 0:
        return None
    return int(text)


def fitting_size(configured: int, upstream: int | None, *, recipients: int) -> int:
    """The largest message whose encrypted form fits ``upstream`` (for up to ``recipients``), at most ``configured``.

    At least 1: aiosmtpd reads a limit of 0 as "no limit".
    """
    if upstream is None:
        return configured
    # Every recipient of an envelope and the sender's own copy get a RecipientInfo.
    room = upstream - FIXED_OVERHEAD - PER_RECIPIENT * (recipients + 1)
    return max(1, min(configured, int(room / GROWTH)))


@dataclass(eq=False)
class MessageLimit:
    """The SIZE the proxy advertises and enforces (see the module docstring)."""

    configured: int
    _: KW_ONLY
    recipients: int
    pool: Pool | None
    wait: float = 2.0
    retry: float = 30.0
    _probe: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _tried: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # As if the last probe was ``retry`` seconds before the clock's zero, so the first one may start at once.
        self._tried = -self.retry

    def current(self) -> int:
        """What fits, from what the upstream server said at its latest EHLO."""
        upstream = upstream_size(self.pool.extensions) if self.pool is not None else None
        return fitting_size(self.configured, upstream, recipients=self.recipients)

    async def learn(self) -> int:
        """``current``, after connecting to the upstream server once when it never was (bounded by ``wait``)."""
        pool = self.pool
        if pool is not None and pool.extensions is None:
            now = time.monotonic()
            if self._probe is None and now - self._tried >= self.retry:
                self._tried = now
                self._probe = asyncio.get_running_loop().create_task(self._connect(pool))
            if self._probe is not None:
                # The probe goes on when the wait ends: a slow server delays one greeting at most by ``wait``.
                await asyncio.wait({self._probe}, timeout=self.wait)
        return self.current()

    async def _connect(self, pool: Pool) -> None:
        try:
            conn = await pool.acquire()
        except (UpstreamUnavailable, LoginRefused) as exc:
            log.warning("cannot learn the upstream server's SIZE yet: %s", exc)
        else:
            pool.release(conn, clean=True)
        finally:
            self._probe = None

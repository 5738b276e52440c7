"""The one sign-then-encrypt pipeline of outgoing mail (DESIGN.md §2), on a message held in pieces.

``mailcrypt encrypt`` and the SMTP proxy send a message the same way:

1. ``signed.sign_message_parts`` signs it once, when the sender has an
   identity: canonical CRLF form, protected headers without Bcc, a fresh
   Message-ID, a detached signature. The result is a few pieces around the
   caller's own body buffer, which is neither copied nor joined;
2. ``ChainReader`` reads those pieces as one seekable file, so that
   ``enveloped.encrypt_stream`` encrypts them (for each envelope, when the
   proxy makes several) without joining them either.

It also says which steps are cheap enough to run where the caller is: a
signature with an EC key on a small message, and the encryption of a small
message, take a fraction of a millisecond, less than handing the work to a
worker thread; an RSA private-key operation takes about a millisecond, run
by OpenSSL without the GIL, so in a thread it leaves an event loop free.

What it won't do: decide whom to sign for or encrypt to, run threads, or
touch sockets and files; the callers (``cli``, ``proxy``) do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import rsa

from mailcrypt.envelope import Signer

__all__ = ["INLINE_LIMIT", "ChainReader", "encrypts_inline", "signs_inline"]

#: Messages up to this size are signed (with an EC key) and encrypted where the caller runs.
INLINE_LIMIT = 256 * 1024


def signs_inline(size: int, signer: Signer) -> bool:
    """Whether signing a message of ``size`` bytes costs less than a thread hop (see the module docstring)."""
    return size <= INLINE_LIMIT and not isinstance(signer.key, rsa.RSAPrivateKey)


def encrypts_inline(size: int) -> bool:
    """Whether encrypting a message of ``size`` bytes costs less than a thread hop."""
    return size <= INLINE_LIMIT


class ChainReader:
    """A read-only, seekable file over several byte strings, without joining them."""

    def __init__(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        self._parts = [memoryview(p).cast("B") for p in parts if len(p)]
        self._size = sum(len(p) for p in self._parts)
        self._pos = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        out = []
        start = 0
        for part in self._parts:
            stop = start + len(part)
            if stop > self._pos and start < end:
                out.append(part[max(0, self._pos - start) : min(len(part), end - start)])
            start = stop
        self._pos = max(self._pos, end)
        return b"".join(out)

"""A large encrypted message kept on disk, not in memory, between encryption and relaying.

Encryption makes a message about 1.37 times larger (base64). Held in memory
beside the client's message, one 40 MB message took more than four times its
size (the output in a growing buffer, then copied out of it); three at once,
three times that. The client's message must stay in memory (it is signed and
encrypted once for every envelope), but the encrypted copy need not:
``Spilled`` takes what ``encrypt_stream`` writes and puts it in a temporary
file, so the proxy holds one message and a piece of another, about 1x its
size, however large it is.

The file never holds what it is given: each piece of ``PIECE`` bytes is
sealed with AES-256-GCM under a random key that lives only in this object
(the nonce is the piece's number; the last piece is marked in the associated
data, so a file cut short or pieces reordered fail to open). The file is
unlinked as it is made (``tempfile.TemporaryFile``: O_TMPFILE on Linux), so
nothing is left behind by a crash, and the key dies with the process.
Encrypted mail is not secret from the upstream server anyway, but the outer
header fields and a message's size are worth as little exposure as possible.

``Spilled`` stands in for the message's bytes where the relay needs them:
``len``, ``isascii``, and ``pieces`` to send it (``client.Connection.data``)
or write it (spool, outbox). ``Body`` is either.

What it won't do: encrypt mail (``mailcrypt.mime`` does) or decide when to
spill (``groups`` does, for messages over ``SPILL_OVER``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SPILL_OVER", "Body", "Spilled", "body_pieces"]

#: Encrypted messages larger than this are spilled (below it, a file costs more than the memory).
SPILL_OVER = 1 << 20
PIECE = 1 << 20
_TAG = 16


class Spilled:
    """A write-once, read-many temporary file of sealed pieces (see the module docstring).

    Written like a binary file (``write``, ``writelines``), then ``seal``
    ends the writing; read back with ``pieces`` as often as needed;
    ``close`` (or garbage collection) removes it. Raises
    ``cryptography.exceptions.InvalidTag`` when the file was changed.
    """

    def __init__(self, directory: str | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self._pending = bytearray()
        self._count = 0
        self._size = 0
        self._ascii = True
        self._sealed = False

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        if self._sealed:
            raise ValueError("the spilled message is sealed")
        self._pending += data
        while len(self._pending) >= PIECE:
            self._put(bytes(self._pending[:PIECE]), last=False)
            del self._pending[:PIECE]
        return len(data)

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview], /) -> None:
        for line in lines:
            self.write(line)

    def seal(self) -> Spilled:
        """End the writing: the last piece goes out (an empty one for an empty message)."""
        if not self._sealed:
            self._put(bytes(self._pending), last=True)
            self._pending = bytearray()
            self._sealed = True
            self._file.flush()
        return self

    def _put(self, piece: bytes, *, last: bool) -> None:
        self._size += len(piece)
        self._ascii = self._ascii and piece.isascii()
        self._file.write(self._aead.encrypt(self._nonce(self._count), piece, b"last" if last else b""))
        self._count += 1

    @staticmethod
    def _nonce(number: int) -> bytes:
        # One key per file and one number per piece: a nonce is never used twice under a key.
        return number.to_bytes(12, "big")

    def __len__(self) -> int:
        return self._size

    def isascii(self) -> bool:
        return self._ascii

    def pieces(self) -> Iterator[bytes]:
        """The message, piece by piece, each checked before it is given out."""
        if not self._sealed:
            raise ValueError("the spilled message is still being written")
        self._file.seek(0)
        for number in range(self._count):
            last = number == self._count - 1
            sealed = self._file.read(PIECE + _TAG)
            yield self._aead.decrypt(self._nonce(number), sealed, b"last" if last else b"")

    def close(self) -> None:
        self._file.close()

    def __del__(self) -> None:
        # Closed here, not left to the file object, which would warn of a file left open.
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()


#: A message as the relay hands it on: its bytes, or a ``Spilled`` file.
Body = bytes | Spilled


def body_pieces(body: bytes | bytearray | memoryview | Spilled) -> Iterator[bytes | memoryview]:
    """The message in pieces for writing, without copying bytes that are in memory already."""
    if isinstance(body, Spilled):
        yield from body.pieces()
    else:
        yield memoryview(body)

"""Content-Transfer-Encoding of S/MIME bodies: base64 lines out, tolerant base64 in.

``Base64Lines`` writes base64 in CRLF-terminated 76-character lines (RFC 2045
§6.8) from pieces of any size, fast enough for a 25 MB attachment.
``decode_body`` turns an S/MIME body (base64, or raw DER however it is
labelled) into the DER of its ContentInfo, accepting any line length and
refusing anything that is not base64 or white space.

What it won't do: read headers or decide whether a message is S/MIME
(``enveloped`` does).
"""

from __future__ import annotations

import binascii
import itertools
import struct
from collections.abc import Iterator

import pybase64

from mailcrypt import errors

__all__ = ["Base64Lines", "Base64Decoder", "decode_body", "encode_lines"]

# RFC 2045 §6.8: at most 76 characters a line; 57 bytes make exactly 76.
_LINE_BYTES = 57
_LINE_CHARS = 76
# Lines are cut by struct in C, 1024 at a time: a Python loop over the
# 450 000 lines of a 25 MB message would cost several times as much.
_LINES = struct.Struct(f"{_LINE_CHARS}s" * 1024)
_BLOCK_BYTES = _LINE_BYTES * 1024
_WHITESPACE = b" \t\r\n"


class Base64Lines:
    """Base64 in CRLF-terminated 76-character lines, fed in pieces of any size.

    ``feed`` and ``finish`` return a list of output blocks to write in order.
    """

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> list[bytes]:
        view = memoryview(data)
        out: list[bytes] = []
        if self._carry:
            # Complete the pending line alone rather than copying all of ``data``.
            need = _LINE_BYTES - len(self._carry)
            if len(view) < need:
                self._carry += bytes(view)
                return out
            out.append(encode_lines(self._carry + bytes(view[:need])))
            view = view[need:]
        whole = len(view) - len(view) % _LINE_BYTES
        self._carry = bytes(view[whole:])
        # Blocks of 1024 lines keep the work in the CPU cache; one struct call cuts each.
        out.extend(encode_lines(view[i : min(i + _BLOCK_BYTES, whole)]) for i in range(0, whole, _BLOCK_BYTES))
        return out

    def finish(self) -> list[bytes]:
        out = [encode_lines(self._carry)] if self._carry else []
        self._carry = b""
        return out


def encode_lines(data: bytes | memoryview) -> bytes:
    encoded = pybase64.b64encode(data)
    if len(encoded) == _LINES.size:
        lines = list(_LINES.unpack(encoded))
    else:
        lines = [encoded[i : i + _LINE_CHARS] for i in range(0, len(encoded), _LINE_CHARS)]
    lines.append(b"")  # The last line ends with CRLF too.
    return b"\r\n".join(lines)


def decode_body(chunks: Iterator[bytes], encoding: str) -> bytearray:
    if encoding in ("", "binary", "8bit", "7bit"):
        # Senders label raw DER in several ways and sometimes mislabel base64.
        # A CMS ContentInfo starts with a SEQUENCE tag (0x30); base64 of one
        # starts with "M", and white space is never the start of DER.
        first = next((c for c in chunks if c), b"")
        if first[:1] == b"\x30":
            der = bytearray(first)
            for chunk in chunks:
                der += chunk
            return _non_empty(der)
        chunks = itertools.chain((first,), chunks)
    elif encoding != "base64":
        raise errors.CMSParseError(f"unsupported Content-Transfer-Encoding {encoding!r} for S/MIME")
    decoder = Base64Decoder()
    for chunk in chunks:
        decoder.feed(chunk)
    return _non_empty(decoder.finish())


def _non_empty(der: bytearray) -> bytearray:
    if not der:
        raise errors.CMSParseError("the S/MIME message has an empty body")
    return der


class Base64Decoder:
    """Base64 text of any line length to bytes, rejecting anything but base64 and white space.

    The fast path hands whole lines that hold nothing but base64 characters
    and line breaks to the lenient C decoder, which skips the line breaks;
    any other piece (padding, spaces, garbage, a line not a multiple of four
    characters long) goes through the strict decoder after removing white
    space, which raises on anything else.
    """

    def __init__(self) -> None:
        self.der = bytearray()
        self._tail = b""  # an unfinished line
        self._quad = b""  # base64 characters not yet decoded (fewer than 4, or the padded end)

    def feed(self, chunk: bytes) -> None:
        cut = chunk.rfind(b"\n") + 1 or len(chunk)
        piece = b"".join((self._tail, memoryview(chunk)[:cut]))
        self._tail = chunk[cut:]
        self._decode(piece)

    def finish(self) -> bytearray:
        self._decode(self._tail)
        quad = self._quad
        if len(quad) == 1:
            raise errors.CMSParseError("truncated base64 in the message body")
        if quad:
            self._strict(quad + b"=" * (-len(quad) % 4))  # Lenient about missing padding.
        return self.der

    def _decode(self, piece: bytes) -> None:
        if not self._quad:
            # Fast path: RFC 2045 §6.8 has decoders ignore characters outside the
            # base64 alphabet (line breaks, and any other); the SIMD decoder does
            # that without a separate pass. Whatever breaks the grouping in fours
            # or carries padding takes the strict path below, which names it.
            if b"=" not in piece:
                try:
                    self.der += pybase64.b64decode(piece, validate=False)
                    return
                except binascii.Error:
                    pass
        clean = self._quad + piece.translate(None, _WHITESPACE)
        pad = clean.find(b"=")
        whole = (len(clean) if pad < 0 else pad) & ~3
        self._strict(clean[:whole])
        self._quad = clean[whole:]
        if pad >= 0 and len(self._quad) > 4:
            raise errors.CMSParseError("data after the end of the base64 text in the message body")

    def _strict(self, text: bytes) -> None:
        try:
            self.der += pybase64.b64decode(text, validate=True)
        except binascii.Error:
            raise errors.CMSParseError("the message body is not valid base64") from None

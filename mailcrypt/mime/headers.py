"""Header blocks of RFC 5322 messages, handled as raw bytes.

The MIME layer (``mailcrypt.mime.enveloped``) must copy header fields into the
encrypted part byte for byte, with their original folding, and put them back
on decryption. The ``email`` package re-folds and re-encodes what it parses,
so this module splits a header block into raw fields itself, reads
Content-Type parameters with a small RFC 2045 parser, and uses ``email``
only for the addresses in To and Cc and the date of a ``Received`` field (imported there, as importing ``email``
costs a CLI run more time than decrypting a megabyte).

It implements header protection in Thunderbird's ``protected-headers="v1"``
convention, which RFC 9788 header protection (``hp="cipher"``) also reads
(DESIGN.md §3): the complete header block travels inside the encryption, the
outer message keeps only what transport needs, with the Subject replaced by
``[...]``.

What it won't do: parse bodies, decode encoded words, or look at anything
past the first empty line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mailcrypt.addresses import recipient_key

__all__ = [
    "HEADER_LIMIT",
    "Field",
    "split_fields",
    "read_header_block",
    "content_type",
    "protect",
    "sendable_fields",
    "outer_fields",
    "restore",
    "recipient_addresses",
    "received_time",
]

#: The most header bytes held in memory before giving up on a message.
HEADER_LIMIT = 1 << 20

#: Appended to the inner Content-Type; removed again on decryption only when
#: it is exactly this, so that a foreign Content-Type is never rewritten.
PROTECTED_SUFFIX = b';\r\n protected-headers="v1"'

#: The Content-Type of a protected part whose message had none (RFC 2045 §5.2 default).
ADDED_CONTENT_TYPE = b'Content-Type: text/plain; charset="us-ascii"; protected-headers="v1"\r\n'

SUBJECT_PLACEHOLDER = b"Subject: [...]\r\n"

# Fields that never leave the sender, inside or outside (RFC 5322 §3.6.3).
_HIDDEN = frozenset({"bcc", "resent-bcc"})

# Trace fields are added in transit and may legitimately repeat the name of
# a field the sender wrote; they are compared by value, not by name.
_TRACE = frozenset({"received", "dkim-signature", "authentication-results",
                    "arc-seal", "arc-message-signature", "arc-authentication-results"})

# The fields a sender protects (RFC 9788 §2, the originator and addressing
# fields of RFC 5322 §3.6). When a message carries protected headers, an outer
# copy of one of these that the inner block lacks was added in transit, maybe
# by an attacker (a Reply-To of their own): it is not carried into the
# decrypted message, where it would look protected.
_PROTECTABLE = frozenset({
    "from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id",
    "in-reply-to", "references", "followup-to", "mail-followup-to", "mail-reply-to",
    "keywords", "comments",
})

# A field name (RFC 5322 §3.6.8: printable ASCII except colon), optionally
# followed by obsolete white space before the colon (§4.5).
_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*:")
_NAME_CHARS = re.compile(rb"[!-9;-~]*[ \t]*")
# One field: its first line and the lines folded onto it (they start with white
# space, RFC 5322 §2.2.3). Only LF ends a line: a stray CR inside a field stays part of it.
_WHOLE_FIELD = re.compile(rb"(?:[^\n]*\n|[^\n]+\Z)(?:[ \t][^\n]*(?:\n|\Z))*")
# Field names and Content-Type values already decoded, by their bytes; only short
# ones, and at most this many, so that hostile headers cannot fill the memory.
_names: dict[bytes, str] = {}
_content_types: dict[bytes, tuple[str, dict[str, str]]] = {}
_MEMO_BYTES = 1024
_MEMO_ENTRIES = 1024
_FOLD = re.compile(r"\r?\n(?=[ \t])")
# RFC 2045 §5.1: parameter := attribute "=" value; value := token / quoted-string.
_PARAMETER = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]*)')
_QUOTED_PAIR = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Field:
    """One header field: ``raw`` is every byte of it, line ends included."""

    name: str  # lower case; "" for a line that is not a field
    raw: bytes

    @property
    def value(self) -> str:
        """The unfolded value, decoded as UTF-8 (RFC 6532) with replacement."""
        text = self.raw.partition(b":")[2].decode("utf-8", "replace")
        return _FOLD.sub("", text).strip()

    def is_mime(self) -> bool:
        return self.name.startswith("content-") or self.name == "mime-version"


def split_fields(block: bytes) -> list[Field]:
    """Split a header block into fields; joining their ``raw`` gives ``block`` back."""
    return [_field(raw) for raw in _WHOLE_FIELD.findall(block)]


def _field(raw: bytes) -> Field:
    match = _FIELD_START.match(raw)
    if match is None:
        return Field("", raw)
    # Every message repeats the same few names; decoding them once is measurably cheaper.
    start = raw[: match.end()]
    name = _names.get(start)
    if name is None:
        name = start[:-1].rstrip(b" \t").decode("ascii").lower()
        if len(start) <= _MEMO_BYTES:
            if len(_names) >= _MEMO_ENTRIES:
                _names.clear()
            _names[start] = name
    return Field(name, raw)


def _find_end(buf: bytes | bytearray, start: int, eof: bool) -> tuple[int, int] | None:
    """Where the header block ends and the body starts, or None for "read more"."""
    if not _FIELD_START.match(buf):
        if buf[:1] == b"\n" or buf[:2] == b"\r\n":
            return 0, buf.index(b"\n") + 1  # An empty header block.
        if not eof and (buf == b"\r" or _NAME_CHARS.fullmatch(buf)):
            return None  # The first field name may still be arriving.
        return 0, 0  # No header block at all: everything is body.
    # The earlier of the two separators wins. The LF LF search stops where the
    # CRLF one was found: in a CRLF message it would otherwise scan the whole
    # body for nothing, and a fetch reads every message's header block six times.
    crlf = buf.find(b"\n\r\n", start)
    lf = buf.find(b"\n\n", start) if crlf < 0 else buf.find(b"\n\n", start, crlf + 1)
    if lf >= 0:
        return lf + 1, lf + 2
    if crlf >= 0:
        return crlf + 1, crlf + 3
    return (len(buf), len(buf)) if eof else None


def read_header_block(chunks: Iterator[bytes], error: type[Exception]) -> tuple[bytes, bytes, bytes]:
    """Pull chunks until the first empty line; return (header block, separator, rest).

    ``rest`` is what was read beyond the separator; the body continues with
    ``chunks``. Raises ``error`` when the header block exceeds ``HEADER_LIMIT``.
    """
    first = next(chunks, None)
    if type(first) is bytes:
        # A whole message in one piece is the common case: look for the end in it
        # directly, without first copying it into the buffer below.
        end = _find_end(first, 0, False)
        if end is not None and end[0] <= HEADER_LIMIT:
            return first[: end[0]], first[end[0] : end[1]], first[end[1] :]
    buf = bytearray()
    eof = False
    pushed = first is not None
    while True:
        start = max(0, len(buf) - 2)
        if pushed:
            chunk, pushed = first, False
        else:
            chunk = next(chunks, None)
        if chunk is None:
            eof = True
        else:
            buf += chunk
        end = _find_end(buf, start, eof)
        if end is not None:
            header_end, body_start = end
            if header_end > HEADER_LIMIT:
                break
            return bytes(buf[:header_end]), bytes(buf[header_end:body_start]), bytes(buf[body_start:])
        if len(buf) > HEADER_LIMIT:
            break
    raise error(f"the header block is larger than {HEADER_LIMIT} bytes")


def content_type(fields: list[Field]) -> tuple[str, dict[str, str]]:
    """The media type and parameters of the first Content-Type field.

    Type and parameter names come in lower case, values as written (quotes
    removed). RFC 2231 continuations are not joined: the parameters read
    here (smime-type, name, protected-headers, hp) never use them. A missing
    or malformed type is text/plain (RFC 2045 §5.2).
    """
    for f in fields:
        if f.name == "content-type":
            # Messages repeat the same few Content-Type fields and each is read
            # several times on its way through the fetcher: remember the answers.
            known = _content_types.get(f.raw)
            if known is None:
                known = _parse_content_type(f.value)
                if len(f.raw) <= _MEMO_BYTES:
                    if len(_content_types) >= _MEMO_ENTRIES:
                        _content_types.clear()
                    _content_types[f.raw] = known
            return known[0], dict(known[1])  # a copy: the caller may change it
    return "text/plain", {}


def _parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    mtype = value.split(";", 1)[0].strip().lower()
    params: dict[str, str] = {}
    for name, param in _PARAMETER.findall(value):
        if param.startswith('"'):
            param = _QUOTED_PAIR.sub(r"\1", param[1:-1])
        params.setdefault(name.lower(), param)
    return (mtype if mtype.count("/") == 1 else "text/plain"), params


def _crlf(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\r\n") else raw.rstrip(b"\r\n") + b"\r\n"


def protect(fields: list[Field]) -> bytes:
    """The header block of the part that gets encrypted, with its empty line.

    Every field but Bcc, in the original order and folding; the first
    Content-Type gets ``protected-headers="v1"`` appended.
    """
    out = []
    marked = False
    for f in fields:
        if f.name in _HIDDEN:
            continue
        raw = _crlf(f.raw)
        if f.name == "content-type" and not marked:
            raw = raw[:-2] + PROTECTED_SUFFIX + b"\r\n"
            marked = True
        out.append(raw)
    if not marked:
        out.append(ADDED_CONTENT_TYPE)
    out.append(b"\r\n")
    return b"".join(out)


def sendable_fields(fields: Sequence[Field], *, mime: bool = True) -> bytes:
    """The fields that may leave the sender, in order, with CRLF line ends.

    Every field but Bcc (RFC 5322 §3.6.3: it never leaves); without
    Content-* and MIME-Version when ``mime`` is False, for the header of a
    signed message around its signed entity.
    """
    return b"".join(_crlf(f.raw) for f in fields if f.name not in _HIDDEN and (mime or not f.is_mime()))


def outer_fields(fields: list[Field]) -> bytes:
    """The fields the outer message keeps: no Content-*, MIME-Version or Bcc; Subject is ``[...]``."""
    out = []
    subject = False
    for f in fields:
        if f.is_mime() or f.name in _HIDDEN:
            continue
        if f.name == "subject":
            if not subject:
                out.append(SUBJECT_PLACEHOLDER)
                subject = True
            continue
        out.append(_crlf(f.raw))
    return b"".join(out)


def restore(outer: list[Field], inner_block: bytes) -> bytes:
    """The header block of the decrypted message.

    With protected headers inside, the inner block is authoritative; outer
    fields are added only when the inner block lacks them (trace fields
    added in transit), never protectable ones such as From, Reply-To or the
    ``[...]`` Subject placeholder. Without,
    the outer fields (minus Content-*) come first, then the inner block.
    """
    inner = split_fields(inner_block)
    _, params = content_type(inner)
    names = {f.name for f in inner}
    if params.get("protected-headers", "").lower() == "v1" or params.get("hp", "").lower() == "cipher":
        raws = {_crlf(f.raw) for f in inner}
        kept = [
            f for f in outer
            if not f.is_mime()
            and f.name not in _PROTECTABLE
            and (f.name not in names or (f.name in _TRACE and _crlf(f.raw) not in raws))
        ]
        for i, f in enumerate(inner):
            if f.name == "content-type":
                if f.raw.endswith(PROTECTED_SUFFIX + b"\r\n"):
                    inner[i] = Field(f.name, f.raw[: -len(PROTECTED_SUFFIX) - 2] + b"\r\n")
                break
    else:
        # A MIME-Version stays so that the inner Content-Type is still read as MIME.
        kept = [f for f in outer if not f.is_mime() or (f.name == "mime-version" and f.name not in names)]
    return b"".join(_crlf(f.raw) for f in kept) + b"".join(f.raw for f in inner)


def _addresses(header_block: bytes, names: tuple[str, ...]) -> list[str]:
    """The unique addr-specs in the fields ``names`` of a header block (see ``addresses_in``)."""
    if not isinstance(header_block, (bytes, bytearray, memoryview)):
        raise TypeError("header_block must be bytes")
    block = bytes(header_block)
    end = _find_end(block, 0, True)
    assert end is not None  # eof=True always decides.
    return addresses_in(split_fields(block[: end[0]]), names)


def addresses_in(fields: Sequence[Field], names: tuple[str, ...]) -> list[str]:
    """The unique addr-specs in the fields ``names``, in order of appearance.

    Duplicates are recognised case-insensitively; the first spelling wins.
    Group syntax and empty entries ("undisclosed-recipients:;") yield nothing.
    """
    return list(_parse_addresses(tuple(f.value for f in fields if f.name in names)))


@functools.lru_cache(maxsize=256)
def _parse_addresses(values: tuple[str, ...]) -> tuple[str, ...]:
    # The e-mail parser takes tens of microseconds a field, and a sender
    # writes to the same people again and again; the result depends on the
    # values alone, so remembering it is exact.
    import email.utils

    seen: dict[str, str] = {}
    for _, addr in email.utils.getaddresses(list(values)):
        if "@" in addr:
            seen.setdefault(recipient_key(addr), addr)
    return tuple(seen.values())


def recipient_addresses(header_block: bytes) -> list[str]:
    """The unique addr-specs in To and Cc, in order of appearance."""
    return _addresses(header_block, ("to", "cc"))


def sender_address(header_block: bytes) -> str | None:
    """The addr-spec of the From field (the first, if it names several), or None."""
    found = _addresses(header_block, ("from",))
    return found[0] if found else None


def received_time(header_block: bytes) -> datetime | None:
    """When the message reached its recipient's server: the date of the topmost ``Received`` field.

    Each server that relays a message prepends a ``Received`` field, so the
    topmost one was added by the last, the receiving server (RFC 5322
    §3.6.7). Its date-time follows the last ";" of the field (``received =
    "Received:" [1*received-token / CFWS] ";" date-time CRLF``). Returns an
    aware UTC datetime, or None when there is no such field or its date
    cannot be read (a zone-less date is taken as UTC, RFC 5322 §4.3's "-0000").
    """
    received = next((f for f in split_fields(header_block) if f.name == "received"), None)
    if received is None or ";" not in received.value:
        return None
    import email.utils  # Here, not at the top: importing email costs every CLI run (module docstring).

    try:
        when = email.utils.parsedate_to_datetime(received.value.rpartition(";")[2].strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when.astimezone(UTC) if when.tzinfo is not None else when.replace(tzinfo=UTC)

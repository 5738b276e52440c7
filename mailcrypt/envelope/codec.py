"""BER framing: find the parts of a large CMS message without copying it.

A 25 MB S/MIME message is almost entirely one OCTET STRING (the encrypted
content). Handing the whole message to an ASN.1 library would copy that
content once per nesting level. This module therefore only *walks* the
tag-length-value headers (X.690 §8.1) over a ``memoryview``, so the
encrypted content is reached as zero-copy slices; every small structure it
locates (RecipientInfos, AlgorithmIdentifiers, the MAC) is decoded by
asn1crypto in ``asn1.py``, never here.

It accepts BER as other implementations write it: indefinite lengths
(NSS, gpgsm, Bouncy Castle, ``openssl cms -stream``) and constructed OCTET
STRINGs split into chunks. On output it writes only the headers of the
enclosing definite-length DER elements whose contents are streamed
(``der_header``); everything else is encoded by asn1crypto.

It does not interpret contents and never decides what a structure means.
Every malformation raises ``CMSParseError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from asn1crypto import core

from mailcrypt.errors import CMSParseError

__all__ = [
    "UNIVERSAL",
    "CONTEXT",
    "TLV",
    "read_element",
    "children",
    "octet_chunks",
    "check_depth",
    "der_header",
]

UNIVERSAL = 0
CONTEXT = 2

# Nesting deeper than this is not CMS as anyone writes it; refusing it keeps
# a hostile input from exhausting the stack.
_MAX_DEPTH = 48
# Length fields wider than this would describe more than 2**64 bytes.
_MAX_LENGTH_OCTETS = 8


class TLV(NamedTuple):
    """One BER element located in a buffer.

    ``value_start``/``value_end`` delimit the contents (for an indefinite
    length, without the end-of-contents octets); ``end`` is the offset just
    past the whole element.

    A named tuple rather than a frozen dataclass: a message is walked into
    some thirty of these, and a frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field) cost several times what a tuple does.
    """

    cls: int
    constructed: bool
    tag: int
    start: int
    value_start: int
    value_end: int
    end: int
    indefinite: bool

    def is_(self, cls: int, tag: int) -> bool:
        return self.cls == cls and self.tag == tag


def _read_header(buf: memoryview, pos: int, limit: int) -> tuple[int, bool, int, int, int | None]:
    """Return (class, constructed, tag, value offset, length or None)."""
    if pos >= limit:
        raise CMSParseError("truncated CMS data: expected another element")
    first = buf[pos]
    cls = first >> 6
    constructed = bool(first & 0x20)
    tag = first & 0x1F
    pos += 1
    if tag == 0x1F:
        # High tag number form (X.690 §8.1.2.4): base-128, high bit continues.
        tag = 0
        for _ in range(5):
            if pos >= limit:
                raise CMSParseError("truncated CMS data in a tag")
            octet = buf[pos]
            pos += 1
            tag = (tag << 7) | (octet & 0x7F)
            if not octet & 0x80:
                break
        else:
            raise CMSParseError("CMS tag number too large")
    if pos >= limit:
        raise CMSParseError("truncated CMS data in a length")
    octet = buf[pos]
    pos += 1
    if octet < 0x80:
        return cls, constructed, tag, pos, octet
    if octet == 0x80:
        if not constructed:
            raise CMSParseError("indefinite length on a primitive element")
        return cls, constructed, tag, pos, None
    count = octet & 0x7F
    if count > _MAX_LENGTH_OCTETS or count == 0x7F:
        raise CMSParseError("CMS length field too large")
    if pos + count > limit:
        raise CMSParseError("truncated CMS data in a length")
    length = int.from_bytes(buf[pos : pos + count], "big")
    return cls, constructed, tag, pos + count, length


# Built without NamedTuple's keyword-accepting ``__new__``: positional fields straight into the tuple.
_new_tlv = tuple.__new__


def read_element(buf: memoryview, pos: int, limit: int, *, _depth: int = 0) -> TLV:
    """Locate the element starting at ``pos``; it must end by ``limit``."""
    if _depth > _MAX_DEPTH:
        raise CMSParseError("CMS nesting too deep")
    if pos + 2 <= limit:
        first = buf[pos]
        octet = buf[pos + 1]
        if first & 0x1F != 0x1F and octet < 0x80:
            # The common case, a low tag number and a short definite length
            # (X.690 §8.1.2.2, §8.1.3.4): the same answer as ``_read_header``.
            end = pos + 2 + octet
            if end > limit:
                raise CMSParseError("truncated CMS data: an element runs past its container")
            return _new_tlv(TLV, (first >> 6, bool(first & 0x20), first & 0x1F, pos, pos + 2, end, end, False))
    cls, constructed, tag, value_start, length = _read_header(buf, pos, limit)
    if length is not None:
        end = value_start + length
        if end > limit:
            raise CMSParseError("truncated CMS data: an element runs past its container")
        return _new_tlv(TLV, (cls, constructed, tag, pos, value_start, end, end, False))
    # Indefinite length: the contents are elements up to end-of-contents (00 00).
    cur = value_start
    while True:
        if cur + 2 <= limit and buf[cur] == 0 and buf[cur + 1] == 0:
            return _new_tlv(TLV, (cls, constructed, tag, pos, value_start, cur, cur + 2, True))
        cur = read_element(buf, cur, limit, _depth=_depth + 1).end


def children(buf: memoryview, parent: TLV) -> Iterator[TLV]:
    """The elements inside a constructed element, in order."""
    if not parent.constructed:
        raise CMSParseError("expected a constructed CMS element")
    cur = parent.value_start
    while cur < parent.value_end:
        child = read_element(buf, cur, parent.value_end)
        yield child
        cur = child.end


def check_depth(buf: memoryview, element: TLV, *, limit: int = _MAX_DEPTH) -> None:
    """Refuse an element nested deeper than ``limit`` levels.

    The small structures handed to asn1crypto are decoded recursively there;
    checking their depth first keeps a hostile input from exhausting the
    interpreter's stack (``RecursionError`` is no parse error to report).
    """
    stack = [(element, 0)]
    while stack:
        tlv, depth = stack.pop()
        if not tlv.constructed:
            continue
        if depth >= limit:
            raise CMSParseError("CMS nesting too deep")
        stack.extend((child, depth + 1) for child in children(buf, tlv))


def octet_chunks(buf: memoryview, element: TLV, *, _depth: int = 0) -> list[memoryview]:
    """The contents of an OCTET STRING (primitive or constructed) as slices.

    A constructed OCTET STRING (X.690 §8.7.3) is a series of OCTET STRING
    segments, possibly nested; the slices are returned in order and not
    joined, so the content is never copied.
    """
    if not element.constructed:
        return [buf[element.value_start : element.value_end]]
    if _depth > _MAX_DEPTH:
        raise CMSParseError("CMS nesting too deep")
    pieces: list[memoryview] = []
    for child in children(buf, element):
        if not child.is_(UNIVERSAL, 4):
            raise CMSParseError("a constructed OCTET STRING holds something other than OCTET STRINGs")
        pieces.extend(octet_chunks(buf, child, _depth=_depth + 1))
    return pieces


def der_header(cls: int, constructed: bool, tag: int, length: int) -> bytes:
    """The DER identifier and length octets (X.690 §8.1.2, §8.1.3, §10.1).

    Only low tag numbers are needed: every streamed element in CMS is a
    SEQUENCE, an OCTET STRING or a context tag below 31.
    """
    if not 0 <= tag < 31 or length < 0:
        raise ValueError("der_header covers tags 0-30 and non-negative lengths")
    identifier = bytes([(cls << 6) | (0x20 if constructed else 0) | tag])
    if length < 0x80:
        return identifier + bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return identifier + bytes([0x80 | len(body)]) + body


# ------------------------------------------------------------------ memos and OIDs

#: Parsers remember what they decoded from short, recurring byte strings (OIDs,
#: names, fixed parts) in small memos; hostile input must not fill the memory.
MEMO_LIMIT = 256
MEMO_KEY_BYTES = 4096
_OID_TAG = 6
_oids: dict[bytes, str] = {}


def memo_room(memo: dict[Any, Any] | set[Any], key: bytes) -> bool:
    """Whether ``key`` may be remembered in ``memo``: short keys only, and a full memo starts over."""
    if len(key) > MEMO_KEY_BYTES:
        return False
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    return True


def read_oid(buf: memoryview, tlv: TLV, what: str) -> str:
    """The dotted form of the OBJECT IDENTIFIER ``tlv``; ``CMSParseError`` naming ``what`` when malformed."""
    if not tlv.is_(UNIVERSAL, _OID_TAG) or tlv.constructed:
        raise CMSParseError(f"malformed {what}: expected an OBJECT IDENTIFIER")
    raw = bytes(buf[tlv.start : tlv.end])
    dotted = _oids.get(raw)
    if dotted is None:
        contents = raw[tlv.value_start - tlv.start :]
        # X.690 §8.19.2: every subidentifier ends with an octet below 0x80 and
        # starts with no 0x80 padding; asn1crypto does not check either.
        if (
            not contents
            or contents[-1] & 0x80
            or any(a & 0x80 == 0 and b == 0x80 for a, b in zip(b"\0" + contents, contents, strict=False))
        ):
            raise CMSParseError(f"malformed OBJECT IDENTIFIER in {what}")
        try:
            dotted = str(core.ObjectIdentifier.load(raw, strict=True).dotted)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise CMSParseError(f"malformed OBJECT IDENTIFIER in {what}") from exc
        if memo_room(_oids, raw):
            _oids[raw] = dotted
    return dotted

"""Re-encode a BER element as DER, for the bytes a signature covers.

RFC 5652 §5.4: the signature over signed attributes is computed on the DER
encoding of the ``SignedAttributes`` as a SET OF (tag 0x31), not on the
``[0] IMPLICIT`` bytes as sent. Senders that write BER (NSS and ``openssl cms
-stream`` use indefinite lengths) still sign the DER form, so the verifier
must rebuild it: definite minimal lengths (X.690 §10.1), constructed strings
joined into primitive ones (§10.2) and the members of every SET sorted by
their encodings (§11.6).

What it won't do: check that primitive values are themselves canonical
(BOOLEAN as 0xFF, minimal INTEGERs); a value that is not DER stays as sent,
so its signature fails as it should. It works on the TLV framing from
``codec.py`` and interprets nothing.
"""

from __future__ import annotations

from mailcrypt.envelope.codec import TLV, UNIVERSAL, children, read_element
from mailcrypt.errors import CMSParseError

__all__ = ["to_der", "set_of_der"]

# X.690 §10.2: these string types are primitive in DER.
_STRING_TAGS = frozenset({3, 4, 12, 18, 19, 20, 21, 22, 25, 26, 27, 28, 30})
_SET = 17
_MAX_DEPTH = 32


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _identifier(buf: memoryview, tlv: TLV, *, constructed: bool) -> bytes:
    """The identifier octets as sent, with the constructed bit set as asked."""
    end = tlv.start + 1
    if buf[tlv.start] & 0x1F == 0x1F:
        while buf[end] & 0x80:
            end += 1
        end += 1
    ident = bytearray(buf[tlv.start : end])
    ident[0] = (ident[0] | 0x20) if constructed else (ident[0] & ~0x20)
    return bytes(ident)


def _string_value(buf: memoryview, tlv: TLV, depth: int) -> bytes:
    if not tlv.constructed:
        return bytes(buf[tlv.value_start : tlv.value_end])
    if depth > _MAX_DEPTH:
        raise CMSParseError("CMS nesting too deep")
    return b"".join(_string_value(buf, child, depth + 1) for child in children(buf, tlv))


def to_der(buf: memoryview, tlv: TLV, *, _depth: int = 0) -> bytes:
    """The DER encoding of the element ``tlv`` in ``buf``."""
    if _depth > _MAX_DEPTH:
        raise CMSParseError("CMS nesting too deep")
    if tlv.cls == UNIVERSAL and tlv.tag in _STRING_TAGS:
        value = _string_value(buf, tlv, _depth)
        return _identifier(buf, tlv, constructed=False) + _length(len(value)) + value
    if not tlv.constructed:
        value = bytes(buf[tlv.value_start : tlv.value_end])
        return _identifier(buf, tlv, constructed=False) + _length(len(value)) + value
    parts = [to_der(buf, child, _depth=_depth + 1) for child in children(buf, tlv)]
    if tlv.cls == UNIVERSAL and tlv.tag == _SET:
        parts.sort()
    value = b"".join(parts)
    return _identifier(buf, tlv, constructed=True) + _length(len(value)) + value


def set_of_der(data: bytes) -> bytes:
    """Re-tag an encoded ``[0] IMPLICIT SET OF`` (or any constructed element) as a DER SET OF.

    This is the input of the signature over signed attributes (RFC 5652 §5.4).
    """
    buf = memoryview(data)
    tlv = read_element(buf, 0, len(buf))
    if tlv.end != len(buf) or not tlv.constructed:
        raise CMSParseError("malformed signed attributes")
    parts = sorted(to_der(buf, child) for child in children(buf, tlv))
    value = b"".join(parts)
    return b"\x31" + _length(len(value)) + value

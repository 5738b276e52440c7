"""Replay keys for unsigned envelopes: a digest nobody can vary without changing the message.

DESIGN.md §2 remembers every accepted unsigned message by its envelope
digest. Hashing the DER as received would let anyone replay a copy under
another digest by re-encoding it (definite for indefinite lengths, other
OCTET STRING chunking, RecipientInfos reordered or dropped), so the digest
covers only what decides the plaintext: the DER of the content-encryption
AlgorithmIdentifier (with its IV or nonce), the ciphertext bytes and, for
AuthEnvelopedData (RFC 5083 §2.1), the authenticated attributes and the MAC.
The signature counterpart is ``sigalg.signature_digest``.

It does not decrypt and does not judge whether the envelope is well formed
beyond finding these parts; ``CMSParseError`` when it cannot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mailcrypt.envelope.asn1 import OID_AUTH_ENVELOPED_DATA, OID_ENVELOPED_DATA
from mailcrypt.envelope.codec import CONTEXT, TLV, UNIVERSAL, children, octet_chunks, read_element
from mailcrypt.envelope.der import to_der
from mailcrypt.errors import CMSParseError

__all__ = ["envelope_digest", "located_digest", "content_type_of"]

_TAG = b"mailcrypt envelope digest v1\0"
_OIDS = {
    bytes.fromhex("2a864886f70d010703"): OID_ENVELOPED_DATA,
    bytes.fromhex("2a864886f70d0109100117"): OID_AUTH_ENVELOPED_DATA,
    bytes.fromhex("2a864886f70d010702"): "1.2.840.113549.1.7.2",
    bytes.fromhex("2a864886f70d010701"): "1.2.840.113549.1.7.1",
    bytes.fromhex("2a864886f70d0109100109"): "1.2.840.113549.1.9.16.1.9",  # compressed-data
}


def _top(buf: memoryview) -> tuple[str, list[TLV]]:
    if len(buf) == 0:
        raise CMSParseError("empty input is not a CMS message")
    top = read_element(buf, 0, len(buf))
    if not top.is_(UNIVERSAL, 16) or not top.constructed:
        raise CMSParseError("not a CMS message")
    kids = list(children(buf, top))
    if not kids or not kids[0].is_(UNIVERSAL, 6):
        raise CMSParseError("malformed ContentInfo")
    raw = bytes(buf[kids[0].value_start : kids[0].value_end])
    return _OIDS.get(raw, "other:" + raw.hex()), kids


def content_type_of(data: bytes | bytearray | memoryview) -> str:
    """The dotted content type OID of a ContentInfo (``other:<hex>`` for one not listed)."""
    return _top(memoryview(data))[0]


def envelope_digest(data: bytes | bytearray | memoryview) -> bytes:
    """SHA-256 over the parts of an EnvelopedData/AuthEnvelopedData that decide its plaintext."""
    buf = memoryview(data)
    oid, kids = _top(buf)
    if oid not in (OID_ENVELOPED_DATA, OID_AUTH_ENVELOPED_DATA) or len(kids) != 2 or not kids[1].is_(CONTEXT, 0):
        raise CMSParseError("not an EnvelopedData or AuthEnvelopedData")
    inner = list(children(buf, kids[1]))
    if len(inner) != 1 or not inner[0].is_(UNIVERSAL, 16):
        raise CMSParseError("malformed envelope")
    items = list(children(buf, inner[0]))
    # version, [0] originatorInfo, recipientInfos (SET), then the (auth)encryptedContentInfo.
    pos = next((i for i, t in enumerate(items) if t.is_(UNIVERSAL, 17)), None)
    if pos is None or pos + 1 >= len(items) or not items[pos + 1].is_(UNIVERSAL, 16):
        raise CMSParseError("malformed envelope: no encryptedContentInfo")
    eci = list(children(buf, items[pos + 1]))
    if len(eci) != 3 or not eci[2].is_(CONTEXT, 0):
        raise CMSParseError("malformed envelope: no encrypted content")
    return located_digest(
        buf,
        authenticated=oid == OID_AUTH_ENVELOPED_DATA,
        algorithm=eci[1],
        content=octet_chunks(buf, eci[2]),
        tail=items[pos + 2 :],
    )


def located_digest(
    buf: memoryview, *, authenticated: bool, algorithm: TLV, content: Sequence[memoryview], tail: Sequence[TLV]
) -> bytes:
    """``envelope_digest`` from parts a parser located already (``reader._parse`` does), without walking again.

    ``algorithm`` is the contentEncryptionAlgorithm, ``content`` the pieces of
    the encrypted content and ``tail`` the envelope's elements after the
    encryptedContentInfo.
    """
    h = hashlib.sha256(_TAG)
    h.update(to_der(buf, algorithm))
    for piece in content:
        h.update(piece)
    for rest in tail:
        # AuthEnvelopedData: authAttrs [1] and the mac; unprotected attributes are left out.
        if rest.is_(CONTEXT, 1) and authenticated:
            h.update(to_der(buf, rest))
        elif rest.is_(UNIVERSAL, 4):
            h.update(b"".join(bytes(p) for p in octet_chunks(buf, rest)))
    return h.digest()

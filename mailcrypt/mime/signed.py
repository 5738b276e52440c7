"""The MIME layer of signatures: multipart/signed and signed-data, made and read.

Signing (RFC 8551 §3.5) turns a canonical MIME entity into either
``multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256``
(§3.5.3: the entity unchanged as the first part, a detached SignedData as
``smime.p7s`` in base64, 76-character CRLF lines) or
``application/pkcs7-mime; smime-type=signed-data`` (§3.5.2: the entity
encapsulated). ``sign_message_parts`` does this for a whole RFC 5322
message, the first step of the one sign-then-encrypt pipeline
(``pipeline.py``): the canonical (CRLF) header fields travel inside the
signed part as protected headers (``protected-headers="v1"``, DESIGN.md
§3), Bcc never; a Message-ID is added when the message has none; the outer
header keeps every field but Content-*, MIME-Version and Bcc, so that
``encrypt_stream`` can then encrypt the result. A body already canonical
is signed where it lies, as a view, never copied. ``sign_message`` is the
same, joined into one byte string.

Reading: ``parse_signed`` recognises both forms at the top of an entity and
returns the SignedData and the exact signed bytes; ``open_signed`` verifies
them with ``envelope.verify`` and rebuilds the message the signed
part carries (protected headers are authoritative, as on decryption).

What it won't do: look for signatures inside other multiparts (a signed part
inside multipart/mixed is content, not a layer), judge trust or freshness,
or rewrite 8-bit parts to 7-bit (inside an envelope they need not be).
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Required, TypedDict, Unpack

import pybase64
from cryptography import x509

from mailcrypt import errors
from mailcrypt.envelope import OUR_CAPABILITIES, SignatureInfo, Signer, content_type_of, read_element, sign, verify
from mailcrypt.mime import headers as mh
from mailcrypt.mime.transfer import encode_lines
from mailcrypt.policy import DEFAULT_POLICY, Policy

__all__ = [
    "SignedMessage",
    "SigningOptions",
    "sign_entity",
    "sign_message",
    "sign_message_parts",
    "message_id_field",
    "canonical",
    "split_message",
    "SignedParts",
    "parse_signed",
    "open_signed",
    "decode_body",
]

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")
PKCS7_SIGNATURE = ("application/pkcs7-signature", "application/x-pkcs7-signature")
# RFC 8551 §3.5.3.2: micalg names.
_MICALG = {"sha256": "sha-256", "sha384": "sha-384", "sha512": "sha-512"}
# The header block is looked for in slices of this size, so that a large body is not copied to find it.
_SLICE = 16 * 1024
_BOUNDARY_PREFIX = b"----=_mailcrypt_"
_OUR_BOUNDARY = re.compile(re.escape(_BOUNDARY_PREFIX) + rb"[0-9a-f]{24}")

Buffer = bytes | bytearray | memoryview


def _is_canonical(header: bytes, sep: bytes, rest: bytes) -> bool:
    # With no header block, the first line decides (as in ``enveloped.encrypt_stream``).
    sample = header + sep if header or sep else rest[: rest.find(b"\n") + 1]
    return b"\n" not in sample.replace(b"\r\n", b"")


def canonical(message: bytes) -> bytes:
    """``message`` with CRLF line ends (RFC 8551 §3.1.1).

    As in ``smime.encrypt_stream``, a header block whose lines end in CRLF
    marks the message as canonical already and it is returned unchanged (a
    binary part may hold a bare LF); otherwise every bare LF becomes CRLF.
    """
    header, sep, rest = mh.read_header_block(iter((message,)), errors.CMSParseError)
    if _is_canonical(header, sep, rest):
        return message
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def split_message(message: bytes, error: type[Exception] = errors.CMSParseError) -> tuple[list[mh.Field], bytes, bytes]:
    """(header fields, header block as bytes, body) of a canonical message or entity."""
    header, _sep, rest = mh.read_header_block(iter((message,)), error)
    return mh.split_fields(header), header, rest


def _boundary(pieces: Sequence[Buffer], rng: Callable[[int], bytes]) -> bytes:
    # RFC 2046 §5.1.1: the boundary must not occur in the part. One scan with
    # a pattern compiled once collects the boundaries of ours the pieces hold
    # (re reads any buffer, so nothing is joined or copied); a new one is
    # drawn until it is not among them. A boundary holds no CR or LF and
    # every piece but the last ends a line, so none spans two pieces.
    taken = {m.group() for piece in pieces for m in _OUR_BOUNDARY.finditer(piece)}
    while True:
        boundary = _BOUNDARY_PREFIX + binascii.hexlify(rng(12))
        if boundary not in taken:
            return boundary


class SigningOptions(TypedDict, total=False):
    """How to sign: the keyword arguments of ``sign_entity``, ``sign_message_parts`` and ``sign_message``.

    Declared once so that the three take the same options with the same
    defaults. ``signing_time`` (required) is the signingTime attribute, the
    timestamp of DESIGN.md §2; ``detached`` (default True) makes
    multipart/signed (RFC 8551 §3.5.3), False signed-data (§3.5.2);
    ``capabilities`` (default ``OUR_CAPABILITIES``) are announced in the
    SMIMECapabilities attribute; ``rng`` (default ``os.urandom``) draws the
    multipart boundary and the Message-ID.
    """

    signing_time: Required[datetime]
    detached: bool
    capabilities: Iterable[str]
    rng: Callable[[int], bytes]


def _rng(options: SigningOptions) -> Callable[[int], bytes]:
    return options.get("rng", os.urandom)


def _signed_entity(pieces: Sequence[Buffer], signer: Signer, options: SigningOptions) -> list[Buffer]:
    """The entity made of ``pieces``, signed, as pieces: a detached signature keeps ``pieces`` as they are."""
    detached = options.get("detached", True)
    der = sign(
        pieces,
        signer,
        signing_time=options["signing_time"],
        detached=detached,
        capabilities=options.get("capabilities", OUR_CAPABILITIES),
    )
    if not detached:
        return [
            b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
            b"\r\n" + encode_lines(der)
        ]
    boundary = _boundary(pieces, _rng(options))
    micalg = _MICALG[signer.digest].encode()
    opening = (
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n'
        b" micalg=" + micalg + b'; boundary="' + boundary + b'"\r\n'
        b"\r\n"
        b"This is a cryptographically signed message in MIME format.\r\n"
        b"\r\n--" + boundary + b"\r\n"
    )
    closing = b"".join(
        (
            b"\r\n--" + boundary + b"\r\n"
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
            b"Content-Description: S/MIME Cryptographic Signature\r\n"
            b"\r\n",
            encode_lines(der),
            b"\r\n--" + boundary + b"--\r\n",
        )
    )
    return [opening, *pieces, closing]


def sign_entity(entity: bytes, signer: Signer, **options: Unpack[SigningOptions]) -> bytes:
    """Sign a canonical MIME entity; return the signed entity (its header fields and body).

    The result starts with its Content-Type field, so it can be a whole body
    part or, after other header fields, a message.
    """
    if not isinstance(entity, (bytes, bytearray)):
        raise TypeError("entity must be bytes")
    return b"".join(_signed_entity([entity], signer, options))


def message_id_field(fields: list[mh.Field], rng: Callable[[int], bytes] = os.urandom) -> mh.Field:
    """A fresh Message-ID field in the From address's domain: the serial number of DESIGN.md §2."""
    return mh.Field("message-id", _message_id(fields, rng))


def _message_id(fields: list[mh.Field], rng: Callable[[int], bytes]) -> bytes:
    sender = next((f.value for f in fields if f.name == "from"), "")
    match = re.search(r"@([A-Za-z0-9.-]+)", sender)
    domain = match.group(1) if match else "mailcrypt.invalid"
    return b"Message-ID: <" + binascii.hexlify(rng(16)) + b"@" + domain.encode("ascii") + b">\r\n"


@dataclass(frozen=True)
class SignedMessage:
    """A message signed for sending: its pieces, in order, to join or to read as one file.

    For a detached signature the message body is one of the pieces, a view
    of the buffer the message came in rather than a copy; that buffer must
    not change while the signed message is in use. ``parts`` go to
    ``ChainReader`` (and so to ``encrypt_stream``) as they are.
    """

    parts: tuple[Buffer, ...]

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts)

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def _slices(view: memoryview) -> Iterator[bytes]:
    # Pieces for ``read_header_block``: only those up to the end of the header block are read (and copied).
    for start in range(0, len(view), _SLICE):
        yield bytes(view[start : start + _SLICE])


def _split_view(view: memoryview) -> tuple[bytes, bytes, bytes, memoryview]:
    """(header block, separator, the bytes read past it, body as a view of ``view``)."""
    header, sep, rest = mh.read_header_block(_slices(view), errors.CMSParseError)
    return header, sep, rest, view[len(header) + len(sep) :]


def sign_message_parts(message: Buffer, signer: Signer, **options: Unpack[SigningOptions]) -> SignedMessage:
    """Sign an RFC 5322 message for sending: the first step of sign-then-encrypt (DESIGN.md §2).

    The one way mailcrypt signs a message, for ``mailcrypt encrypt`` and the
    proxy alike. What is signed is canonical (CRLF line ends, RFC 8551
    §3.1.1; see ``canonical``): the message's header fields, all but Bcc,
    as protected headers, then its body. A fresh ``Message-ID`` is added
    when there is none, so the serial number of DESIGN.md §2 is signed
    (and, once encrypted, hidden). The outer header keeps every field but
    Content-*, MIME-Version and Bcc, so the result can be sent as it is or
    encrypted (``encrypt_stream`` over ``ChainReader(parts)``).

    A canonical message in a ``bytearray`` or ``memoryview`` is neither
    copied nor joined: the body is hashed and handed on where it lies. Only
    a message with bare LF line ends is copied, once, to make it canonical.
    ``rng`` makes the Message-ID and the multipart boundary; ``signing_time``
    is the signingTime attribute. Raises ``CMSParseError`` for a header
    block over ``mime_headers.HEADER_LIMIT``.
    """
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise TypeError("message must be bytes")
    view = memoryview(message).cast("B")
    header, sep, rest, body = _split_view(view)
    if not _is_canonical(header, sep, rest):
        view = memoryview(canonical(bytes(view)))
        header, sep, rest, body = _split_view(view)
    fields = mh.split_fields(header)
    if not any(f.name == "message-id" for f in fields):
        fields.append(message_id_field(fields, _rng(options)))
    entity = _signed_entity([mh.protect(fields), body], signer, options)
    return SignedMessage((mh.sendable_fields(fields, mime=False) + b"MIME-Version: 1.0\r\n", *entity))


def sign_message(message: Buffer, signer: Signer, **options: Unpack[SigningOptions]) -> bytes:
    """``sign_message_parts`` joined: the signed message as one byte string."""
    return bytes(sign_message_parts(message, signer, **options))


# ---------------------------------------------------------------------------- read


def decode_body(body: bytes, encoding: str) -> bytes:
    """The DER in a body part: base64 (white space ignored) or raw DER; else ``CMSParseError``."""
    encoding = encoding.strip().lower()
    if encoding in ("", "7bit", "8bit", "binary") and body[:1] == b"\x30":
        try:
            end = read_element(memoryview(body), 0, len(body)).end
        except errors.CMSParseError:
            end = len(body)
        if body[end:].strip(b" \t\r\n"):
            raise errors.CMSParseError("data after the CMS structure in the body part")
        return body[:end]
    if encoding not in ("base64", "", "7bit"):
        raise errors.CMSParseError(f"unsupported Content-Transfer-Encoding {encoding!r} for S/MIME")
    text = body.translate(None, b" \t\r\n")
    try:
        der = pybase64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise errors.CMSParseError("the S/MIME body part is not valid base64") from None
    if not der:
        raise errors.CMSParseError("the S/MIME body part is empty")
    return der


def _transfer_encoding(fields: list[mh.Field]) -> str:
    return next((f.value for f in fields if f.name == "content-transfer-encoding"), "")


def _parts(body: bytes, boundary: str) -> list[bytes]:
    """The body parts of a multipart body, byte for byte (RFC 2046 §5.1.1).

    The CRLF before a delimiter belongs to the delimiter, not to the part.
    """
    delimiter = re.compile(rb"(?:\A|\r\n)--" + re.escape(boundary.encode("utf-8")) + rb"(--)?[ \t]*(?:\r\n|\Z)")
    matches = list(delimiter.finditer(body))
    parts = []
    for here, following in zip(matches, matches[1:], strict=False):
        if here.group(1):
            break
        parts.append(body[here.end() : following.start()])
    if not matches or not any(m.group(1) for m in matches):
        raise errors.CMSParseError("the multipart/signed body has no closing delimiter")
    return parts


@dataclass(frozen=True)
class SignedParts:
    """A signed entity found at the top of a message.

    ``form`` is ``detached`` (multipart/signed; ``content`` is the signed
    first part) or ``opaque`` (signed-data; the content is inside ``der``).
    """

    form: str
    der: bytes
    content: bytes | None


def parse_signed(fields: list[mh.Field], body: bytes) -> SignedParts | None:
    """The signature at the top of an entity, or None when it is not S/MIME signed."""
    ctype, params = mh.content_type(fields)
    if ctype == "multipart/signed":
        if params.get("protocol", "").lower() not in PKCS7_SIGNATURE:
            return None  # An OpenPGP or other signature: not ours to judge.
        boundary = params.get("boundary", "")
        if not boundary:
            raise errors.CMSParseError("multipart/signed without a boundary")
        parts = _parts(body, boundary)
        if len(parts) != 2:
            raise errors.CMSParseError(f"multipart/signed must have two parts, not {len(parts)}")
        sig_fields, _header, sig_body = split_message(parts[1])
        sig_type, _ = mh.content_type(sig_fields)
        if sig_type not in PKCS7_SIGNATURE:
            raise errors.CMSParseError(f"the signature part is {sig_type}, not application/pkcs7-signature")
        return SignedParts("detached", decode_body(sig_body, _transfer_encoding(sig_fields)), parts[0])
    if ctype in PKCS7_MIME:
        der = decode_body(body, _transfer_encoding(fields))
        # The smime-type parameter is only a hint (RFC 8551 §3.2.2); the DER decides.
        if content_type_of(der) != OID_SIGNED_DATA:
            return None
        return SignedParts("opaque", der, None)
    return None


def open_signed(
    message: bytes,
    *,
    policy: Policy = DEFAULT_POLICY,
    certificates: Sequence[x509.Certificate] = (),
    accept_weak: bool = False,
) -> tuple[bytes, SignatureInfo] | None:
    """Verify the signature at the top of ``message``; return (inner message, signature).

    None when the message is not S/MIME signed at its top. The inner
    message is the signed entity under the outer header fields (protected
    headers in it win, as ``mime_headers.restore`` decides). Raises what
    ``envelope.verify`` raises; ``accept_weak`` is passed to it.
    """
    fields, _header, body = split_message(canonical(message))
    found = parse_signed(fields, body)
    if found is None:
        return None
    info = verify(found.der, content=found.content, certificates=certificates, policy=policy, accept_weak=accept_weak)
    entity = found.content if found.content is not None else info.content
    assert entity is not None
    inner_fields_block, sep, inner_body = mh.read_header_block(iter((entity,)), errors.CMSParseError)
    if inner_fields_block and not inner_fields_block.endswith(b"\n"):
        inner_fields_block += b"\r\n"
    return mh.restore(fields, inner_fields_block) + (sep or b"\r\n") + inner_body, info

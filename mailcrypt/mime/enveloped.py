"""The MIME layer: RFC 5322 message in, S/MIME message out, and back.

Encryption turns a message into an ``application/pkcs7-mime`` message
(RFC 8551 §3.3). The part that gets encrypted is the original message,
canonicalised to CRLF line ends (RFC 8551 §3.1.1), with its complete header
block inside: that is header protection (DESIGN.md §3), marked
``protected-headers="v1"``. The outer message keeps the transport headers,
shows ``Subject: [...]`` and never carries Bcc. Decryption reverses this:
the protected header block is authoritative, and only fields added in
transit (Received, ...) are taken from the outside.

Encryption streams: it reads the input twice when it can seek (once to
learn the canonical length that DER needs up front, once to encrypt) and
otherwise holds the input once. Decryption here returns bytes, and only once
the GCM tag or CBC padding has been checked; decrypting a large message into
a file, where plaintext exists before its integrity is known, is
``mailcrypt.mime.plaintext.decrypt_file``, which owns that file.

What it won't do (yet): sign or verify (multipart/signed and SignedData are
a later issue), parse nested signed or enveloped parts, or look up keys.
Recipients and identities come in as arguments.
"""

from __future__ import annotations

import binascii
import io
import itertools
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import pybase64

from mailcrypt import errors
from mailcrypt.envelope import EnvelopeInfo, EnvelopeWriter, Identity, OpenEnvelope, RecipientLike, open_envelope
from mailcrypt.mime import headers as mh
from mailcrypt.mime.headers import recipient_addresses, sender_address
from mailcrypt.policy import COMPATIBLE, DEFAULT_POLICY, Policy, Profile

__all__ = [
    "encrypt_message",
    "decrypt_message",
    "encrypt_stream",
    "decrypt_envelope",
    "recipient_addresses",
    "sender_address",
]

# 64 KiB pieces stay in the CPU cache and below malloc's mmap threshold; with
# 1 MiB pieces base64 took twice as long and every piece cost page faults.
_CHUNK = 1 << 16

# RFC 2045 §6.8: at most 76 characters a line; 57 bytes make exactly 76.
_LINE_BYTES = 57
_LINE_CHARS = 76
# Lines are cut by struct in C, 1024 at a time: a Python loop over the
# 450 000 lines of a 25 MB message would cost several times as much.
_LINES = struct.Struct(f"{_LINE_CHARS}s" * 1024)
_BLOCK_BYTES = _LINE_BYTES * 1024
_WHITESPACE = b" \t\r\n"


class BinaryReader(Protocol):
    """A binary file as ``decrypt_file`` reads it."""

    def read(self, size: int = -1, /) -> bytes: ...


class SeekableBinaryReader(BinaryReader, Protocol):
    """A binary file as ``encrypt_stream`` reads it; one whose ``seekable()`` is false is read whole first."""

    def seekable(self) -> bool: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


class BinaryWriter(Protocol):
    """A binary file the streams write to."""

    def write(self, data: bytes, /) -> object: ...

    def writelines(self, lines: Iterable[bytes], /) -> object: ...


# ------------------------------------------------------------------ encrypt


def encrypt_message(
    message: bytes,
    recipients: Sequence[RecipientLike],
    *,
    profile: Profile = COMPATIBLE,
    policy: Policy = DEFAULT_POLICY,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Encrypt an RFC 5322 message to ``recipients``; return the S/MIME message.

    ``recipients`` are ``x509.Certificate`` or ``Recipient`` objects. Raises
    what ``encrypt_stream`` raises.
    """
    _check_bytes(message, "message")
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(message), out, recipients, profile=profile, policy=policy, rng=rng)
    return out.getvalue()


def encrypt_stream(
    infile: SeekableBinaryReader,
    outfile: BinaryWriter,
    recipients: Sequence[RecipientLike],
    *,
    profile: Profile = COMPATIBLE,
    policy: Policy = DEFAULT_POLICY,
    rng: Callable[[int], bytes] = os.urandom,
) -> None:
    """Read an RFC 5322 message from ``infile``, write the S/MIME message to ``outfile``.

    A header block with CRLF line ends marks the message as canonical and
    its body is encrypted unchanged; otherwise every bare LF becomes CRLF.
    Raises ``TypeError`` for wrong argument types, ``MessageError`` for a
    header block over 1 MiB, and ``InvalidRecipient``/``PolicyViolation``
    from the envelope core, before anything is written.
    """
    _check_file(infile, "read", "infile")
    _check_file(outfile, "write", "outfile")
    _check_sequence(recipients, "recipients")
    _check_options(profile, policy)
    if not callable(rng):
        raise TypeError("rng must be a callable like os.urandom")
    if not _seekable(infile):
        infile = io.BytesIO(infile.read())
    start = infile.tell()
    header, sep, rest = mh.read_header_block(_read_chunks(infile, _CHUNK), errors.MessageError)
    body_offset = start + len(header) + len(sep)
    # With no header block, the first line decides.
    sample = header + sep if header or sep else rest[: rest.find(b"\n") + 1]
    canonical = b"\n" not in sample.replace(b"\r\n", b"")
    fields = mh.split_fields(header if canonical else _lf_to_crlf_bytes(header))
    inner_head = mh.protect(fields)

    infile.seek(0, os.SEEK_END)
    body_length = infile.tell() - body_offset
    if not canonical:
        infile.seek(body_offset)
        body_length = _crlf_length(_read_chunks(infile, _CHUNK))
    writer = EnvelopeWriter(
        recipients, content_length=len(inner_head) + body_length, profile=profile, policy=policy, rng=rng
    )
    outfile.write(mh.outer_fields(fields) + _mime_fields(profile.authenticated))
    lines = _Base64Lines()
    outfile.writelines(lines.feed(writer.header() + writer.update(inner_head)))
    infile.seek(body_offset)
    body = _read_chunks(infile, _CHUNK, limit=body_length)
    fed = 0
    for chunk in body if canonical else _lf_to_crlf(body):
        fed += len(chunk)
        if fed > body_length:
            break
        outfile.writelines(lines.feed(writer.update(chunk)))
    if fed != body_length:
        raise errors.MessageError("the input changed while it was being encrypted")
    outfile.writelines(lines.feed(writer.finish()) + lines.finish())


def _mime_fields(authenticated: bool) -> bytes:
    # RFC 8551 §3.3; RFC 5083 §2.1 names the smime-type of AuthEnvelopedData.
    kind = b"authEnveloped-data" if authenticated else b"enveloped-data"
    return (
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=" + kind + b'; name="smime.p7m"\r\n'
        b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
    )


def _read_chunks(f: BinaryReader, size: int, limit: int | None = None) -> Iterator[bytes]:
    left = limit
    while left is None or left > 0:
        chunk = f.read(size if left is None else min(size, left))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


def _lf_to_crlf_bytes(data: bytes) -> bytes:
    # Files with LF line ends rarely hold a CR at all; skip that pass then.
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    return data.replace(b"\n", b"\r\n")


def _lf_to_crlf(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Every bare LF as CRLF; a CR at a chunk's end waits for the next chunk."""
    cr = b""
    for chunk in chunks:
        chunk = cr + chunk
        cr = b"\r" if chunk.endswith(b"\r") else b""
        yield _lf_to_crlf_bytes(chunk[:-1] if cr else chunk)
    if cr:
        yield cr


def _crlf_length(chunks: Iterable[bytes]) -> int:
    """The length ``_lf_to_crlf`` will produce, counted without converting."""
    total = 0
    after_cr = False
    for chunk in chunks:
        total += len(chunk) + chunk.count(b"\n") - (chunk.count(b"\r\n") if b"\r" in chunk else 0)
        if after_cr and chunk[:1] == b"\n":
            total -= 1  # A CRLF split between two chunks.
        after_cr = chunk[-1:] == b"\r"
    return total


class _Base64Lines:
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
            out.append(_encode_lines(self._carry + bytes(view[:need])))
            view = view[need:]
        whole = len(view) - len(view) % _LINE_BYTES
        self._carry = bytes(view[whole:])
        # Blocks of 1024 lines keep the work in the CPU cache; one struct call cuts each.
        out.extend(_encode_lines(view[i : min(i + _BLOCK_BYTES, whole)]) for i in range(0, whole, _BLOCK_BYTES))
        return out

    def finish(self) -> list[bytes]:
        out = [_encode_lines(self._carry)] if self._carry else []
        self._carry = b""
        return out


def _encode_lines(data: bytes | memoryview) -> bytes:
    encoded = pybase64.b64encode(data)
    if len(encoded) == _LINES.size:
        lines = list(_LINES.unpack(encoded))
    else:
        lines = [encoded[i : i + _LINE_CHARS] for i in range(0, len(encoded), _LINE_CHARS)]
    lines.append(b"")  # The last line ends with CRLF too.
    return b"\r\n".join(lines)


# ------------------------------------------------------------------ decrypt


def decrypt_message(
    message: bytes, identities: Sequence[Identity], *, policy: Policy = DEFAULT_POLICY
) -> tuple[bytes, EnvelopeInfo]:
    """Decrypt an S/MIME message; return the RFC 5322 message and what opened it.

    Raises ``NotEncryptedError`` when the message is not ``application/pkcs7-mime``
    enveloped data, ``CMSParseError`` for a malformed body or inner header
    block, and from the envelope core ``NoMatchingIdentity``,
    ``DecryptionFailed``, ``UnsupportedAlgorithm`` and ``PolicyViolation``;
    no plaintext is returned then.
    """
    _check_bytes(message, "message")
    _check_sequence(identities, "identities")
    _check_options(None, policy)
    header, _, rest = mh.read_header_block(iter((bytes(message),)), errors.NotEncryptedError)
    outer = mh.split_fields(_lf_to_crlf_bytes(header))
    encoding = _smime_transfer_encoding(outer)
    pieces: list[bytes] = []
    # Collected and joined once, and handed out only after the last piece passed the check.
    # The body goes to the decoder in pieces, as from a file: one piece would be copied whole.
    body = (rest[i : i + _CHUNK] for i in range(0, len(rest), _CHUNK))
    info = _open_body(outer, body, encoding, identities, policy, pieces.append)
    return b"".join(pieces), info


def _open_body(
    outer: list[mh.Field],
    chunks: Iterator[bytes],
    encoding: str,
    identities: Sequence[Identity],
    policy: Policy,
    write: Callable[[bytes], object],
    on_open: Callable[[OpenEnvelope], None] | None = None,
) -> EnvelopeInfo:
    """Decode the body of an enveloped S/MIME message and decrypt it into ``write``.

    Private to the MIME layer (``plaintext`` imports it): what reaches
    ``write`` is unauthenticated until this returns, so only callers that
    hold it back until then may use it (``decrypt_message`` collects it,
    ``plaintext.decrypt_file`` writes a file nobody else sees). The DER is
    held only while this runs.
    """
    der = _decode_body(chunks, encoding)
    return _open_into(outer, der, identities, policy, write, on_open)


def decrypt_envelope(
    outer: Sequence[mh.Field],
    der: bytes | bytearray,
    identities: Sequence[Identity],
    *,
    policy: Policy = DEFAULT_POLICY,
    on_open: Callable[[OpenEnvelope], None] | None = None,
) -> tuple[bytes, EnvelopeInfo]:
    """``decrypt_message`` for a message already taken apart: its outer header fields and the envelope's DER.

    For callers that had to decode the body anyway (``mailcrypt.mime.unwrap``
    looks at the CMS content type first), so it is not decoded twice.
    ``on_open``, if given, sees the envelope once its key is unwrapped and
    before its content is decrypted (``unwrap`` takes the replay digest from
    it, ``OpenEnvelope.digest``, without walking the DER again).
    """
    _check_sequence(identities, "identities")
    _check_options(None, policy)
    pieces: list[bytes] = []
    # Collected and joined once: the message is copied one time, not at every write.
    info = _open_into(list(outer), der, identities, policy, pieces.append, on_open)
    return b"".join(pieces), info


def _open_into(
    outer: list[mh.Field],
    der: bytes | bytearray,
    identities: Sequence[Identity],
    policy: Policy,
    write: Callable[[bytes], object],
    on_open: Callable[[OpenEnvelope], None] | None = None,
) -> EnvelopeInfo:
    envelope = open_envelope(memoryview(der), identities, policy=policy)
    if on_open is not None:
        on_open(envelope)
    plaintext = iter(envelope.chunks(_CHUNK))
    inner, sep, rest = mh.read_header_block(plaintext, errors.CMSParseError)
    if inner and not inner.endswith(b"\n"):
        inner += b"\r\n"
    write(mh.restore(outer, inner))
    write(sep or b"\r\n")
    write(rest)
    for chunk in plaintext:
        write(chunk)
    return envelope.info


def _smime_transfer_encoding(outer: list[mh.Field]) -> str:
    """The Content-Transfer-Encoding of an enveloped S/MIME message, else NotEncryptedError."""
    ctype, params = mh.content_type(outer)
    if ctype not in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        raise errors.NotEncryptedError(f"not an S/MIME encrypted message (Content-Type {ctype})")
    # RFC 8551 §3.2.2: smime-type names the CMS type; old clients omit it
    # and name the part smime.p7m instead.
    smime_type = params.get("smime-type", "").lower()
    if smime_type not in ("enveloped-data", "authenveloped-data") and (
        smime_type or params.get("name", "").lower() != "smime.p7m"
    ):
        raise errors.NotEncryptedError(f"not an S/MIME encrypted message (smime-type {smime_type or 'missing'})")
    values = [f.value.lower() for f in outer if f.name == "content-transfer-encoding"]
    return values[0] if values else ""


def _decode_body(chunks: Iterator[bytes], encoding: str) -> bytearray:
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
    decoder = _Base64Decoder()
    for chunk in chunks:
        decoder.feed(chunk)
    return _non_empty(decoder.finish())


def _non_empty(der: bytearray) -> bytearray:
    if not der:
        raise errors.CMSParseError("the S/MIME message has an empty body")
    return der


class _Base64Decoder:
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


# ------------------------------------------------------------------ checks


def _check_bytes(value: object, name: str) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def _check_file(f: object, method: str, name: str) -> None:
    if isinstance(f, io.TextIOBase) or not callable(getattr(f, method, None)):
        raise TypeError(f"{name} must be a binary file object")


def _check_sequence(value: object, name: str) -> None:
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence (a list), not {type(value).__name__}")


def _check_options(profile: object, policy: object) -> None:
    if profile is not None and not isinstance(profile, Profile):
        raise TypeError("profile must be a mailcrypt.policy.Profile")
    if not isinstance(policy, Policy):
        raise TypeError("policy must be a mailcrypt.policy.Policy")


def _seekable(f: SeekableBinaryReader) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False

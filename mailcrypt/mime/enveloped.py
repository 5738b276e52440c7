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

import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypedDict, Unpack

from mailcrypt import errors
from mailcrypt.envelope import EnvelopeInfo, EnvelopeWriter, Identity, OpenEnvelope, RecipientLike, open_envelope
from mailcrypt.mime import headers as mh
from mailcrypt.mime.headers import recipient_addresses, sender_address
from mailcrypt.mime.transfer import Base64Lines, decode_body
from mailcrypt.policy import COMPATIBLE, DEFAULT_POLICY, Policy, Profile

__all__ = [
    "EncryptionOptions",
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


class EncryptionOptions(TypedDict, total=False):
    """How to encrypt: the keyword arguments of ``encrypt_message`` and ``encrypt_stream``, declared once.

    ``profile`` (default ``COMPATIBLE``) chooses the algorithms, ``policy``
    (default ``DEFAULT_POLICY``) what is allowed, ``rng`` (default
    ``os.urandom``) draws the content-encryption key and IV.
    """

    profile: Profile
    policy: Policy
    rng: Callable[[int], bytes]


def encrypt_message(message: bytes, recipients: Sequence[RecipientLike], **options: Unpack[EncryptionOptions]) -> bytes:
    """Encrypt an RFC 5322 message to ``recipients``; return the S/MIME message.

    ``recipients`` are ``x509.Certificate`` or ``Recipient`` objects. Raises
    what ``encrypt_stream`` raises.
    """
    _check_bytes(message, "message")
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(message), out, recipients, **options)
    return out.getvalue()


def encrypt_stream(
    infile: SeekableBinaryReader,
    outfile: BinaryWriter,
    recipients: Sequence[RecipientLike],
    **options: Unpack[EncryptionOptions],
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
    profile = options.get("profile", COMPATIBLE)
    policy = options.get("policy", DEFAULT_POLICY)
    rng = options.get("rng", os.urandom)
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
    lines = Base64Lines()
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
    der = decode_body(chunks, encoding)
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

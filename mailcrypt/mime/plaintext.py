"""Decryption into a file nobody sees before it is checked: ``decrypt_file``.

Whether decrypted content is intact is known only at its end: the GCM tag
(RFC 5084 §2, AuthEnvelopedData of RFC 5083) and the CBC padding (RFC 5652
§6.3) are checked after the last byte of plaintext, and a signature inside
the envelope (sign-then-encrypt, RFC 8551 §3.7) after all of it. So
``decrypt_file`` streams the plaintext into a temporary file that it owns,
and hands out a ``Plaintext`` only once every check it was asked for has
passed:

- with a ``destination`` path, the temporary file is made, mode 0600, in
  the destination's directory, and ``Plaintext.publish`` renames it over
  the destination (one atomic step: the destination is either untouched or
  the whole checked message);
- without one, it is an anonymous temporary file (it has no name at all),
  and ``publish`` copies it to a stream such as standard output.

On any failure, inside ``decrypt_file`` or in what the caller checks before
``publish`` (the replay guard), leaving the ``with`` block removes the
temporary file, and the destination is neither created nor changed. A caller
that forgets ``publish`` publishes nothing.

With ``verify``, the layers inside the envelope (a signature, another
envelope) are removed as ``unwrap.unwrap_message`` removes them, their
signatures are verified, and a message that is signed but not encrypted is
accepted too; the message under all layers is what gets published. Only the
outer envelope streams (its DER held once, the plaintext never held); inner
layers are removed in memory, since a signature covers its whole entity.

What it won't do: judge freshness or replays (the caller's replay guard),
look up keys, or write anywhere but the destination's directory and the
system's temporary directory.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from cryptography import x509

from mailcrypt import errors
from mailcrypt.envelope import Identity, OpenEnvelope
from mailcrypt.mime import headers as mh
from mailcrypt.mime.enveloped import (
    _CHUNK,
    BinaryReader,
    BinaryWriter,
    _check_file,
    _check_options,
    _check_sequence,
    _lf_to_crlf_bytes,
    _open_body,
    _read_chunks,
    _smime_transfer_encoding,
)
from mailcrypt.mime.signed import PKCS7_MIME, PKCS7_SIGNATURE
from mailcrypt.mime.unwrap import MAX_LAYERS, Layer, Unwrapped, unwrap_message
from mailcrypt.pki import RevocationChecker
from mailcrypt.policy import DEFAULT_POLICY, Policy

__all__ = ["Plaintext", "Verification", "decrypt_file"]


@dataclass(frozen=True)
class Verification:
    """What ``decrypt_file`` verifies signatures with (the arguments of ``unwrap_message``).

    ``now`` is when signers' chains are checked; ``trust_anchors``,
    ``certificates`` and ``revocation`` are as for ``unwrap_message``; with
    ``require_trusted`` a signer whose chain is not valid fails the decryption.
    """

    now: datetime
    trust_anchors: Sequence[x509.Certificate] = ()
    certificates: Sequence[x509.Certificate] = ()
    require_trusted: bool = False
    revocation: RevocationChecker | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.now, datetime) or self.now.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")


class Plaintext:
    """A decrypted, checked message in a private temporary file, not yet visible to anyone.

    ``unwrapped`` lists the layers removed (its ``message`` is empty: the
    message is in ``file``, open for reading at its start). Use it as a
    context manager: leaving the block without ``publish`` removes the file.
    """

    def __init__(self, destination: str | None) -> None:
        self.destination = destination
        self.unwrapped = Unwrapped(b"", ())
        self._tmp_name: str | None = None
        self._published = False
        if destination is None:
            self.file: IO[bytes] = tempfile.TemporaryFile()
        else:
            directory = os.path.dirname(os.path.abspath(destination))
            # mkstemp makes the file 0600 and opens it O_EXCL: nobody else can have it open.
            fd, self._tmp_name = tempfile.mkstemp(
                dir=directory, prefix=f".{os.path.basename(destination)}.", suffix=".tmp"
            )
            self.file = os.fdopen(fd, "w+b")
        # A Plaintext dropped without ``discard`` (no ``with`` block) still takes its file with it.
        self._cleanup = weakref.finalize(self, _remove, self.file, self._tmp_name)

    def publish(self, stream: BinaryWriter | None = None) -> None:
        """Make the message visible: rename it onto the destination, or copy it to ``stream`` (no destination).

        Call it once, after the last check of your own; ``TypeError`` when
        ``stream`` is given with a destination or missing without one.
        """
        if self._published or self.file.closed:
            raise RuntimeError("this plaintext was published or discarded already")
        if self.destination is None:
            if stream is None:
                raise TypeError("without a destination, publish needs a stream to copy the message to")
            self.file.seek(0)
            while chunk := self.file.read(_CHUNK):
                stream.write(chunk)
            flush = getattr(stream, "flush", None)
            if callable(flush):
                flush()
        else:
            if stream is not None:
                raise TypeError("the message is renamed onto its destination; it takes no stream")
            assert self._tmp_name is not None
            # Durable before it has the destination's name, so a crash cannot leave a short file there.
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self._tmp_name, self.destination)
            self._tmp_name = None
            self._cleanup.detach()
        self._published = True

    def discard(self) -> None:
        """Close and remove the temporary file (nothing happens to a published destination)."""
        self.file.close()
        self._cleanup()

    def __enter__(self) -> Plaintext:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.discard()


def _remove(file: IO[bytes], name: str | None) -> None:
    file.close()
    if name is not None:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def decrypt_file(
    infile: BinaryReader,
    identities: Sequence[Identity],
    *,
    destination: str | os.PathLike[str] | None = None,
    policy: Policy = DEFAULT_POLICY,
    verify: Verification | None = None,
    replay_digest: bool = False,
) -> Plaintext:
    """Decrypt the S/MIME message in ``infile`` into a ``Plaintext`` for ``destination`` (see the module docstring).

    ``verify`` removes and verifies the layers inside the envelope (and
    accepts a message that is only signed); without it only the envelope
    is removed and whatever it held is the message. ``replay_digest`` puts
    the outer envelope's digest into its ``Layer`` (a hash over all its
    ciphertext; empty otherwise). The destination's directory must exist.

    Raises ``NotEncryptedError`` when the message is not enveloped S/MIME
    (with ``verify``: nor signed S/MIME), ``CMSParseError`` for a malformed
    body or inner header block, from the envelope core ``NoMatchingIdentity``,
    ``DecryptionFailed``, ``UnsupportedAlgorithm`` and ``PolicyViolation``,
    and with ``verify`` what ``unwrap_message`` raises (``BadSignature``,
    ``UnknownSigner``, ``UntrustedSigner``, ...). Then no file is left behind.
    """
    _check_file(infile, "read", "infile")
    _check_sequence(identities, "identities")
    _check_options(None, policy)
    if verify is not None and not isinstance(verify, Verification):
        raise TypeError("verify must be a mailcrypt.mime.Verification")
    target = None if destination is None else os.fspath(destination)
    if target is not None and not isinstance(target, str):
        raise TypeError("destination must be a path")
    plain = Plaintext(target)
    try:
        plain.unwrapped = _decrypt_into(plain.file, infile, identities, policy, verify, replay_digest)
        plain.file.flush()
        plain.file.seek(0)
    except BaseException:
        plain.discard()
        raise
    return plain


def _decrypt_into(
    out: IO[bytes],
    infile: BinaryReader,
    identities: Sequence[Identity],
    policy: Policy,
    verify: Verification | None,
    replay_digest: bool,
) -> Unwrapped:
    chunks = _read_chunks(infile, _CHUNK)
    header, sep, rest = mh.read_header_block(chunks, errors.NotEncryptedError)
    outer = mh.split_fields(_lf_to_crlf_bytes(header))
    try:
        encoding = _smime_transfer_encoding(outer)
    except errors.NotEncryptedError:
        if verify is None or not _is_smime(outer):
            raise
        # Signed only: nothing to stream, and the signature needs the whole message.
        message = b"".join(itertools.chain((header, sep, rest), chunks))
        unwrapped = _unwrap(message, identities, policy, verify, MAX_LAYERS)
        out.write(unwrapped.message)
        return Unwrapped(b"", unwrapped.layers)
    digests: list[bytes] = []

    def take_digest(envelope: OpenEnvelope) -> None:
        digests.append(envelope.digest())

    info = _open_body(
        outer,
        itertools.chain((rest,), chunks),
        encoding,
        identities,
        policy,
        out.write,
        take_digest if replay_digest else None,
    )
    layer = Layer("enveloped", info.content_type, digests[0] if digests else b"", envelope=info)
    if verify is None:
        return Unwrapped(b"", (layer,))
    out.flush()
    out.seek(0)
    inner_header, _, _ = mh.read_header_block(iter(lambda: out.read(_CHUNK), b""), errors.CMSParseError)
    if not _is_smime(mh.split_fields(inner_header)):
        return Unwrapped(b"", (layer,))
    # The envelope's DER is gone by now: the inner message is the one copy held.
    out.seek(0)
    inner = _unwrap(out.read(), identities, policy, verify, MAX_LAYERS - 1)
    out.seek(0)
    out.truncate()
    out.write(inner.message)
    return Unwrapped(b"", (layer, *inner.layers))


def _unwrap(
    message: bytes, identities: Sequence[Identity], policy: Policy, verify: Verification, max_layers: int
) -> Unwrapped:
    return unwrap_message(
        message,
        identities,
        now=verify.now,
        policy=policy,
        trust_anchors=verify.trust_anchors,
        certificates=verify.certificates,
        require_trusted=verify.require_trusted,
        max_layers=max_layers,
        revocation=verify.revocation,
    )


def _is_smime(fields: list[mh.Field]) -> bool:
    """Whether an entity with these header fields has an S/MIME layer at its top (RFC 8551 §3.2, §3.5)."""
    ctype, params = mh.content_type(fields)
    if ctype == "multipart/signed":
        return params.get("protocol", "").lower() in PKCS7_SIGNATURE
    return ctype in PKCS7_MIME

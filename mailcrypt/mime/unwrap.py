"""Peel the S/MIME layers of an incoming message, in whatever order they come.

Mail arrives signed-then-encrypted (mailcrypt, Thunderbird), encrypted-then-
signed, triple-wrapped (RFC 2634 §1.1) or signed twice. ``unwrap_message``
looks at the top of the message, and as long as it is S/MIME it removes one
layer: an envelope is opened with the ``decrypt`` callable (by default
``smime.decrypt_message`` with the identities given), a signature (detached
or opaque) is verified with ``smime_signed.open_signed`` and its signer's
chain checked with ``envelope.chain.validate_chain``. It stops at the first
entity that is not S/MIME, and after ``max_layers`` layers.

Each layer is reported (``Layer``): what it was, which identity and cipher
opened it or who signed it, when, with which algorithms, the chain status,
the capabilities and certificates the signer sent (for harvesting), and the
layer's replay key. ``Unwrapped.replay_key`` picks the key the replay guard
should check (DESIGN.md §2): the innermost signature's digest, else the
innermost envelope's digest.

A signature with a hash of ``Policy.weak_signature_hashes`` (SHA-1, MD5, in
much mail before 2020) is verified and reported (``Layer.weak``) but is no
proof: it never withholds the content, and for the replay guard the message
counts as unsigned (DESIGN.md §2).

What it won't do: decide freshness (``mailcrypt.state.replay``), store
certificates, or refuse an untrusted signer unless ``require_trusted`` is
set. Only the top-level entity is peeled: an S/MIME part inside a
multipart/mixed is content, never a layer (EFAIL-style mixing, RFC 8551 §3.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from mailcrypt import errors
from mailcrypt.envelope import (
    OID_AUTH_ENVELOPED_DATA,
    OID_ENVELOPED_DATA,
    EnvelopeInfo,
    Identity,
    OpenEnvelope,
    SignatureInfo,
    content_type_of,
    envelope_digest,
)
from mailcrypt.mime import headers as mh
from mailcrypt.mime.signed import PKCS7_MIME, canonical, decode_body, open_signed, split_message
from mailcrypt.pki import ChainResult, RevocationChecker, validate_signer
from mailcrypt.policy import DEFAULT_POLICY, Policy

__all__ = ["Layer", "Unwrapped", "unwrap_message", "MAX_LAYERS"]

#: More layers than this are not mail anyone writes; refusing them bounds the work.
MAX_LAYERS = 6
_COMPRESSED = "1.2.840.113549.1.9.16.1.9"

Decrypt = Callable[[bytes], tuple[bytes, EnvelopeInfo]]


@dataclass(frozen=True)
class Layer:
    """One S/MIME layer that was removed.

    ``kind`` is ``enveloped`` or ``signed``; ``form`` is ``enveloped-data``,
    ``authEnveloped-data``, ``detached`` or ``opaque``. ``digest`` is the
    layer's replay key: the envelope digest or the signature digest.
    """

    kind: str
    form: str
    digest: bytes
    envelope: EnvelopeInfo | None = None
    signature: SignatureInfo | None = None
    chain: ChainResult | None = None

    @property
    def weak(self) -> bool:
        """True for a signature whose hash is read but not accepted as proof (SHA-1, MD5)."""
        return self.signature is not None and self.signature.weak

    def describe(self) -> str:
        """One line for the user and the log; names no content."""
        if self.envelope is not None:
            info = self.envelope
            return f"encrypted ({self.form}, {info.cipher}, {info.key_management}) for {info.identity.label}"
        assert self.signature is not None and self.chain is not None
        sig = self.signature
        when = f"{sig.signing_time:%Y-%m-%d %H:%M:%S} UTC" if sig.signing_time else "no signing time"
        weak = f"; the signature uses {sig.weak_description} and is not accepted as proof" if sig.weak else ""
        return (
            f"signed ({self.form}) by {sig.signer}, {when}, {sig.signature_algorithm} with {sig.digest_algorithm};"
            f" certificate chain: {self.chain.status.replace('-', ' ')} ({self.chain.reason}){weak}"
        )


@dataclass(frozen=True)
class Unwrapped:
    """The message under all S/MIME layers, and the layers from the outside in."""

    message: bytes
    layers: tuple[Layer, ...]
    #: The header fields of ``message``, when they were read from it as it is (it is
    #: canonical); None when not known. They save the caller reading them again.
    fields: tuple[mh.Field, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def encrypted(self) -> bool:
        return any(layer.kind == "enveloped" for layer in self.layers)

    @property
    def signatures(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.kind == "signed")

    @property
    def proofs(self) -> tuple[Layer, ...]:
        """The signatures accepted as proof: those whose hashes are not weak."""
        return tuple(layer for layer in self.signatures if not layer.weak)

    @property
    def weak_signatures(self) -> tuple[Layer, ...]:
        """The signatures read but not accepted as proof (SHA-1, MD5)."""
        return tuple(layer for layer in self.signatures if layer.weak)

    @property
    def content_signatures(self) -> tuple[Layer, ...]:
        """The signatures that cover the final message: those inside the innermost envelope.

        A signature outside an envelope covers only ciphertext and says
        nothing about who wrote the content (Thunderbird treats it the same way).
        """
        last_envelope = max((i for i, layer in enumerate(self.layers) if layer.kind == "enveloped"), default=-1)
        return tuple(layer for layer in self.layers[last_envelope + 1 :] if layer.kind == "signed")

    @property
    def replay_key(self) -> tuple[bytes, datetime | None, str] | None:
        """(digest, signing time, kind) for ``ReplayGuard.accept``, or None.

        The innermost signature is the author's and survives re-wrapping in
        a new envelope, so it is preferred; unsigned mail has only its
        envelope digest (kind ``envelope``, no signing time). A weak
        signature is no proof of its signing time, so it is passed over:
        the message counts as unsigned (DESIGN.md §2).
        """
        for layer in reversed(self.layers):
            if layer.kind == "signed" and layer.signature is not None and not layer.weak:
                return layer.digest, layer.signature.signing_time, "signature"
        for layer in reversed(self.layers):
            if layer.kind == "enveloped":
                return layer.digest, None, "envelope"
        return None


def _top_kind(message: bytes) -> tuple[str, bytes | None, list[mh.Field], bool]:
    """What the top of ``message`` is (``enveloped``, ``signed`` or ``plain``), the DER of a pkcs7-mime, the fields.

    The fields are those of the canonical form; the last value says whether
    that is ``message`` itself.
    """
    text = canonical(message)
    fields, _header, body = split_message(text, errors.CMSParseError)
    kind, der = _kind_of(fields, body)
    return kind, der, fields, text is message


def _kind_of(fields: list[mh.Field], body: bytes) -> tuple[str, bytes | None]:
    ctype, params = mh.content_type(fields)
    if ctype == "multipart/signed":
        signed = params.get("protocol", "").lower() in ("application/pkcs7-signature", "application/x-pkcs7-signature")
        return ("signed" if signed else "plain"), None
    if ctype not in PKCS7_MIME:
        return "plain", None
    if params.get("smime-type", "").lower() == "certs-only":
        return "plain", None
    encoding = next((f.value for f in fields if f.name == "content-transfer-encoding"), "")
    der = decode_body(body, encoding)
    oid = content_type_of(der)
    if oid in (OID_ENVELOPED_DATA, OID_AUTH_ENVELOPED_DATA):
        return "enveloped", der
    if oid == "1.2.840.113549.1.7.2":
        return "signed", der
    if oid == _COMPRESSED:
        raise errors.UnsupportedAlgorithm("compressed-data (RFC 3274) is not supported", oid=oid)
    raise errors.CMSParseError(f"application/pkcs7-mime holding CMS content type {oid}")


def unwrap_message(
    message: bytes,
    identities: Sequence[Identity] = (),
    *,
    now: datetime,
    policy: Policy = DEFAULT_POLICY,
    trust_anchors: Sequence[x509.Certificate] = (),
    certificates: Sequence[x509.Certificate] = (),
    decrypt: Decrypt | None = None,
    require_trusted: bool = False,
    revocation: RevocationChecker | None = None,
    max_layers: int = MAX_LAYERS,
) -> Unwrapped:
    """Remove every S/MIME layer from ``message``; return the final message and the layers.

    ``identities`` open envelopes (through ``smime.decrypt_message``) unless
    a ``decrypt(message) -> (message, EnvelopeInfo)`` callable is given.
    ``trust_anchors`` are what signers' chains are checked against at
    ``now``; ``certificates`` are extra certificates to find signers and
    intermediates among; ``revocation``, when given, is asked about each
    signer's path (``pki.validate_signer``), after the CRLs the SignedData
    carries; ``pki.RevocationRequired`` asks for revocation information
    from those CRLs only, and refuses a path without it. A message without S/MIME at its top comes back
    unchanged with no layers.

    Raises what decryption raises (``NoMatchingIdentity``, ``DecryptionFailed``,
    ...), what verification raises (``BadSignature``, ``UnknownSigner``,
    ``UnsupportedAlgorithm``, ``PolicyViolation``, ``CMSParseError``),
    ``UntrustedSigner`` when ``require_trusted`` is set and a chain is not
    valid, and ``CMSParseError`` for more than ``max_layers`` layers.
    """
    if not isinstance(message, (bytes, bytearray)):
        raise TypeError("message must be bytes")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    from mailcrypt.mime.enveloped import decrypt_envelope

    current = bytes(message)
    layers: list[Layer] = []
    while True:
        kind, der, fields, as_is = _top_kind(current)
        if kind == "plain":
            return Unwrapped(current, tuple(layers), tuple(fields) if as_is else None)
        if len(layers) >= max_layers:
            raise errors.CMSParseError(f"more than {max_layers} nested S/MIME layers")
        if kind == "enveloped":
            assert der is not None
            # The body is decoded already: the default decryption takes it from here,
            # and the digest from the parts of the envelope its parser located.
            if decrypt is None:
                envelopes: list[OpenEnvelope] = []
                current, info = decrypt_envelope(fields, der, list(identities), policy=policy, on_open=envelopes.append)
                digest = envelopes[0].digest()
            else:
                current, info = decrypt(current)
                digest = envelope_digest(der)
            layers.append(Layer("enveloped", info.content_type, digest, envelope=info))
            continue
        # Weak signatures are verified and marked, never a reason to withhold the content.
        opened = open_signed(current, policy=policy, certificates=certificates, accept_weak=True)
        assert opened is not None
        current, signature = opened
        # The issuers to build on, for the signer's chain and its CRLs alike:
        # those the signer sent, then those the caller knows.
        known = [*signature.certificates, *certificates]
        chain = validate_signer(
            signature.certificate,
            crls=signature.crls,
            intermediates=known,
            anchors=trust_anchors,
            now=now,
            policy=policy,
            revocation=revocation,
        )
        if require_trusted and (signature.weak or not chain.trusted):
            reason = f"the signature uses {signature.weak_description}" if signature.weak else chain.reason
            raise errors.UntrustedSigner(
                f"the signer {signature.signer} is not trusted: {reason}",
                status=chain.status,
                reason=reason,
            )
        form = "opaque" if signature.content is not None else "detached"
        layers.append(Layer("signed", form, signature.signature_digest, signature=signature, chain=chain))

"""SignedData (RFC 5652 §5): sign a MIME entity, verify a signature.

``sign`` builds a DER ContentInfo holding SignedData, detached (no eContent,
for ``multipart/signed``) or encapsulated (``application/pkcs7-mime;
smime-type=signed-data``): one SignerInfo identified by issuer and serial
number, SHA-256 by default, RSA PKCS#1 v1.5, RSA-PSS or ECDSA
(``sigalg.py``), and the signed attributes RFC 8551 §2.5 asks for:
contentType, signingTime, messageDigest and SMIMECapabilities. The signer's
certificate (and any chain given) is included. What every signature of a
signer shares is encoded once (``signed_der.py``).

``verifying.verify`` checks what this writes, and what other clients write.

What it won't do: decide whether to trust the signer (``chain.py``), check
freshness (``mailcrypt.state.replay``), look at MIME, or accept a signature whose
hash the Policy does not list. A hash of ``Policy.weak_signature_hashes``
(SHA-1, MD5) is verified only when the caller says ``accept_weak``, and the
result then says so (``SignatureInfo.weak``): such a signature is read but
is no proof. Time comes in as an argument.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import core
from cryptography import x509

from mailcrypt.envelope import sigalg, signed_der
from mailcrypt.envelope.capabilities import OUR_CAPABILITIES
from mailcrypt.envelope.codec import CONTEXT, UNIVERSAL, der_header
from mailcrypt.envelope.keys import Identity

__all__ = ["Signer", "sign"]


#: What ``sign`` takes as content or as one piece of it.
Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Signer:
    """A private key, its certificate, the chain to send along, and the algorithms to sign with."""

    key: sigalg.SigningKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    digest: str = "sha256"
    rsa_padding: str = "pkcs1v15"  # or "pss"

    def __post_init__(self) -> None:
        if not isinstance(self.certificate, x509.Certificate):
            raise TypeError("certificate must be a cryptography x509.Certificate")
        if not isinstance(self.key, sigalg.SigningKey):
            raise TypeError("key must be an RSA or EC private key")
        if self.key.public_key() != self.certificate.public_key():
            raise ValueError("the private key does not belong to the certificate")
        if self.digest not in ("sha256", "sha384", "sha512"):
            raise ValueError(f"mailcrypt signs with SHA-256, SHA-384 or SHA-512, not {self.digest!r}")
        if self.rsa_padding not in ("pkcs1v15", "pss"):
            raise ValueError(f"unknown RSA signature padding {self.rsa_padding!r}")
        object.__setattr__(self, "chain", tuple(self.chain))

    @functools.cached_property
    def _encoded(self) -> signed_der.SignerDER:
        """The encodings every signature of this signer shares (made on first use, then kept)."""
        return signed_der.SignerDER.of(self.certificate, self.chain, self.digest)

    @classmethod
    def from_identity(cls, identity: object, **options: object) -> Signer:
        """The Signer for an envelope ``Identity`` (its private key and certificate)."""
        if not isinstance(identity, Identity):
            raise TypeError("identity must be a mailcrypt.envelope Identity")
        return cls(identity.private_key, identity.certificate, **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- sign


def _time(when: datetime) -> core.UTCTime | core.GeneralizedTime:
    if when.tzinfo is None:
        raise ValueError("signing_time must be timezone-aware")
    when = when.astimezone(UTC).replace(microsecond=0)
    # RFC 5652 §11.3: UTCTime for 1950 to 2049, GeneralizedTime otherwise.
    return core.UTCTime(when) if 1950 <= when.year < 2050 else core.GeneralizedTime(when)


def sign(
    content: Buffer | Sequence[Buffer],
    signer: Signer,
    *,
    signing_time: datetime,
    detached: bool = True,
    capabilities: Iterable[str] = OUR_CAPABILITIES,
) -> bytes:
    """Sign ``content`` (a canonical MIME entity); return a DER ContentInfo with SignedData.

    ``content`` is one byte string or a sequence of pieces that together
    make the entity: a caller holding a large body in a buffer of its own
    signs it as it is, without first joining it to the header (MIME layer,
    ``mime.signed``). ``detached`` leaves the content out
    (``multipart/signed``); otherwise it is encapsulated. Raises
    ``TypeError``/``ValueError`` for wrong arguments.

    The parts that are the same for every message of a signer (its
    identifier, certificates, algorithms) and the fixed attributes are
    encoded by asn1crypto once; per message asn1crypto encodes the values
    (signing time, digest, signature), and the enclosing elements are
    framed around them (``codec.der_header``). Building the whole structure
    with asn1crypto cost as much as the RSA-3072 signature.
    """
    pieces = _pieces(content)
    if not isinstance(signer, Signer):
        raise TypeError("signer must be a mailcrypt.envelope.signed.Signer")
    fixed = signer._encoded
    hasher = hashlib.new(signer.digest)
    for piece in pieces:
        hasher.update(piece)
    digest = hasher.digest()
    attrs = [
        signed_der.CONTENT_TYPE_ATTR,
        signed_der.attribute(signed_der.SIGNING_TIME, _time(signing_time).dump()),
        signed_der.attribute(signed_der.MESSAGE_DIGEST, core.OctetString(digest).dump()),
        signed_der.capabilities_der(tuple(capabilities)),
    ]
    # RFC 5652 §5.4: the signature covers the DER SET OF the attributes; the
    # SignerInfo carries the same contents under [0] IMPLICIT.
    signed_attrs = b"".join(signed_der.set_of(attrs))
    algorithm, signature = sigalg.sign(signer.key, signed_attrs, digest=signer.digest, rsa_padding=signer.rsa_padding)
    signer_info = signed_der.frame(
        UNIVERSAL,
        signed_der.SEQUENCE,
        signed_der.VERSION_1,
        fixed.sid,
        fixed.digest_algorithm,
        b"\xa0" + signed_attrs[1:],
        algorithm.dump(),
        core.OctetString(signature).dump(),
    )
    # The content, when encapsulated, is the one large piece: only the last join copies it.
    octets = der_header(UNIVERSAL, False, signed_der.OCTET_STRING, sum(len(p) for p in pieces))
    inner = [] if detached else signed_der.frame(CONTEXT, 0, octets, *pieces)
    signed_data = signed_der.frame(
        UNIVERSAL,
        signed_der.SEQUENCE,
        signed_der.VERSION_1,
        *signed_der.set_of([fixed.digest_algorithm]),
        *signed_der.frame(UNIVERSAL, signed_der.SEQUENCE, signed_der.DATA_OID, *inner),
        fixed.certificates,
        *signed_der.set_of([b"".join(signer_info)]),
    )
    content_info = signed_der.frame(
        UNIVERSAL, signed_der.SEQUENCE, signed_der.SIGNED_DATA_OID, *signed_der.frame(CONTEXT, 0, *signed_data)
    )
    return b"".join(content_info)


def _pieces(content: object) -> list[Buffer]:
    """``content`` as byte pieces (memoryviews as bytes, so that ``len`` counts bytes); else ``TypeError``."""
    items = [content] if isinstance(content, (bytes, bytearray, memoryview)) else content
    if not isinstance(items, (list, tuple)):
        raise TypeError("content must be bytes or a sequence of bytes")
    pieces: list[Buffer] = []
    for item in items:
        if isinstance(item, memoryview):
            pieces.append(item.cast("B"))
        elif isinstance(item, (bytes, bytearray)):
            pieces.append(item)
        else:
            raise TypeError("content must be bytes or a sequence of bytes")
    return pieces


# -------------------------------------------------------------------------- verify

"""SignedData (RFC 5652 §5): verify a signature.

``verify`` follows RFC 5652 §5.6 for every SignerInfo: the content digest
must equal the messageDigest attribute, the contentType attribute must equal
the encapsulated content type (§11.1), and the signature is checked over the
DER SET OF the signed attributes (§5.4; ``der.py``) with the signer's key,
found by issuer and serial number or subject key identifier among the
certificates in the message and those given. Every SignerInfo must hold.
The structure is located by ``signed_parts.py`` (zero-copy over BER), so a
large encapsulated content is hashed in slices; detached content may come
as chunks.

What it won't do: decide whether to trust the signer (``pki``), check
freshness (``mailcrypt.state.replay``), look at MIME, or accept a signature whose
hash the Policy does not list. A hash of ``Policy.weak_signature_hashes``
(SHA-1, MD5) is verified only when the caller says ``accept_weak``, and the
result then says so (``SignatureInfo.weak``): such a signature is read but
is no proof.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509

from mailcrypt.envelope import pubkey, sigalg
from mailcrypt.envelope.asn1 import OID_DATA
from mailcrypt.envelope.capabilities import parse_capabilities
from mailcrypt.envelope.der import set_of_der
from mailcrypt.envelope.keys import CertificateRef, describe_rid
from mailcrypt.envelope.signed_parts import ASN1_ERRORS, SignedParts, parse_signed_data
from mailcrypt.errors import BadSignature, CMSParseError, MalformedCertificate, UnknownSigner, UnsupportedAlgorithm
from mailcrypt.policy import DEFAULT_POLICY, Policy

__all__ = ["SignatureInfo", "verify"]

_CHUNK = 1 << 20
_HASH_LABELS = {"sha1": "SHA-1", "md5": "MD5"}


@dataclass(frozen=True)
class SignatureInfo:
    """What a verified SignedData says. Holds no key material.

    The signer fields describe the first SignerInfo; all ``signer_count``
    of them were verified. ``content`` is the encapsulated content of an
    opaque signature, None for a detached one. ``signature_digest`` is the
    replay-cache key (``sigalg.signature_digest``).
    """

    certificate: x509.Certificate
    signing_time: datetime | None
    digest_algorithm: str
    signature_algorithm: str
    capabilities: tuple[str, ...]
    certificates: tuple[x509.Certificate, ...]
    content: bytes | None
    content_type: str
    signature_digest: bytes
    signer_count: int = 1
    #: The hashes of ``Policy.weak_signature_hashes`` some SignerInfo uses (``accept_weak``).
    weak_hashes: tuple[str, ...] = ()
    #: The DER CRLs the SignedData carries (RFC 5652 §5.1 ``crls``), unparsed: ``pki`` judges them.
    crls: tuple[bytes, ...] = ()

    @property
    def weak(self) -> bool:
        """True when a signer used a hash that is read but not accepted as proof (SHA-1, MD5)."""
        return bool(self.weak_hashes)

    @property
    def weak_description(self) -> str:
        """``SHA-1`` or ``SHA-1 and MD5``: the weak hashes, for status lines (empty when none)."""
        return " and ".join(_HASH_LABELS.get(h, h.upper()) for h in self.weak_hashes)

    @property
    def signer(self) -> str:
        """The signer's certificate subject and fingerprint, for messages and logs."""
        return CertificateRef(self.certificate).label


def _find_signer(
    info: cms.SignerInfo,
    candidates: Sequence[x509.Certificate],
    unreadable: Sequence[tuple[bytes, MalformedCertificate | UnsupportedAlgorithm]],
) -> x509.Certificate:
    sid = info["sid"]
    for cert in candidates:
        ref = CertificateRef(cert)
        if sid.name == "issuer_and_serial_number":
            if ref.matches_issuer_and_serial(sid.chosen):
                return cert
        elif ref.matches_key_identifier(bytes(sid.chosen.native)):
            return cert
    described = describe_rid(sid)
    for der, error in unreadable:
        if _names_refused(sid, der):
            # The parser's verdict (malformed or unsupported), naming the signer.
            message = f"the signer's certificate ({described}) is refused: {error}"
            if isinstance(error, UnsupportedAlgorithm):
                raise UnsupportedAlgorithm(message, oid=error.oid)
            raise MalformedCertificate(message, reason=error.reason)
    if unreadable:
        # The signer's certificate may be one that was refused but cannot be
        # matched any more (its issuer or serial does not decode either).
        raise MalformedCertificate(
            f"the signer's certificate ({described}) is not among those that can be read;"
            f" {len(unreadable)} certificate(s) in the message cannot be read ({unreadable[0][1]})"
        )
    raise UnknownSigner(f"the signer's certificate ({described}) is not available", signer=described)


def _names_refused(sid: cms.SignerIdentifier, der: bytes) -> bool:
    """Whether ``sid`` names a certificate the parser refused, compared on its DER with asn1crypto."""
    try:
        tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
        if sid.name == "issuer_and_serial_number":
            return bool(
                sid.chosen["serial_number"].native == tbs["serial_number"].native
                and sid.chosen["issuer"].dump() == tbs["issuer"].dump()
            )
        return bytes(sid.chosen.native) == tbs["subject_public_key_info"].sha1
    except ASN1_ERRORS:
        return False


def _single(attrs: cms.CMSAttributes, name: str) -> object | None:
    found = [a for a in attrs if a["type"].native == name]
    if not found:
        return None
    # RFC 5652 §11: contentType, messageDigest and signingTime appear once, with one value.
    if len(found) > 1 or len(found[0]["values"]) != 1:
        raise CMSParseError(f"the {name} attribute must appear once with one value")
    return found[0]["values"][0]


def _digests(parsed: SignedParts, content: bytes | Iterable[bytes] | None, names: set[str]) -> dict[str, bytes]:
    hashers = {name: hashlib.new(name) for name in names}
    if parsed.econtent is not None:
        pieces: Iterable[bytes | memoryview] = parsed.econtent
    elif content is None:
        raise CMSParseError("the signature is detached but no signed content was found")
    elif isinstance(content, (bytes, bytearray, memoryview)):
        pieces = (content,)
    else:
        pieces = content
    for piece in pieces:
        for start in range(0, len(piece), _CHUNK):
            part = piece[start : start + _CHUNK]
            for h in hashers.values():
                h.update(part)
    return {name: h.digest() for name, h in hashers.items()}


def _check_one(
    info: cms.SignerInfo,
    raw_attrs: bytes | None,
    parsed: SignedParts,
    digests: dict[str, bytes],
    candidates: Sequence[x509.Certificate],
    policy: Policy,
    weak_ok: bool,
) -> tuple[x509.Certificate, str, str, datetime | None, tuple[str, ...], bytes]:
    digest = sigalg.digest_name(info["digest_algorithm"]["algorithm"].dotted, policy, weak_ok=weak_ok)
    cert = _find_signer(info, candidates, parsed.unreadable_certificates)
    signature = bytes(info["signature"].native)
    signing_time = None
    capabilities: tuple[str, ...] = ()
    if raw_attrs is None:
        # RFC 5652 §5.3: without signed attributes the content must be id-data,
        # and the signature is over the content digest itself.
        if parsed.content_type != OID_DATA:
            raise CMSParseError("signed attributes are required for content other than id-data")
        inputs: list[dict[str, bytes]] = [{"prehashed": digests[digest]}]
    else:
        attrs = info["signed_attrs"]
        ctype = _single(attrs, "content_type")
        if ctype is None or ctype.dotted != parsed.content_type:  # type: ignore[attr-defined]
            raise BadSignature("the contentType attribute does not match the signed content type")
        claimed = _single(attrs, "message_digest")
        if claimed is None:
            raise CMSParseError("the messageDigest attribute is missing")
        if not hmac.compare_digest(bytes(claimed.native), digests[digest]):  # type: ignore[attr-defined]
            raise BadSignature("the content does not match its signature (message digest differs)")
        when = _single(attrs, "signing_time")
        if when is not None:
            signing_time = when.native.astimezone(UTC)  # type: ignore[attr-defined]
        caps = [a for a in attrs if a["type"].native == "smime_capabilities"]
        try:
            capabilities = parse_capabilities(caps[0]["values"]) if caps else ()
        except ASN1_ERRORS:
            capabilities = ()  # Advice only (RFC 8551 §2.5.2); never a reason to refuse.
        # RFC 5652 §5.4: the DER SET OF; the bytes as sent, re-tagged, are tried
        # too for signers that signed a non-DER encoding of the same attributes.
        der = set_of_der(raw_attrs)
        raw = b"\x31" + raw_attrs[1:]
        inputs = [{"data": der}] + ([{"data": raw}] if raw != der else [])
    # The key's algorithm is judged by its OID before a key object is built (pubkey).
    public_key = pubkey.public_key(cert, policy=policy)
    failure: BadSignature | None = None
    for signed_input in inputs:
        try:
            name = sigalg.verify(
                public_key,
                info["signature_algorithm"],
                digest,
                signature,
                policy=policy,
                weak_ok=weak_ok,
                **signed_input,
            )
            break
        except BadSignature as exc:
            failure = failure or exc
    else:
        assert failure is not None
        raise failure
    return cert, digest, name, signing_time, capabilities, sigalg.signature_digest(public_key, signature)


def verify(
    data: bytes | bytearray | memoryview,
    *,
    content: bytes | Iterable[bytes] | None = None,
    certificates: Sequence[x509.Certificate] = (),
    policy: Policy = DEFAULT_POLICY,
    accept_weak: bool = False,
) -> SignatureInfo:
    """Verify a DER/BER ContentInfo holding SignedData.

    ``content`` is the signed content of a detached signature (bytes, or an
    iterable of chunks read once). When the SignedData encapsulates content
    too, the two must be identical. ``certificates`` are searched for the
    signer after those in the message. ``accept_weak`` verifies signatures
    with a hash of ``Policy.weak_signature_hashes`` instead of refusing them,
    and names those hashes in ``SignatureInfo.weak_hashes``.

    Raises ``BadSignature`` (digest, attribute or signature mismatch),
    ``UnknownSigner``, ``UnsupportedAlgorithm``/``PolicyViolation`` and
    ``CMSParseError``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    if not isinstance(policy, Policy):
        raise TypeError("policy must be a mailcrypt.policy.Policy")
    parsed = parse_signed_data(data)
    if parsed.econtent is not None and content is not None:
        given = content if isinstance(content, (bytes, bytearray, memoryview)) else b"".join(content)
        if b"".join(parsed.econtent) != bytes(given):
            raise BadSignature("the signature carries content that differs from the signed part")
        content = None
    try:
        names = {
            sigalg.digest_name(info["digest_algorithm"]["algorithm"].dotted, policy, weak_ok=accept_weak)
            for info, _ in parsed.signer_infos
        }
    except ASN1_ERRORS as exc:
        raise CMSParseError("malformed digest algorithm") from exc
    digests = _digests(parsed, content, names)
    candidates = [*parsed.certificates, *certificates]
    results = []
    for info, raw_attrs in parsed.signer_infos:
        try:
            results.append(_check_one(info, raw_attrs, parsed, digests, candidates, policy, accept_weak))
        except ASN1_ERRORS as exc:
            raise CMSParseError("malformed SignerInfo") from exc
    cert, digest, name, signing_time, capabilities, sig_digest = results[0]
    return SignatureInfo(
        certificate=cert,
        signing_time=signing_time,
        digest_algorithm=digest,
        signature_algorithm=name,
        capabilities=capabilities,
        certificates=tuple(parsed.certificates),
        content=b"".join(parsed.econtent) if parsed.econtent is not None else None,
        content_type="data" if parsed.content_type == OID_DATA else parsed.content_type,
        signature_digest=sig_digest,
        signer_count=len(results),
        weak_hashes=tuple(sorted({r[1] for r in results} - policy.signature_hashes)),
        crls=tuple(parsed.crls),
    )

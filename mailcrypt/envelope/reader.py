"""Reading EnvelopedData and AuthEnvelopedData (DER or BER), streamed.

``open_envelope`` locates the parts of the ContentInfo with the BER walker
in ``codec.py`` (zero-copy over a ``memoryview``), decodes the small parts
with asn1crypto and each RecipientInfo into a ``Stanza`` (``stanza_der``),
checks the content algorithm against the policy, and then tries every
identity on every stanza. It reports which identity and
which key-management scheme worked. The content is decrypted lazily by
``OpenEnvelope.chunks()``.

What it won't do: verify signatures, look up keys, or release a verdict on
integrity before the last chunk (see ``chunks``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from asn1crypto import algos, core

from mailcrypt.envelope.asn1 import OID_AUTH_ENVELOPED_DATA, OID_DATA, OID_ENVELOPED_DATA, OID_SIGNED_DATA
from mailcrypt.envelope.codec import (
    CONTEXT,
    TLV,
    UNIVERSAL,
    check_depth,
    children,
    memo_room,
    octet_chunks,
    read_element,
    read_oid,
)
from mailcrypt.envelope.content import ContentDecryptor
from mailcrypt.envelope.fingerprint import located_digest
from mailcrypt.envelope.keys import Identity, describe_recipient_id
from mailcrypt.envelope.stanza import KeyAgreeStanza, KeyTransStanza, Stanza
from mailcrypt.envelope.stanza_der import parse_recipient_info
from mailcrypt.errors import (
    CMSParseError,
    MessageError,
    NoMatchingIdentity,
    NotEncryptedError,
    NotForThisIdentity,
    PolicyViolation,
)
from mailcrypt.policy import Policy

__all__ = ["EnvelopeInfo", "OpenEnvelope", "open_envelope", "decrypt_all"]

# Errors asn1crypto raises for malformed input when a lazily parsed value is read.
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError)


@dataclass(frozen=True)
class EnvelopeInfo:
    """What was found and used; contains no key material."""

    content_type: str  # "enveloped-data" or "authEnveloped-data"
    cipher: str  # e.g. "aes256-gcm"
    identity: Identity  # the identity that opened the envelope
    key_management: str  # e.g. "rsa-oaep-sha256", "ecdh-sha1kdf-aes256-wrap"
    recipient_count: int

    @property
    def authenticated(self) -> bool:
        return self.content_type == "authEnveloped-data"


@dataclass
class _Parts:
    authenticated: bool
    recipient_infos: list[Stanza]
    unreadable: int
    algorithm: str  # the content-encryption algorithm's OID
    parameters: bytes  # the DER of its parameters (empty when it has none)
    content: list[memoryview]
    mac: bytes
    aad: bytes
    # Where the replay digest's parts are (``fingerprint.located_digest``).
    buf: memoryview
    algorithm_tlv: TLV
    tail: list[TLV]


def _load(
    spec: type[core.Asn1Value], buf: memoryview, tlv: TLV, what: str, *, force: bool = True, depth_checked: bool = False
) -> core.Asn1Value:
    """Decode one small element with asn1crypto.

    asn1crypto parses lazily; ``force`` parses everything now so errors
    surface here. Without it only the outer structure is checked, for
    values whose unknown parts must not make the whole message unreadable.
    ``depth_checked`` says the caller has run ``check_depth`` already.
    """
    if not depth_checked:
        check_depth(buf, tlv)
    try:
        value = spec.load(bytes(buf[tlv.start : tlv.end]), strict=True)
        if force:
            value.native  # noqa: B018
    except _ASN1_ERRORS as exc:
        raise CMSParseError(f"malformed {what}") from exc
    return value


# Decoding results that depend on nothing but the bytes decoded, kept for the
# next message: mail names the same content type and algorithm every time,
# and decoding them with asn1crypto cost a fetch a noticeable part of the RSA
# operation per message (the RecipientInfos have theirs in ``stanza_der``).
# Bounded by clearing.
_algorithms: dict[bytes, str] = {}


def _oid(buf: memoryview, tlv: TLV, what: str) -> str:
    """The dotted form of the OBJECT IDENTIFIER ``tlv`` (``CMSParseError`` when malformed)."""
    return read_oid(buf, tlv, what)


def _content_algorithm(buf: memoryview, tlv: TLV) -> tuple[str, bytes]:
    """The OID of a contentEncryptionAlgorithm, and the DER of its parameters (``CMSParseError`` when malformed).

    Only the OID is read here; ContentDecryptor names an unknown algorithm
    before it looks at parameters it could not interpret. The answer is
    remembered by the bytes before the parameters' contents (the IV, new in
    every message): they fix the OID and the structure around it.
    """
    kids = list(children(buf, tlv))
    parameters = bytes(buf[kids[1].start : kids[1].end]) if len(kids) > 1 else b""
    key = None
    if len(kids) == 2 and not kids[1].constructed and not tlv.indefinite:
        key = bytes(buf[tlv.start : kids[1].value_start])
        known = _algorithms.get(key)
        if known is not None:
            return known, parameters
    algorithm = _load(algos.EncryptionAlgorithm, buf, tlv, "content-encryption algorithm", force=False)
    try:
        oid = str(algorithm["algorithm"].dotted)
    except _ASN1_ERRORS as exc:
        raise CMSParseError("malformed content-encryption algorithm") from exc
    if key is not None and memo_room(_algorithms, key):
        _algorithms[key] = oid
    return oid, parameters


def _recipient_infos(buf: memoryview, tlv: TLV) -> tuple[list[Stanza], int]:
    """The RecipientInfos we can read, as stanzas, and how many we cannot.

    Each is read on its own: a RecipientInfo of a kind or algorithm we do
    not know, addressed to somebody else, must not make the message
    unreadable for us.
    """
    readable: list[Stanza] = []
    unreadable = 0
    for child in children(buf, tlv):
        try:
            readable.append(parse_recipient_info(buf[child.start : child.end]))
        except CMSParseError:
            unreadable += 1
    return readable, unreadable


def _expect(tlv: TLV | None, cls: int, tag: int, what: str) -> TLV:
    if tlv is None or not tlv.is_(cls, tag):
        raise CMSParseError(f"malformed CMS: expected {what}")
    return tlv


def _content_type(buf: memoryview) -> tuple[bool, TLV]:
    if len(buf) == 0:
        raise NotEncryptedError("empty input is not a CMS message")
    try:
        top = read_element(buf, 0, len(buf))
    except CMSParseError:
        if buf[0] != 0x30:
            raise NotEncryptedError("not a CMS message") from None
        raise
    if not top.is_(UNIVERSAL, 16) or not top.constructed:
        raise NotEncryptedError("not a CMS message")
    if top.end != len(buf):
        raise CMSParseError("trailing data after the CMS message")
    kids = list(children(buf, top))
    oid_tlv = _expect(kids[0] if kids else None, UNIVERSAL, 6, "a content type")
    oid = _oid(buf, oid_tlv, "content type")
    if oid == OID_SIGNED_DATA:
        raise NotEncryptedError("this is signed-data, not an encrypted message")
    if oid not in (OID_ENVELOPED_DATA, OID_AUTH_ENVELOPED_DATA):
        raise NotEncryptedError(f"CMS content type {oid} is not an encrypted message")
    if len(kids) != 2:
        raise CMSParseError("malformed ContentInfo")
    explicit = _expect(kids[1], CONTEXT, 0, "[0] content")
    inner = list(children(buf, explicit))
    if len(inner) != 1:
        raise CMSParseError("malformed ContentInfo content")
    return oid == OID_AUTH_ENVELOPED_DATA, _expect(inner[0], UNIVERSAL, 16, "an EnvelopedData SEQUENCE")


def _parse(data: bytes | bytearray | memoryview) -> _Parts:
    buf = memoryview(data)
    if buf.ndim != 1 or buf.itemsize != 1:
        buf = buf.cast("B")
    authenticated, body = _content_type(buf)
    items = list(children(buf, body))
    pos = 0
    _expect(items[pos] if items else None, UNIVERSAL, 2, "a version")
    pos += 1
    if pos < len(items) and items[pos].is_(CONTEXT, 0):
        pos += 1  # originatorInfo: certificates and CRLs we do not need.
    ris_tlv = _expect(items[pos] if pos < len(items) else None, UNIVERSAL, 17, "recipientInfos")
    recipient_infos, unreadable = _recipient_infos(buf, ris_tlv)
    pos += 1
    eci = _expect(items[pos] if pos < len(items) else None, UNIVERSAL, 16, "encryptedContentInfo")
    pos += 1
    eci_items = list(children(buf, eci))
    type_tlv = _expect(eci_items[0] if eci_items else None, UNIVERSAL, 6, "a content type")
    content_type = _oid(buf, type_tlv, "content type")
    if content_type != OID_DATA:
        # S/MIME (RFC 8551 §3.3) always encrypts a MIME entity as id-data.
        raise CMSParseError(f"encrypted content type {content_type} is not id-data")
    alg_tlv = _expect(eci_items[1] if len(eci_items) > 1 else None, UNIVERSAL, 16, "a content-encryption algorithm")
    algorithm, parameters = _content_algorithm(buf, alg_tlv)
    if len(eci_items) != 3 or not eci_items[2].is_(CONTEXT, 0):
        raise CMSParseError("the encrypted content is missing (detached content is not supported)")
    content = octet_chunks(buf, eci_items[2])
    tail = items[pos:]
    mac = b""
    aad = b""
    if authenticated:
        if pos < len(items) and items[pos].is_(CONTEXT, 1):
            # RFC 5083 §2.1: authAttrs are authenticated as a DER SET OF.
            attrs = items[pos]
            aad = b"\x31" + bytes(buf[attrs.start + 1 : attrs.end])
            pos += 1
        mac_tlv = _expect(items[pos] if pos < len(items) else None, UNIVERSAL, 4, "the mac")
        mac = b"".join(bytes(p) for p in octet_chunks(buf, mac_tlv))
        pos += 1
        if pos < len(items) and items[pos].is_(CONTEXT, 2):
            pos += 1  # unauthAttrs
    elif pos < len(items) and items[pos].is_(CONTEXT, 1):
        pos += 1  # unprotectedAttrs
    if pos != len(items):
        raise CMSParseError("unexpected element at the end of the envelope")
    return _Parts(
        authenticated, recipient_infos, unreadable, algorithm, parameters, content, mac, aad, buf, alg_tlv, tail
    )


class OpenEnvelope:
    """An envelope whose content key has been unwrapped."""

    def __init__(self, info: EnvelopeInfo, decryptor: ContentDecryptor, parts: _Parts) -> None:
        self.info = info
        self._decryptor = decryptor
        self._parts = parts
        self._content = parts.content
        self._used = False

    def digest(self) -> bytes:
        """The envelope's replay key, ``fingerprint.envelope_digest`` of its DER, from the parts found already."""
        parts = self._parts
        return located_digest(
            parts.buf,
            authenticated=parts.authenticated,
            algorithm=parts.algorithm_tlv,
            content=parts.content,
            tail=parts.tail,
        )

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the plaintext in pieces of about ``size`` bytes.

        Raises ``DecryptionFailed`` after the last piece when the GCM tag or
        the CBC padding is wrong. Everything yielded before is then
        unauthenticated: the caller must discard it. Can be iterated once.
        """
        if self._used:
            raise RuntimeError("chunks() can be iterated only once")
        self._used = True
        dec = self._decryptor
        for piece in self._content:
            for start in range(0, len(piece), size):
                out = dec.update(piece[start : start + size])
                if out:
                    yield out
        last = dec.finish()
        if last:
            yield last


def _describe_recipients(stanzas: list[Stanza], unreadable: int) -> list[str]:
    found = [f"{unreadable} unreadable RecipientInfo(s)"] if unreadable else []
    for stanza in stanzas:
        if isinstance(stanza, KeyTransStanza):
            found.append("RSA key of " + describe_recipient_id(stanza.rid))
        elif isinstance(stanza, KeyAgreeStanza):
            found.extend("EC key of " + describe_recipient_id(rek.rid) for rek in stanza.keys)
        else:
            found.append(f"a {stanza.kind} recipient (not supported)")
    return found


def open_envelope(
    data: bytes | bytearray | memoryview, identities: Sequence[Identity], *, policy: Policy
) -> OpenEnvelope:
    """Parse the envelope and unwrap its content key with one of ``identities``.

    Raises ``NotEncryptedError``/``CMSParseError`` for input that is not a
    well-formed envelope, ``UnsupportedAlgorithm``/``PolicyViolation`` for
    algorithms, ``NoMatchingIdentity`` when no identity is a recipient, and
    ``DecryptionFailed`` when one is but its key does not unwrap.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes, bytearray or memoryview")
    if not isinstance(policy, Policy):
        raise TypeError("policy must be a mailcrypt.policy.Policy")
    parts = _parse(data)
    if policy.require_authenticated and not parts.authenticated:
        raise PolicyViolation("unauthenticated EnvelopedData is not allowed by the policy")
    decryptor = ContentDecryptor(parts.algorithm, parts.parameters, policy=policy, authenticated=parts.authenticated)
    broken: list[MessageError] = []
    for identity in identities:
        if not isinstance(identity, Identity):
            raise TypeError("identities must be mailcrypt.envelope Identity objects")
        for stanza in parts.recipient_infos:
            try:
                cek, key_management = identity.unwrap(stanza, policy=policy)
                decryptor.start(cek, parts.mac, parts.aad)
            except NotForThisIdentity:
                continue
            except MessageError as exc:
                # For this identity but unusable; another RecipientInfo may still work.
                broken.append(exc)
                continue
            except _ASN1_ERRORS as exc:
                broken.append(CMSParseError("malformed RecipientInfo"))
                broken[-1].__cause__ = exc
                continue
            info = EnvelopeInfo(
                content_type="authEnveloped-data" if parts.authenticated else "enveloped-data",
                cipher=decryptor.cipher,
                identity=identity,
                key_management=key_management,
                recipient_count=len(parts.recipient_infos) + parts.unreadable,
            )
            return OpenEnvelope(info, decryptor, parts)
    if broken:
        raise broken[0]
    if parts.unreadable and not parts.recipient_infos:
        raise CMSParseError(f"none of the {parts.unreadable} RecipientInfo(s) in the message can be read")
    recipients = _describe_recipients(parts.recipient_infos, parts.unreadable)
    tried = [i.label for i in identities]
    raise NoMatchingIdentity(
        f"none of the {len(tried)} identities tried is a recipient of this message"
        f" ({len(recipients)} recipient(s) in it)",
        tried=tried,
        recipients=recipients,
    )


def decrypt_all(envelope: OpenEnvelope) -> bytes:
    """All the plaintext, released only after the integrity check passed."""
    pieces = list(envelope.chunks())
    return b"".join(pieces)

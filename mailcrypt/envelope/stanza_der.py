"""A RecipientInfo's DER to a ``Stanza`` and back: the one place that knows its encoding.

``parse_recipient_info`` reads one RecipientInfo (RFC 5652 §6.2; DER, or BER
as NSS and ``openssl cms -stream`` write it) into the records of
``stanza.py``; ``encode_recipient_info`` writes a record as DER. Key types
(``rsa.py``, ``ecdh.py``) see only the records; the reader and the writer
call these two functions. Parse then encode gives back the original bytes
for any DER RecipientInfo whose version is the one RFC 5652 prescribes (the
version is derived, not stored).

The structure is walked with the TLV framing of ``codec.py`` and only the
leaves are decoded (OIDs and Names by asn1crypto, each remembered by its
bytes). Mail to one person repeats every part of a KeyTransRecipientInfo
but the encrypted key, so what was read from those parts is remembered by
their exact bytes; on output, the parts that do not change from one message
to the next (a certificate's issuer and serial, an algorithm) are encoded
once and framed around the new encrypted key (``codec.der_header``).

What it won't do: interpret algorithm parameters (they stay as sent, for the
key type that owns the algorithm), or read kekri, pwri and ori RecipientInfos
beyond their kind. Every malformation raises ``CMSParseError``.
"""

from __future__ import annotations

import functools

from asn1crypto import core
from asn1crypto import x509 as asn1_x509

from mailcrypt.envelope.codec import (
    CONTEXT,
    TLV,
    UNIVERSAL,
    check_depth,
    children,
    der_header,
    memo_room,
    octet_chunks,
    read_element,
    read_oid,
)
from mailcrypt.envelope.stanza import (
    Algorithm,
    IssuerSerial,
    KeyAgreeStanza,
    KeyId,
    KeyTransStanza,
    Originator,
    OriginatorKey,
    OtherStanza,
    RecipientEncryptedKey,
    RecipientId,
    Stanza,
)
from mailcrypt.errors import CMSParseError

__all__ = ["parse_recipient_info", "encode_recipient_info", "parse_algorithm", "algorithm_der", "parse_oid"]

_INTEGER = 2
_BIT_STRING = 3
_OCTET_STRING = 4
_OID = 6
_SEQUENCE = 16
_GENERALIZED_TIME = 24
# RFC 5652 §6.2: RecipientInfo's tagged choices beyond kari ([1]).
_OTHER_KINDS = {2: "kekri", 3: "pwri", 4: "ori"}
# Errors asn1crypto raises for malformed input.
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError)

# Decoding results that depend on nothing but the bytes decoded, kept for the
# next message (decoding them with asn1crypto cost a fetch more than a tenth
# of the RSA operation per message). Bounded by clearing, and only short keys:
# hostile input must not fill the memory.
_valid_names: set[bytes] = set()
_ktri_fixed: dict[bytes, tuple[RecipientId, Algorithm]] = {}


# --- reading -------------------------------------------------------------------------------


def _whole(buf: memoryview, what: str) -> TLV:
    """The one element ``buf`` holds, from its first byte to its last; ``CMSParseError`` for data after it."""
    top = read_element(buf, 0, len(buf))
    if top.end != len(buf):
        raise CMSParseError(f"trailing data after {what}")
    return top


def parse_recipient_info(der: bytes | bytearray | memoryview) -> Stanza:
    """The ``Stanza`` for one encoded RecipientInfo; ``CMSParseError`` when it is malformed.

    A RecipientInfo of a kind mailcrypt does not read (kekri, pwri, ori)
    becomes an ``OtherStanza`` holding its bytes.
    """
    buf = memoryview(der)
    if buf.ndim != 1 or buf.itemsize != 1:
        buf = buf.cast("B")
    try:
        top = _whole(buf, "a RecipientInfo")
        if not top.constructed:
            raise CMSParseError("malformed RecipientInfo: not a constructed element")
        if top.is_(UNIVERSAL, _SEQUENCE):
            return _ktri(buf, top)
        if top.is_(CONTEXT, 1):
            return _kari(buf, top)
        if top.cls == CONTEXT and top.tag in _OTHER_KINDS:
            return OtherStanza(_OTHER_KINDS[top.tag], bytes(buf))
    except _ASN1_ERRORS as exc:
        raise CMSParseError("malformed RecipientInfo") from exc
    raise CMSParseError("malformed RecipientInfo: unknown choice")


def _expect(tlv: TLV, cls: int, tag: int, *, constructed: bool | None, what: str) -> TLV:
    if not tlv.is_(cls, tag) or (constructed is not None and tlv.constructed != constructed):
        raise CMSParseError(f"malformed RecipientInfo: expected {what}")
    return tlv


def _integer(buf: memoryview, tlv: TLV, what: str) -> int:
    _expect(tlv, UNIVERSAL, _INTEGER, constructed=False, what=what)
    if tlv.value_end == tlv.value_start:
        raise CMSParseError(f"malformed RecipientInfo: empty {what}")
    return int.from_bytes(buf[tlv.value_start : tlv.value_end], "big", signed=True)


def _octets(buf: memoryview, tlv: TLV) -> bytes:
    """The contents of an OCTET STRING, however its tag was set (primitive, or constructed in BER)."""
    return b"".join(bytes(piece) for piece in octet_chunks(buf, tlv))


def _oid_at(buf: memoryview, tlv: TLV) -> str:
    return read_oid(buf, tlv, "a RecipientInfo")


def _algorithm_at(buf: memoryview, tlv: TLV) -> Algorithm:
    """AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL } (RFC 5280 §4.1.1.2)."""
    _expect(tlv, UNIVERSAL, _SEQUENCE, constructed=True, what="an AlgorithmIdentifier")
    kids = list(children(buf, tlv))
    if not 1 <= len(kids) <= 2:
        raise CMSParseError("malformed AlgorithmIdentifier in a RecipientInfo")
    parameters = bytes(buf[kids[1].start : kids[1].end]) if len(kids) == 2 else b""
    return Algorithm(_oid_at(buf, kids[0]), parameters)


def _issuer_serial_at(buf: memoryview, tlv: TLV) -> IssuerSerial:
    """IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber INTEGER } (RFC 5652 §10.2.4)."""
    kids = list(children(buf, tlv))
    if len(kids) != 2:
        raise CMSParseError("malformed issuerAndSerialNumber")
    name = _expect(kids[0], UNIVERSAL, _SEQUENCE, constructed=True, what="an issuer Name")
    issuer = bytes(buf[name.start : name.end])
    if issuer not in _valid_names:
        # The Name is decoded completely once, so that a malformed one makes
        # this RecipientInfo unreadable here rather than fail a match later.
        check_depth(buf, name)
        asn1_x509.Name.load(issuer, strict=True).native  # noqa: B018
        if memo_room(_valid_names, issuer):
            _valid_names.add(issuer)
    return IssuerSerial(issuer, _integer(buf, kids[1], "serial number"))


def _ktri(buf: memoryview, top: TLV) -> KeyTransStanza:
    """KeyTransRecipientInfo ::= SEQUENCE { version, rid, keyEncryptionAlgorithm, encryptedKey } (§6.2.1)."""
    kids = list(children(buf, top))
    if len(kids) != 4:
        raise CMSParseError("malformed KeyTransRecipientInfo")
    last = _expect(kids[3], UNIVERSAL, _OCTET_STRING, constructed=None, what="the encrypted key")
    encrypted = _octets(buf, last)
    # Everything up to the encrypted key's contents is the same in every
    # message to this recipient; a primitive key cannot hide anything else.
    key = None if last.constructed else bytes(buf[top.start : last.value_start])
    fixed = _ktri_fixed.get(key) if key is not None else None
    if fixed is None:
        _integer(buf, kids[0], "version")
        rid_tlv = kids[1]
        rid: RecipientId
        if rid_tlv.is_(UNIVERSAL, _SEQUENCE) and rid_tlv.constructed:
            rid = _issuer_serial_at(buf, rid_tlv)
        elif rid_tlv.is_(CONTEXT, 0):
            rid = KeyId(_octets(buf, rid_tlv))  # [0] IMPLICIT SubjectKeyIdentifier
        else:
            raise CMSParseError("malformed recipient identifier in a KeyTransRecipientInfo")
        fixed = (rid, _algorithm_at(buf, kids[2]))
        if key is not None and memo_room(_ktri_fixed, key):
            _ktri_fixed[key] = fixed
    return KeyTransStanza(fixed[0], fixed[1], encrypted)


def _kari_rid_at(buf: memoryview, tlv: TLV) -> RecipientId:
    """KeyAgreeRecipientIdentifier ::= CHOICE { issuerAndSerialNumber, rKeyId [0] IMPLICIT RecipientKeyIdentifier }."""
    if tlv.is_(UNIVERSAL, _SEQUENCE) and tlv.constructed:
        return _issuer_serial_at(buf, tlv)
    _expect(tlv, CONTEXT, 0, constructed=True, what="a recipient identifier")
    # RecipientKeyIdentifier ::= SEQUENCE { subjectKeyIdentifier, date GeneralizedTime OPTIONAL,
    # other OtherKeyAttribute OPTIONAL } (§6.2.2)
    kids = list(children(buf, tlv))
    if not kids:
        raise CMSParseError("malformed rKeyId")
    ski = _octets(buf, _expect(kids[0], UNIVERSAL, _OCTET_STRING, constructed=None, what="a subjectKeyIdentifier"))
    rest = kids[1:]
    if rest and rest[0].is_(UNIVERSAL, _GENERALIZED_TIME):
        rest = rest[1:]
    if len(rest) > 1 or (rest and not (rest[0].is_(UNIVERSAL, _SEQUENCE) and rest[0].constructed)):
        raise CMSParseError("malformed rKeyId")
    extra = bytes(buf[kids[1].start : kids[-1].end]) if len(kids) > 1 else b""
    return KeyId(ski, extra)


def _originator_at(buf: memoryview, tlv: TLV) -> Originator:
    """originator [0] EXPLICIT OriginatorIdentifierOrKey (§6.2.2)."""
    _expect(tlv, CONTEXT, 0, constructed=True, what="the originator")
    inner = list(children(buf, tlv))
    if len(inner) != 1:
        raise CMSParseError("malformed originator in a KeyAgreeRecipientInfo")
    choice = inner[0]
    if choice.is_(UNIVERSAL, _SEQUENCE) and choice.constructed:
        return _issuer_serial_at(buf, choice)
    if choice.is_(CONTEXT, 0):
        return KeyId(_octets(buf, choice))  # [0] IMPLICIT SubjectKeyIdentifier
    # originatorKey [1] IMPLICIT OriginatorPublicKey ::= SEQUENCE { algorithm, publicKey BIT STRING }
    _expect(choice, CONTEXT, 1, constructed=True, what="the originator")
    kids = list(children(buf, choice))
    if len(kids) != 2:
        raise CMSParseError("malformed originator key")
    bits = _expect(kids[1], UNIVERSAL, _BIT_STRING, constructed=False, what="the originator's public key")
    # A public key is whole octets (X.690 §8.6.2: the first octet counts the unused bits).
    if bits.value_end == bits.value_start or buf[bits.value_start] != 0:
        raise CMSParseError("malformed originator public key")
    return OriginatorKey(_algorithm_at(buf, kids[0]), bytes(buf[bits.value_start + 1 : bits.value_end]))


def _kari(buf: memoryview, top: TLV) -> KeyAgreeStanza:
    """KeyAgreeRecipientInfo ::= SEQUENCE { version, originator [0], ukm [1] OPTIONAL,
    keyEncryptionAlgorithm, recipientEncryptedKeys } (§6.2.2), as [1] IMPLICIT."""
    kids = list(children(buf, top))
    if len(kids) not in (4, 5):
        raise CMSParseError("malformed KeyAgreeRecipientInfo")
    _integer(buf, kids[0], "version")
    originator = _originator_at(buf, kids[1])
    ukm = None
    if len(kids) == 5:
        explicit = _expect(kids[2], CONTEXT, 1, constructed=True, what="the ukm")
        inner = list(children(buf, explicit))
        if len(inner) != 1:
            raise CMSParseError("malformed ukm in a KeyAgreeRecipientInfo")
        ukm = _octets(buf, _expect(inner[0], UNIVERSAL, _OCTET_STRING, constructed=None, what="the ukm"))
    algorithm = _algorithm_at(buf, kids[-2])
    reks_tlv = _expect(kids[-1], UNIVERSAL, _SEQUENCE, constructed=True, what="recipientEncryptedKeys")
    keys = []
    for rek in children(buf, reks_tlv):
        # RecipientEncryptedKey ::= SEQUENCE { rid, encryptedKey OCTET STRING }
        _expect(rek, UNIVERSAL, _SEQUENCE, constructed=True, what="a RecipientEncryptedKey")
        parts = list(children(buf, rek))
        if len(parts) != 2:
            raise CMSParseError("malformed RecipientEncryptedKey")
        encrypted = _expect(parts[1], UNIVERSAL, _OCTET_STRING, constructed=None, what="an encrypted key")
        keys.append(RecipientEncryptedKey(_kari_rid_at(buf, parts[0]), _octets(buf, encrypted)))
    return KeyAgreeStanza(originator, ukm, algorithm, tuple(keys))


def parse_algorithm(der: bytes) -> Algorithm:
    """An encoded AlgorithmIdentifier (the key wrap in ECDH parameters, say); ``CMSParseError`` if malformed."""
    buf = memoryview(der)
    return _algorithm_at(buf, _whole(buf, "an AlgorithmIdentifier"))


def parse_oid(der: bytes) -> str:
    """The dotted form of an encoded OBJECT IDENTIFIER; ``CMSParseError`` if it is not one."""
    buf = memoryview(der)
    return _oid_at(buf, _whole(buf, "an OBJECT IDENTIFIER"))


# --- writing -------------------------------------------------------------------------------


def _frame(cls: int, tag: int, content: bytes) -> bytes:
    return der_header(cls, True, tag, len(content)) + content


def _primitive(cls: int, tag: int, content: bytes) -> bytes:
    return der_header(cls, False, tag, len(content)) + content


def _integer_der(n: int) -> bytes:
    # X.690 §8.3: two's complement in the fewest octets.
    size = ((n if n >= 0 else ~n).bit_length() + 8) // 8
    return _primitive(UNIVERSAL, _INTEGER, n.to_bytes(size, "big", signed=True))


_VERSIONS = {v: _integer_der(v) for v in (0, 2, 3)}


@functools.lru_cache(maxsize=64)
def _oid_der(dotted: str) -> bytes:
    return core.ObjectIdentifier(dotted).dump()


@functools.lru_cache(maxsize=64)
def algorithm_der(algorithm: Algorithm) -> bytes:
    """The DER of an AlgorithmIdentifier, encoded once per algorithm and parameters."""
    return _frame(UNIVERSAL, _SEQUENCE, _oid_der(algorithm.oid) + algorithm.parameters)


@functools.lru_cache(maxsize=256)
def _issuer_serial_der(rid: IssuerSerial) -> bytes:
    # Encoded once per certificate: the proxy encrypts to the same few all day.
    return _frame(UNIVERSAL, _SEQUENCE, rid.issuer + _integer_der(rid.serial))


def _ktri_rid_der(rid: RecipientId) -> bytes:
    if isinstance(rid, IssuerSerial):
        return _issuer_serial_der(rid)
    return _primitive(CONTEXT, 0, rid.ski)  # [0] IMPLICIT SubjectKeyIdentifier


def _kari_rid_der(rid: RecipientId) -> bytes:
    if isinstance(rid, IssuerSerial):
        return _issuer_serial_der(rid)
    # rKeyId [0] IMPLICIT RecipientKeyIdentifier
    return _frame(CONTEXT, 0, _primitive(UNIVERSAL, _OCTET_STRING, rid.ski) + rid.extra)


def _originator_der(originator: Originator) -> bytes:
    if isinstance(originator, IssuerSerial):
        choice = _issuer_serial_der(originator)
    elif isinstance(originator, KeyId):
        choice = _primitive(CONTEXT, 0, originator.ski)
    else:
        bits = _primitive(UNIVERSAL, _BIT_STRING, b"\x00" + originator.public_key)
        choice = _frame(CONTEXT, 1, algorithm_der(originator.algorithm) + bits)
    return _frame(CONTEXT, 0, choice)


@functools.lru_cache(maxsize=256)
def _ktri_head(rid: RecipientId, algorithm: Algorithm) -> bytes:
    """A KeyTransRecipientInfo's version, rid and algorithm: all but the encrypted key, encoded once."""
    # RFC 5652 §6.2.1: version 0 for issuerAndSerialNumber, 2 for subjectKeyIdentifier.
    version = _VERSIONS[0 if isinstance(rid, IssuerSerial) else 2]
    return version + _ktri_rid_der(rid) + algorithm_der(algorithm)


def encode_recipient_info(stanza: Stanza) -> bytes:
    """The DER of a RecipientInfo (RFC 5652 §6.2): the same bytes asn1crypto would encode."""
    if isinstance(stanza, KeyTransStanza):
        key = stanza.encrypted_key
        body = _ktri_head(stanza.rid, stanza.algorithm) + der_header(UNIVERSAL, False, _OCTET_STRING, len(key)) + key
        return der_header(UNIVERSAL, True, _SEQUENCE, len(body)) + body
    if isinstance(stanza, KeyAgreeStanza):
        parts = [_VERSIONS[stanza.version], _originator_der(stanza.originator)]
        if stanza.ukm is not None:
            parts.append(_frame(CONTEXT, 1, _primitive(UNIVERSAL, _OCTET_STRING, stanza.ukm)))
        parts.append(algorithm_der(stanza.algorithm))
        keys = b"".join(
            _frame(UNIVERSAL, _SEQUENCE, _kari_rid_der(k.rid) + _primitive(UNIVERSAL, _OCTET_STRING, k.encrypted_key))
            for k in stanza.keys
        )
        parts.append(_frame(UNIVERSAL, _SEQUENCE, keys))
        # RecipientInfo's kari choice is [1] IMPLICIT KeyAgreeRecipientInfo.
        return _frame(CONTEXT, 1, b"".join(parts))
    if isinstance(stanza, OtherStanza):
        return stanza.der
    raise TypeError("stanza must be a mailcrypt.envelope Stanza")

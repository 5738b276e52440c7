"""RecipientInfo DER <-> Stanza (``mailcrypt.envelope.stanza_der``), and the key types on stanzas.

The round trips run over every RecipientInfo in the OpenSSL-made vectors of
``tests/vectors/`` (ktri and kari, named by issuerAndSerialNumber and by
subjectKeyIdentifier, and a pwri kept as it was sent); the fields read are
checked against asn1crypto's own decoding of the same bytes.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from asn1crypto import cms, core

from mailcrypt import errors
from mailcrypt.envelope import (
    Algorithm,
    IssuerSerial,
    KeyAgreeStanza,
    KeyId,
    KeyTransStanza,
    OtherStanza,
    RecipientEncryptedKey,
    encode_recipient_info,
    parse_recipient_info,
)
from mailcrypt.envelope.codec import read_element
from mailcrypt.envelope.der import to_der
from mailcrypt.policy import DEFAULT_POLICY, MODERN

VECTORS = Path(__file__).resolve().parent / "vectors"


def _cms_bytes(path: Path) -> tuple[dict[str, str], bytes]:
    text = path.read_text()
    head, _, body = text.partition("\n\n")
    header = dict(line.split(": ", 1) for line in head.splitlines())
    pem = body.split("-----BEGIN CMS-----")[1].split("-----END CMS-----")[0]
    return header, base64.b64decode("".join(pem.split()))


def _recipient_infos(stream: bool) -> list[tuple[str, int, bytes]]:
    """(vector, index, RecipientInfo bytes as sent) for OpenSSL's readable envelopes, DER or -stream BER."""
    found = []
    for path in sorted(VECTORS.glob("*.vec")):
        header, data = _cms_bytes(path)
        if header["expect"] not in ("success", "no-match") or not header["tool"].startswith("OpenSSL"):
            continue
        if ("-stream" in header["command"]) != stream:
            continue
        content = cms.ContentInfo.load(data)["content"]
        for i, ri in enumerate(content["recipient_infos"]):
            found.append((path.stem, i, ri.dump()))
    return found


DER_INFOS = _recipient_infos(stream=False)
BER_INFOS = _recipient_infos(stream=True)


def test_the_vectors_cover_every_kind_and_identifier():
    """The round trip below sees ktri and kari by issuer and by key id, and a kind kept as sent."""
    seen = set()
    for _, _, der in DER_INFOS:
        stanza = parse_recipient_info(der)
        if isinstance(stanza, KeyTransStanza):
            seen.add(("ktri", type(stanza.rid).__name__))
        elif isinstance(stanza, KeyAgreeStanza):
            seen.update(("kari", type(k.rid).__name__) for k in stanza.keys)
        else:
            seen.add((stanza.kind, ""))
    assert seen >= {
        ("ktri", "IssuerSerial"),
        ("ktri", "KeyId"),
        ("kari", "IssuerSerial"),
        ("kari", "KeyId"),
        ("pwri", ""),
    }


@pytest.mark.parametrize(("vector", "index", "der"), DER_INFOS, ids=[f"{v}-{i}" for v, i, _ in DER_INFOS])
def test_round_trip_of_openssl_recipient_infos(vector, index, der):
    stanza = parse_recipient_info(der)
    assert encode_recipient_info(stanza) == der
    # Twice: the second reading comes through the memo of fixed parts and must be the same.
    assert parse_recipient_info(der) == stanza


@pytest.mark.parametrize(("vector", "index", "der"), DER_INFOS, ids=[f"{v}-{i}" for v, i, _ in DER_INFOS])
def test_fields_are_what_asn1crypto_reads(vector, index, der):
    stanza = parse_recipient_info(der)
    ri = cms.RecipientInfo.load(der)
    assert stanza.kind == ri.name
    if isinstance(stanza, KeyTransStanza):
        ktri = ri.chosen
        assert ktri["version"].native == f"v{stanza.version}"
        _check_rid(stanza.rid, ktri["rid"])
        _check_algorithm(stanza.algorithm, ktri["key_encryption_algorithm"])
        assert stanza.encrypted_key == ktri["encrypted_key"].native
    elif isinstance(stanza, KeyAgreeStanza):
        kari = ri.chosen
        originator = kari["originator"]
        assert originator.name == "originator_key"
        assert stanza.originator.public_key == originator.chosen["public_key"].native
        assert stanza.originator.algorithm.oid == originator.chosen["algorithm"]["algorithm"].dotted
        assert stanza.ukm == kari["ukm"].native
        _check_algorithm(stanza.algorithm, kari["key_encryption_algorithm"])
        reks = list(kari["recipient_encrypted_keys"])
        assert len(stanza.keys) == len(reks)
        for mine, theirs in zip(stanza.keys, reks, strict=True):
            _check_rid(mine.rid, theirs["rid"])
            assert mine.encrypted_key == theirs["encrypted_key"].native
    else:
        assert isinstance(stanza, OtherStanza) and stanza.der == der


def _check_rid(rid, theirs) -> None:
    if theirs.name == "issuer_and_serial_number":
        assert rid == IssuerSerial(theirs.chosen["issuer"].dump(), theirs.chosen["serial_number"].native)
    elif theirs.name == "r_key_id":
        assert isinstance(rid, KeyId) and rid.ski == theirs.chosen["subject_key_identifier"].native
    else:
        assert rid == KeyId(theirs.chosen.native)


def _check_algorithm(algorithm, theirs) -> None:
    assert algorithm.oid == theirs["algorithm"].dotted
    assert algorithm.parameters == theirs["parameters"].dump()


@pytest.mark.parametrize(("vector", "index", "ber"), BER_INFOS, ids=[f"{v}-{i}" for v, i, _ in BER_INFOS])
def test_stream_recipient_infos_encode_as_their_der(vector, index, ber):
    buf = memoryview(ber)
    assert encode_recipient_info(parse_recipient_info(ber)) == to_der(buf, read_element(buf, 0, len(buf)))


def test_a_remembered_prefix_still_takes_the_new_encrypted_key():
    """Two ktri that differ only in the encrypted key: each keeps its own, and both encode back."""
    first = next(der for _, _, der in DER_INFOS if isinstance(parse_recipient_info(der), KeyTransStanza))
    stanza = parse_recipient_info(first)
    other = KeyTransStanza(stanza.rid, stanza.algorithm, bytes(b ^ 0xFF for b in stanza.encrypted_key))
    second = encode_recipient_info(other)
    assert len(second) == len(first) and second != first
    assert parse_recipient_info(second) == other
    assert parse_recipient_info(first) == stanza


# GeneralizedTime 20260101000000Z, the optional date of an rKeyId.
_DATE = bytes.fromhex("180f32303236303130313030303030305a")


def test_key_id_and_ukm_encode_as_asn1crypto_does():
    """Forms OpenSSL does not write: a kari with ukm, an rKeyId with a date, an originator by key id."""
    stanza = KeyAgreeStanza(
        originator=KeyId(b"\x01" * 20),
        ukm=b"user keying material",
        algorithm=Algorithm("1.3.132.1.11.1", bytes.fromhex("300b060960864801650304012d")),
        keys=(
            RecipientEncryptedKey(KeyId(b"\x02" * 20, extra=_DATE), b"k1"),
            RecipientEncryptedKey(KeyId(b"\x03" * 8), b"k2"),
        ),
    )
    reference = cms.RecipientInfo(
        name="kari",
        value={
            "version": "v3",
            "originator": cms.OriginatorIdentifierOrKey(name="subject_key_identifier", value=b"\x01" * 20),
            "ukm": b"user keying material",
            "key_encryption_algorithm": {
                "algorithm": "1.3.132.1.11.1",
                "parameters": core.Any.load(bytes.fromhex("300b060960864801650304012d")),
            },
            "recipient_encrypted_keys": [
                {
                    "rid": cms.KeyAgreementRecipientIdentifier(
                        name="r_key_id", value={"subject_key_identifier": b"\x02" * 20, "date": "20260101000000Z"}
                    ),
                    "encrypted_key": b"k1",
                },
                {
                    "rid": cms.KeyAgreementRecipientIdentifier(
                        name="r_key_id", value={"subject_key_identifier": b"\x03" * 8}
                    ),
                    "encrypted_key": b"k2",
                },
            ],
        },
    )
    der = encode_recipient_info(stanza)
    assert der == reference.dump()
    assert parse_recipient_info(der) == stanza
    ktri = KeyTransStanza(KeyId(b"\x04" * 20), Algorithm("1.2.840.113549.1.1.1", b"\x05\x00"), b"wrapped")
    assert ktri.version == 2
    reference = cms.RecipientInfo(
        name="ktri",
        value={
            "version": "v2",
            "rid": cms.RecipientIdentifier(name="subject_key_identifier", value=b"\x04" * 20),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15", "parameters": core.Null()},
            "encrypted_key": b"wrapped",
        },
    )
    assert encode_recipient_info(ktri) == reference.dump()


def _tlv(identifier: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    assert len(body) < 0x80
    return bytes([identifier, len(body)]) + body


_V0 = _tlv(0x02, b"\x00")
_ALG = _tlv(0x30, _tlv(0x06, b"\x2a\x03\x04"))
_SKI = _tlv(0x80, b"\x01")
_KEY = _tlv(0x04, b"")


@pytest.mark.parametrize(
    ("name", "der"),
    [
        ("empty", b""),
        ("truncated", _tlv(0x30, _V0, _SKI, _ALG, _KEY)[:-1]),
        ("trailing data", _tlv(0x30, _V0, _SKI, _ALG, _KEY) + b"\x00"),
        ("primitive", _tlv(0x04, b"")),
        ("unknown choice [5]", _tlv(0xA5, b"")),
        ("ktri with three fields", _tlv(0x30, _V0, _SKI, _ALG)),
        ("ktri with an empty version", _tlv(0x30, _tlv(0x02, b""), _SKI, _ALG, _KEY)),
        ("ktri with a bad rid tag", _tlv(0x30, _V0, _tlv(0x81, b"\x01"), _ALG, _KEY)),
        ("ktri with a bad OID", _tlv(0x30, _V0, _SKI, _tlv(0x30, _tlv(0x06, b"\xff\xff\xff")), _KEY)),
        ("ktri with the key not an OCTET STRING", _tlv(0x30, _V0, _SKI, _ALG, _tlv(0x03, b"\x00"))),
        (
            "ktri whose issuer is no Name",
            _tlv(0x30, _V0, _tlv(0x30, _tlv(0x30, _tlv(0x04, b"")), _tlv(0x02, b"\x01")), _ALG, _KEY),
        ),
        (
            "kari with no originator",
            _tlv(0xA1, _tlv(0x02, b"\x03"), _tlv(0xA1, _tlv(0x04, b"")), _ALG, _tlv(0x30, b"")),
        ),
    ],
)
def test_malformed_recipient_infos_raise_cms_parse_error(name, der):
    with pytest.raises(errors.CMSParseError):
        parse_recipient_info(der)


def test_a_public_key_with_unused_bits_is_malformed(ec_p256):
    from mailcrypt.envelope.ecdh import ECDHRecipient

    stanza = ECDHRecipient(ec_p256.cert, policy=DEFAULT_POLICY).wrap(os.urandom(32))
    der = bytearray(encode_recipient_info(stanza))
    point = stanza.originator.public_key
    at = bytes(der).index(b"\x00" + point)
    der[at] = 1
    with pytest.raises(errors.CMSParseError):
        parse_recipient_info(bytes(der))


# --- the key types see stanzas only -----------------------------------------------------


def test_identities_say_not_for_me_for_the_other_kind(rsa2048, ec_p256):
    ktri = rsa2048.identity.ref.rid
    rsa_stanza = KeyTransStanza(ktri, Algorithm("1.2.840.113549.1.1.1", b"\x05\x00"), b"\x00" * 256)
    ec_stanza = KeyAgreeStanza(KeyId(b"x"), None, Algorithm("1.3.132.1.11.1"), ())
    other = OtherStanza("pwri", b"\xa3\x00")
    for identity, foreign in ((rsa2048.identity, ec_stanza), (ec_p256.identity, rsa_stanza)):
        for stanza in (foreign, other):
            with pytest.raises(errors.NotForThisIdentity):
                identity.unwrap(stanza, policy=DEFAULT_POLICY)


def test_rsa_identity_tells_not_for_me_from_broken(rsa2048):
    from mailcrypt.envelope.rsa import RSARecipient

    identity = rsa2048.identity
    cek = os.urandom(32)
    sent = RSARecipient(rsa2048.cert, profile=MODERN, policy=DEFAULT_POLICY).wrap(cek)
    oaep, encrypted = sent.algorithm, sent.encrypted_key
    someone_else = IssuerSerial(identity.ref.rid.issuer, identity.ref.rid.serial + 1)
    with pytest.raises(errors.NotForThisIdentity):
        identity.unwrap(KeyTransStanza(someone_else, oaep, encrypted), policy=DEFAULT_POLICY)
    # Named by the certificate's key identifier, which is the certificate too.
    (ski, *_) = sorted(identity.ref.key_identifiers)
    flipped = bytes([encrypted[0] ^ 1]) + encrypted[1:]
    for rid in (identity.ref.rid, KeyId(ski)):
        assert identity.unwrap(KeyTransStanza(rid, oaep, encrypted), policy=DEFAULT_POLICY)[0] == cek
        with pytest.raises(errors.DecryptionFailed):
            identity.unwrap(KeyTransStanza(rid, oaep, flipped), policy=DEFAULT_POLICY)
        with pytest.raises(errors.UnsupportedAlgorithm) as exc:
            identity.unwrap(KeyTransStanza(rid, Algorithm("1.2.3.4"), b"\x01" * 256), policy=DEFAULT_POLICY)
        assert exc.value.oid == "1.2.3.4"
        # RSAES-OAEP with NULL parameters: for me, but malformed.
        bad_oaep = Algorithm("1.2.840.113549.1.1.7", b"\x05\x00")
        with pytest.raises(errors.CMSParseError):
            identity.unwrap(KeyTransStanza(rid, bad_oaep, encrypted), policy=DEFAULT_POLICY)


def test_ecdh_identity_tells_not_for_me_from_broken(ec_p256):
    from mailcrypt.envelope.ecdh import ECDHRecipient

    identity = ec_p256.identity
    stanza = ECDHRecipient(ec_p256.cert, policy=DEFAULT_POLICY).wrap(os.urandom(32))
    (rek,) = stanza.keys
    elsewhere = KeyAgreeStanza(
        stanza.originator, None, stanza.algorithm, (RecipientEncryptedKey(KeyId(b"nobody"), rek.encrypted_key),)
    )
    with pytest.raises(errors.NotForThisIdentity):
        identity.unwrap(elsewhere, policy=DEFAULT_POLICY)
    flipped = bytes([rek.encrypted_key[0] ^ 1]) + rek.encrypted_key[1:]
    broken = KeyAgreeStanza(stanza.originator, None, stanza.algorithm, (RecipientEncryptedKey(rek.rid, flipped),))
    with pytest.raises(errors.DecryptionFailed):
        identity.unwrap(broken, policy=DEFAULT_POLICY)
    static = KeyAgreeStanza(identity.ref.rid, None, stanza.algorithm, stanza.keys)
    with pytest.raises(errors.UnsupportedAlgorithm):
        identity.unwrap(static, policy=DEFAULT_POLICY)

"""Unit tests of the envelope core: writer, reader, codec, policy, identities.

The wire format is checked by an independent parser (asn1crypto) and the
interop by ``test_envelope_openssl.py``; this module pins the core's own
promises: streaming equals one-shot, DER out, fresh keys, version numbers,
GCM parameters, policy refusals and which identity is reported.
"""

from __future__ import annotations

import hashlib
import os
import random

import pytest
from asn1crypto import algos, cms, core, parser
from asn1crypto import keys as keys_asn1
from conftest import certificate, key_usage
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from mailcrypt import errors
from mailcrypt.envelope import (
    Decrypted,
    EnvelopeWriter,
    Recipient,
    decrypt,
    encrypt,
    identity_from_key,
    open_envelope,
    recipient_from_certificate,
)
from mailcrypt.envelope.codec import CONTEXT, UNIVERSAL, der_header, read_element
from mailcrypt.envelope.fingerprint import envelope_digest
from mailcrypt.envelope.stanza import KeyAgreeStanza, KeyTransStanza, Stanza
from mailcrypt.envelope.stanza_der import encode_recipient_info, parse_recipient_info
from mailcrypt.policy import COMPATIBLE, CONTENT_CIPHERS, DEFAULT_POLICY, MODERN, Policy

CONTENT = b"Content-Type: text/plain\r\n\r\n" + bytes(range(256)) * 3 + b"\r\nend\r\n"
ALL_CIPHERS = tuple(CONTENT_CIPHERS)


class CountingRng:
    """A deterministic rng (SHA-256 in counter mode) that records what it was asked."""

    def __init__(self, seed: bytes = b"seed") -> None:
        self.seed = seed
        self.calls: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.calls.append(n)
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.seed + len(self.calls).to_bytes(4, "big") + len(out).to_bytes(4, "big")).digest()
        return out[:n]


class MemoRecipient(Recipient):
    """A real recipient whose RecipientInfo is computed once per content key.

    RSA padding and ECDH ephemeral keys draw their own randomness, so two
    envelopes with the same content key still differ in the RecipientInfo.
    Wrapping each key only once makes two envelopes built from the same rng
    byte-for-byte comparable. It also records every content key it saw.
    """

    def __init__(self, inner: Recipient) -> None:
        super().__init__(inner.certificate)
        self.inner = inner
        self.seen: dict[bytes, Stanza] = {}

    def wrap(self, cek: bytes) -> Stanza:
        if cek not in self.seen:
            self.seen[cek] = self.inner.wrap(cek)
        return self.seen[cek]


def _memo(kp, profile=COMPATIBLE) -> MemoRecipient:
    return MemoRecipient(recipient_from_certificate(kp.cert, profile=profile))


def _streamed(recipients, content: bytes, sizes, *, profile, rng) -> bytes:
    writer = EnvelopeWriter(recipients, content_length=len(content), profile=profile, rng=rng)
    out = [writer.header()]
    pos = 0
    i = 0
    while pos < len(content):
        size = sizes[i % len(sizes)]
        out.append(writer.update(content[pos : pos + size]))
        pos += size
        i += 1
    out.append(writer.finish())
    return b"".join(out)


def _enveloped(envelope: bytes) -> cms.EnvelopedData | cms.AuthEnvelopedData:
    return cms.ContentInfo.load(envelope)["content"]


def _eci(envelope: bytes) -> cms.EncryptedContentInfo:
    """The (auth)encryptedContentInfo, whichever content type it is in."""
    body = _enveloped(envelope)
    if isinstance(body, cms.AuthEnvelopedData):
        return body["auth_encrypted_content_info"]
    return body["encrypted_content_info"]


# --- EnvelopeWriter ----------------------------------------------------------


@pytest.mark.parametrize("cipher", ALL_CIPHERS)
@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 1000, 70_000])
def test_writer_stream_equals_one_shot(rsa2048, ec_p256, cipher, length):
    profile = COMPATIBLE.with_options(cipher=cipher)
    recipients = [_memo(rsa2048, profile), _memo(ec_p256, profile)]
    content = random.Random(length).randbytes(length)
    one_shot = encrypt(content, recipients, profile=profile, rng=CountingRng())
    for sizes in ([1], [7, 16, 33], [4096], [length or 1], [0, 5, 0, 100_000]):
        streamed = _streamed(recipients, content, sizes, profile=profile, rng=CountingRng())
        assert streamed == one_shot, sizes
    for kp in (rsa2048, ec_p256):
        assert decrypt(one_shot, [kp.identity]).content == content


def test_writer_with_certificates_matches_one_shot_structure(rsa2048):
    """With plain certificates the RSA padding differs; everything else is identical."""
    content = b"x" * 100
    a = encrypt(content, [rsa2048.cert], rng=CountingRng())
    b = _streamed([rsa2048.cert], content, [3], profile=COMPATIBLE, rng=CountingRng())
    assert len(a) == len(b)
    ea, eb = _enveloped(a), _enveloped(b)
    assert ea["encrypted_content_info"].dump() == eb["encrypted_content_info"].dump()
    ka, kb = ea["recipient_infos"][0].chosen, eb["recipient_infos"][0].chosen
    assert ka["rid"].dump() == kb["rid"].dump()
    assert ka["encrypted_key"].native != kb["encrypted_key"].native


@pytest.mark.parametrize("profile", [COMPATIBLE, MODERN], ids=lambda p: p.name)
@pytest.mark.parametrize("length", [0, 5, 16, 3000])
def test_writer_output_is_der_per_independent_parser(rsa2048, ec_p384, many_recipients, profile, length):
    recipients = [rsa2048.cert, ec_p384.cert, *(kp.cert for kp in many_recipients[:6])]
    envelope = encrypt(os.urandom(length), recipients, profile=profile)
    info = cms.ContentInfo.load(envelope, strict=True)
    native = info.native  # must parse completely
    assert native["content_type"] == ("authenticated_enveloped_data" if profile.authenticated else "enveloped_data")
    assert len(native["content"]["recipient_infos"]) == 8
    # DER: re-encoding everything from the parsed values gives the same bytes
    # (definite minimal lengths, SET OF sorted, DEFAULT values omitted...).
    assert cms.ContentInfo.load(envelope).dump(force=True) == envelope
    # ...and no indefinite length anywhere.
    _assert_definite(envelope)


def _assert_definite(der: bytes) -> None:
    buf = memoryview(der)
    stack = [read_element(buf, 0, len(buf))]
    while stack:
        tlv = stack.pop()
        assert not tlv.indefinite
        if tlv.constructed:
            cur = tlv.value_start
            while cur < tlv.value_end:
                child = read_element(buf, cur, tlv.value_end)
                stack.append(child)
                cur = child.end


def test_writer_header_is_a_prefix_with_known_lengths(rsa2048):
    writer = EnvelopeWriter([rsa2048.cert], content_length=40, profile=MODERN)
    header = writer.header()
    body = writer.update(b"a" * 40)
    tail = writer.finish()
    assert len(body) == 40  # GCM: no expansion
    assert tail[:2] == b"\x04\x10" and len(tail) == 18  # mac OCTET STRING, 16 octets
    decrypt(header + body + tail, [rsa2048.identity])
    writer = EnvelopeWriter([rsa2048.cert], content_length=40, profile=COMPATIBLE)
    header = writer.header()
    body = writer.update(b"a" * 40)
    tail = writer.finish()
    assert len(body) + len(tail) == 48  # CBC: padded to the next block


def test_writer_refuses_wrong_amount_of_content(rsa2048):
    writer = EnvelopeWriter([rsa2048.cert], content_length=10)
    writer.header()
    writer.update(b"12345")
    with pytest.raises(ValueError):
        writer.finish()
    writer = EnvelopeWriter([rsa2048.cert], content_length=10)
    writer.header()
    writer.update(b"123456789")
    with pytest.raises(ValueError):
        writer.update(b"ab")
    writer = EnvelopeWriter([rsa2048.cert], content_length=0)
    writer.header()
    with pytest.raises(ValueError):
        writer.update(b"x")


def test_writer_call_order(rsa2048):
    writer = EnvelopeWriter([rsa2048.cert], content_length=1)
    with pytest.raises(RuntimeError):
        writer.update(b"x")
    writer.header()
    with pytest.raises(RuntimeError):
        writer.header()


def test_bad_arguments_raise_early(rsa2048):
    with pytest.raises(TypeError):
        encrypt("text", [rsa2048.cert])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encrypt(b"x", rsa2048.cert)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encrypt(b"x", [])
    with pytest.raises(TypeError):
        encrypt(b"x", ["not a certificate"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        EnvelopeWriter([rsa2048.cert], content_length=-1)
    with pytest.raises(TypeError):
        encrypt(b"x", [rsa2048.cert], profile="modern")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encrypt(b"x", [rsa2048.cert], rng=lambda n: b"\0" * (n - 1))
    envelope = encrypt(b"x", [rsa2048.cert])
    with pytest.raises(TypeError):
        decrypt(envelope.hex(), [rsa2048.identity])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decrypt(envelope, [rsa2048.key])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        decrypt(envelope, [rsa2048.identity], policy=None)  # type: ignore[arg-type]


# --- reading -----------------------------------------------------------------


@pytest.mark.parametrize("profile", [COMPATIBLE, MODERN], ids=lambda p: p.name)
@pytest.mark.parametrize("size", [1, 3, 15, 16, 17, 4096, 1 << 20])
def test_chunks_yield_the_plaintext_in_pieces(rsa2048, profile, size):
    content = os.urandom(5000)
    envelope = encrypt(content, [rsa2048.cert], profile=profile)
    env = open_envelope(envelope, [rsa2048.identity])
    pieces = list(env.chunks(size))
    assert b"".join(pieces) == content
    assert all(pieces)  # no empty pieces
    assert all(len(p) <= size + 16 for p in pieces)
    if size < 1000:
        assert len(pieces) > 1
    with pytest.raises(RuntimeError):
        list(env.chunks(size))


@pytest.mark.parametrize("data_type", [bytes, bytearray, memoryview])
def test_decrypt_accepts_bytes_like(rsa2048, data_type):
    envelope = encrypt(CONTENT, [rsa2048.cert])
    result = decrypt(data_type(envelope), [rsa2048.identity])
    assert isinstance(result, Decrypted)
    assert result.content == CONTENT


def test_envelope_info_fields(rsa2048, ec_p256):
    envelope = encrypt(CONTENT, [rsa2048.cert, ec_p256.cert], profile=MODERN)
    info = decrypt(envelope, [ec_p256.identity]).info
    assert info.content_type == "authEnveloped-data"
    assert info.authenticated
    assert info.cipher == "aes256-gcm"
    assert info.identity is ec_p256.identity
    assert info.key_management == "ecdh-sha256kdf-aes256-wrap"
    assert info.recipient_count == 2
    info = decrypt(encrypt(CONTENT, [rsa2048.cert]), [rsa2048.identity]).info
    assert (info.content_type, info.authenticated, info.key_management) == ("enveloped-data", False, "rsa-pkcs1v15")


# --- fresh keys and rng ------------------------------------------------------


@pytest.mark.parametrize("cipher", ALL_CIPHERS)
def test_fresh_content_key_per_message(rsa2048, cipher):
    profile = COMPATIBLE.with_options(cipher=cipher)
    recipient = _memo(rsa2048, profile)
    a = encrypt(CONTENT, [recipient], profile=profile)
    b = encrypt(CONTENT, [recipient], profile=profile)
    assert a != b
    assert _eci(a).dump() != _eci(b).dump()
    keys = list(recipient.seen)
    key_len = CONTENT_CIPHERS[cipher][1]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert all(len(k) == key_len for k in keys)


@pytest.mark.parametrize("cipher", ALL_CIPHERS)
def test_content_key_and_iv_come_from_rng(rsa2048, cipher):
    profile = COMPATIBLE.with_options(cipher=cipher)
    rng = CountingRng()
    recipient = _memo(rsa2048, profile)
    envelope = encrypt(CONTENT, [recipient], profile=profile, rng=rng)
    mode, key_len = CONTENT_CIPHERS[cipher]
    assert rng.calls == [key_len, 12 if mode == "gcm" else 16]
    # The key is the rng's first output, the IV/nonce its second.
    replay = CountingRng()
    assert list(recipient.seen) == [replay(key_len)]
    params = _eci(envelope)["content_encryption_algorithm"]["parameters"]
    iv = replay(rng.calls[1])
    if mode == "gcm":
        # GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING (12), aes-ICVlen INTEGER }
        assert params.dump()[2:4] == b"\x04\x0c"
        assert params.dump()[4:16] == iv
    else:
        assert params.native == iv
    # The same rng gives the same content encryption: the ciphertext is a function of (key, IV).
    again = encrypt(CONTENT, [recipient], profile=profile, rng=CountingRng())
    assert again == envelope


# --- version numbers and GCM parameters ---------------------------------------


def test_version_fields(rsa2048, rsa3072, ec_p256, ec_p384):
    def versions(envelope):
        body = _enveloped(envelope)
        return body["version"].native, [ri.chosen["version"].native for ri in body["recipient_infos"]]

    # RFC 5652 §6.1: 0 when all RecipientInfos are v0 (ktri with issuerAndSerialNumber)...
    assert versions(encrypt(CONTENT, [rsa2048.cert, rsa3072.cert])) == ("v0", ["v0", "v0"])
    # ...2 as soon as a KeyAgreeRecipientInfo (always v3) is there.
    assert versions(encrypt(CONTENT, [ec_p256.cert])) == ("v2", ["v3"])
    v, ris = versions(encrypt(CONTENT, [rsa2048.cert, ec_p384.cert]))
    assert v == "v2" and sorted(ris) == ["v0", "v3"]
    # RFC 5083 §2.1: AuthEnvelopedData is always version 0.
    assert versions(encrypt(CONTENT, [rsa2048.cert], profile=MODERN)) == ("v0", ["v0"])
    v, ris = versions(encrypt(CONTENT, [rsa2048.cert, ec_p256.cert], profile=MODERN))
    assert v == "v0" and sorted(ris) == ["v0", "v3"]


@pytest.mark.parametrize("cipher", ["aes128-gcm", "aes192-gcm", "aes256-gcm"])
def test_gcm_parameters_and_tag(rsa2048, cipher):
    envelope = encrypt(CONTENT, [rsa2048.cert], profile=MODERN.with_options(cipher=cipher))
    body = _enveloped(envelope)
    algorithm = body["auth_encrypted_content_info"]["content_encryption_algorithm"]
    raw_params = algorithm["parameters"].dump()
    # GCMParameters: 12-octet nonce, then aes-ICVlen 16 written out explicitly
    # (the DEFAULT is 12, so leaving it out would announce a 12-octet tag).
    assert raw_params == b"\x30\x11\x04\x0c" + raw_params[4:16] + b"\x02\x01\x10"
    assert len(body["mac"].native) == 16
    assert body["auth_attrs"].native is None and body["unauth_attrs"].native is None
    assert body["auth_encrypted_content_info"]["content_type"].native == "data"


def test_cbc_parameters(rsa2048):
    body = _enveloped(encrypt(CONTENT, [rsa2048.cert]))
    eci = body["encrypted_content_info"]
    assert eci["content_type"].native == "data"
    assert eci["content_encryption_algorithm"]["algorithm"].native == "aes256_cbc"
    assert len(eci["content_encryption_algorithm"]["parameters"].native) == 16
    assert len(eci["encrypted_content"].native) == (len(CONTENT) // 16 + 1) * 16
    assert body["originator_info"].native is None and body["unprotected_attrs"].native is None


def test_rsa_key_transport_encodings(rsa2048):
    ri = _enveloped(encrypt(CONTENT, [rsa2048.cert]))["recipient_infos"][0].chosen
    # RFC 3370 §4.2.1: rsaEncryption with NULL parameters.
    assert ri["key_encryption_algorithm"].dump() == bytes.fromhex("300d06092a864886f70d0101010500")
    assert ri["rid"].chosen["serial_number"].native == rsa2048.cert.serial_number
    ri = _enveloped(encrypt(CONTENT, [rsa2048.cert], profile=MODERN))["recipient_infos"][0].chosen
    alg = ri["key_encryption_algorithm"]
    assert alg["algorithm"].native == "rsaes_oaep"
    assert alg["parameters"]["hash_algorithm"]["algorithm"].native == "sha256"
    assert alg["parameters"]["mask_gen_algorithm"]["parameters"]["algorithm"].native == "sha256"
    # RFC 4055 §3.1: OAEP with SHA-1 everywhere is the DEFAULT, an empty SEQUENCE.
    ri = _enveloped(encrypt(CONTENT, [rsa2048.cert], profile=MODERN.with_options(oaep_hash="sha1")))
    assert ri["recipient_infos"][0].chosen["key_encryption_algorithm"]["parameters"].dump() == b"\x30\x00"


def test_ecdh_key_agreement_encodings(ec_p384):
    kari = _enveloped(encrypt(CONTENT, [ec_p384.cert]))["recipient_infos"][0].chosen
    alg = kari["key_encryption_algorithm"]
    assert alg["algorithm"].dotted == "1.3.133.16.840.63.0.2"  # dhSinglePass-stdDH-sha1kdf-scheme
    # RFC 3565 §2.3.2: the key-wrap AlgorithmIdentifier has absent parameters.
    assert alg["parameters"].dump() == b"\x30\x0b" + bytes.fromhex("060960864801650304012d")  # aes256-wrap
    originator = kari["originator"].chosen
    assert originator["algorithm"]["algorithm"].native == "ec"
    assert len(originator["public_key"].native) == 1 + 2 * 48  # uncompressed P-384 point
    assert kari["ukm"].native is None
    (rek,) = kari["recipient_encrypted_keys"]
    assert len(rek["encrypted_key"].native) == 40  # AES key wrap of a 32-octet key



@pytest.mark.parametrize("cipher", sorted(CONTENT_CIPHERS))
def test_content_algorithm_identifier_der_is_what_asn1crypto_encodes(cipher):
    from mailcrypt.envelope.content import ContentEncryptor

    enc = ContentEncryptor(cipher, policy=DEFAULT_POLICY, rng=os.urandom)
    assert enc.algorithm_identifier_der() == enc.algorithm_identifier().dump()


@pytest.mark.parametrize("kdf_hash", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("key_wrap", ["aes128-wrap", "aes256-wrap"])
@pytest.mark.parametrize("cek_length", [16, 32])
@pytest.mark.parametrize("keys", ["ec_p256", "ec_p384"])
def test_ecdh_wrap_der_is_what_asn1crypto_encodes(request, keys, kdf_hash, key_wrap, cek_length):
    """The framed encoding of an ECDH stanza is the asn1crypto object's, and the identity opens it."""
    from mailcrypt.envelope.ecdh import ECDHIdentity, ECDHRecipient

    pair = request.getfixturevalue(keys)
    recipient = ECDHRecipient(
        pair.cert, profile=COMPATIBLE.with_options(ecdh_kdf_hash=kdf_hash, key_wrap=key_wrap), policy=DEFAULT_POLICY
    )
    cek = os.urandom(cek_length)
    stanza = recipient.wrap(cek)
    assert isinstance(stanza, KeyAgreeStanza) and stanza.version == 3
    (rek,) = stanza.keys
    wrap_alg = cms.KeyEncryptionAlgorithm.load(stanza.algorithm.parameters)
    reference = cms.RecipientInfo(
        name="kari",
        value=cms.KeyAgreeRecipientInfo(
            {
                "version": "v3",
                "originator": cms.OriginatorIdentifierOrKey(
                    name="originator_key",
                    value=keys_asn1.PublicKeyInfo(
                        {"algorithm": {"algorithm": "ec"}, "public_key": stanza.originator.public_key}
                    ),
                ),
                "key_encryption_algorithm": {"algorithm": stanza.algorithm.oid, "parameters": wrap_alg},
                "recipient_encrypted_keys": [
                    {
                        "rid": cms.KeyAgreementRecipientIdentifier(
                            name="issuer_and_serial_number", value=recipient.ref.issuer_and_serial()
                        ),
                        "encrypted_key": rek.encrypted_key,
                    }
                ],
            }
        ),
    )
    der = encode_recipient_info(stanza)
    assert der == reference.dump()
    # And it is a RecipientInfo that the identity opens to the same key.
    identity = ECDHIdentity(pair.key, pair.cert)
    assert identity.unwrap(parse_recipient_info(der), policy=DEFAULT_POLICY)[0] == cek


@pytest.mark.parametrize(("padding", "oaep_hash"), [("pkcs1v15", "sha256"), ("oaep", "sha1"), ("oaep", "sha256")])
def test_rsa_wrap_der_is_what_asn1crypto_encodes(rsa2048, padding, oaep_hash):
    """The framed encoding of an RSA stanza is the asn1crypto object's, and the identity opens it."""
    from mailcrypt.envelope.rsa import RSARecipient

    recipient = RSARecipient(
        rsa2048.cert, profile=COMPATIBLE.with_options(rsa_padding=padding, oaep_hash=oaep_hash), policy=DEFAULT_POLICY
    )
    cek = os.urandom(32)
    stanza = recipient.wrap(cek)
    assert isinstance(stanza, KeyTransStanza) and stanza.version == 0
    parameters = algos.RSAESOAEPParams.load(stanza.algorithm.parameters) if padding == "oaep" else core.Null()
    reference = cms.RecipientInfo(
        name="ktri",
        value={
            "version": "v0",
            "rid": cms.RecipientIdentifier(name="issuer_and_serial_number", value=recipient.ref.issuer_and_serial()),
            "key_encryption_algorithm": {"algorithm": stanza.algorithm.oid, "parameters": parameters},
            "encrypted_key": stanza.encrypted_key,
        },
    )
    der = encode_recipient_info(stanza)
    assert der == reference.dump()
    assert rsa2048.identity.unwrap(parse_recipient_info(der), policy=DEFAULT_POLICY)[0] == cek

# --- codec.der_header ----------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**24 - 1, 2**24])
@pytest.mark.parametrize(
    ("cls", "constructed", "tag"),
    [(UNIVERSAL, False, 4), (UNIVERSAL, True, 16), (CONTEXT, False, 0), (CONTEXT, True, 0)],
)
def test_der_header_agrees_with_asn1crypto(length, cls, constructed, tag):
    contents = bytes(length)
    reference = parser.emit(cls, 1 if constructed else 0, tag, contents)
    header = der_header(cls, constructed, tag, length)
    assert header == reference[: len(reference) - length]
    if (cls, constructed, tag) == (UNIVERSAL, False, 4):
        assert header + contents == core.OctetString(contents).dump()
    tlv = read_element(memoryview(header + contents), 0, len(header) + length)
    assert (tlv.cls, tlv.constructed, tlv.tag, tlv.value_end - tlv.value_start) == (cls, constructed, tag, length)


def test_der_header_refuses_what_it_cannot_write():
    with pytest.raises(ValueError):
        der_header(UNIVERSAL, False, 31, 1)
    with pytest.raises(ValueError):
        der_header(UNIVERSAL, False, 4, -1)


# --- policy ---------------------------------------------------------------------


def test_policy_require_authenticated_refuses_cbc(rsa2048):
    strict = Policy(require_authenticated=True)
    with pytest.raises(errors.PolicyViolation):
        decrypt(encrypt(CONTENT, [rsa2048.cert], profile=COMPATIBLE), [rsa2048.identity], policy=strict)
    with pytest.raises(errors.PolicyViolation):
        open_envelope(encrypt(CONTENT, [rsa2048.cert]), [rsa2048.identity], policy=strict)
    envelope = encrypt(CONTENT, [rsa2048.cert], profile=MODERN)
    assert decrypt(envelope, [rsa2048.identity], policy=strict).content == CONTENT


def test_policy_without_oaep_refuses_oaep_input(rsa2048):
    no_oaep = Policy(rsa_paddings=frozenset({"pkcs1v15"}))
    envelope = encrypt(CONTENT, [rsa2048.cert], profile=MODERN)
    with pytest.raises(errors.PolicyViolation) as exc_info:
        decrypt(envelope, [rsa2048.identity], policy=no_oaep)
    assert exc_info.value.oid == "1.2.840.113549.1.1.7"
    # ...and will not write it either.
    with pytest.raises(errors.PolicyViolation):
        encrypt(CONTENT, [rsa2048.cert], profile=MODERN, policy=no_oaep)
    no_pkcs1 = Policy(rsa_paddings=frozenset({"oaep"}))
    with pytest.raises(errors.PolicyViolation):
        decrypt(encrypt(CONTENT, [rsa2048.cert]), [rsa2048.identity], policy=no_pkcs1)


def test_policy_oaep_hashes(rsa2048):
    sha256_only = Policy(oaep_hashes=frozenset({"sha256"}))
    envelope = encrypt(CONTENT, [rsa2048.cert], profile=MODERN.with_options(oaep_hash="sha1"))
    with pytest.raises(errors.PolicyViolation):
        decrypt(envelope, [rsa2048.identity], policy=sha256_only)
    envelope = encrypt(CONTENT, [rsa2048.cert], profile=MODERN)
    assert decrypt(envelope, [rsa2048.identity], policy=sha256_only).content == CONTENT


def test_policy_content_ciphers(rsa2048):
    gcm_only = Policy(content_ciphers=frozenset({"aes256-gcm"}))
    with pytest.raises(errors.PolicyViolation):
        encrypt(CONTENT, [rsa2048.cert], policy=gcm_only)
    with pytest.raises(errors.PolicyViolation) as exc_info:
        decrypt(encrypt(CONTENT, [rsa2048.cert]), [rsa2048.identity], policy=gcm_only)
    assert exc_info.value.oid == "2.16.840.1.101.3.4.1.42"
    envelope = encrypt(CONTENT, [rsa2048.cert], profile=MODERN.with_options(cipher="aes128-gcm"))
    with pytest.raises(errors.PolicyViolation):
        decrypt(envelope, [rsa2048.identity], policy=gcm_only)


def test_policy_ecdh_kdf_and_curves(ec_p256, ec_p384):
    sha256_kdf = Policy(ecdh_kdf_hashes=frozenset({"sha256"}))
    with pytest.raises(errors.PolicyViolation):
        encrypt(CONTENT, [ec_p256.cert], profile=COMPATIBLE, policy=sha256_kdf)
    with pytest.raises(errors.PolicyViolation):
        decrypt(encrypt(CONTENT, [ec_p256.cert], profile=COMPATIBLE), [ec_p256.identity], policy=sha256_kdf)
    p256_only = Policy(curves=frozenset({"secp256r1"}))
    with pytest.raises(errors.InvalidRecipient):
        encrypt(CONTENT, [ec_p384.cert], policy=p256_only)
    with pytest.raises(errors.PolicyViolation):
        decrypt(encrypt(CONTENT, [ec_p384.cert]), [ec_p384.identity], policy=p256_only)


def test_policy_min_rsa_bits(rsa2048, rsa3072):
    strict = Policy(min_rsa_bits=3072)
    with pytest.raises(errors.InvalidRecipient) as exc_info:
        encrypt(CONTENT, [rsa2048.cert], policy=strict)
    assert exc_info.value.exit_code == 3
    assert "rsa2048" in exc_info.value.subject
    with pytest.raises(errors.InvalidRecipient):
        recipient_from_certificate(rsa2048.cert, policy=strict)
    # One bad recipient refuses the whole envelope: no silent partial delivery.
    with pytest.raises(errors.InvalidRecipient):
        encrypt(CONTENT, [rsa3072.cert, rsa2048.cert], policy=strict)
    envelope = encrypt(CONTENT, [rsa3072.cert], policy=strict)
    assert decrypt(envelope, [rsa3072.identity], policy=strict).content == CONTENT
    # On input, a 2048-bit identity is refused by the same policy.
    with pytest.raises(errors.PolicyViolation):
        decrypt(encrypt(CONTENT, [rsa2048.cert]), [rsa2048.identity], policy=strict)


@pytest.mark.parametrize(
    ("name", "key", "usage"),
    [
        ("ku-sign-only", "rsa2048", "digital_signature"),
        ("ku-data-enc", "rsa2048", "data_encipherment"),
        ("ku-ec-sign", "ec_p256", "digital_signature"),
        ("ku-ec-keyenc", "ec_p256", "key_encipherment"),
    ],
)
def test_key_usage_without_key_encipherment_is_invalid(make_keypair, keypairs, name, key, usage):
    """keyUsage without the bit the key type needs to carry a content key (RFC 8550 §4.4.2): refused."""
    wrong = make_keypair(name, keypairs[key].key, key_usage=key_usage(usage))
    with pytest.raises(errors.InvalidRecipient):
        encrypt(CONTENT, [wrong.cert])


def test_key_usage_absent_or_with_more_bits_is_valid(make_keypair, rsa2048):
    # No keyUsage extension at all: any use is allowed (RFC 5280 §4.2.1.3).
    unrestricted = make_keypair("ku-none", rsa2048.key, key_usage=None)
    assert decrypt(encrypt(CONTENT, [unrestricted.cert]), [unrestricted.identity]).content == CONTENT
    both = make_keypair("ku-both", rsa2048.key, key_usage=key_usage("digital_signature", "key_encipherment"))
    assert decrypt(encrypt(CONTENT, [both.cert]), [both.identity]).content == CONTENT


# --- identities ---------------------------------------------------------------


def test_identities_tried_in_order_and_match_reported(rsa2048, rsa3072, ec_p256, ec_p384):
    envelope = encrypt(CONTENT, [rsa2048.cert, ec_p256.cert])
    result = decrypt(envelope, [rsa3072.identity, ec_p256.identity, rsa2048.identity])
    assert result.info.identity is ec_p256.identity
    assert result.info.key_management.startswith("ecdh-")
    result = decrypt(envelope, [ec_p384.identity, rsa2048.identity, ec_p256.identity])
    assert result.info.identity is rsa2048.identity
    assert result.info.key_management == "rsa-pkcs1v15"


def test_no_matching_identity_lists_tried_and_recipients(rsa2048, rsa3072, ec_p256, ec_p384):
    envelope = encrypt(CONTENT, [rsa2048.cert, ec_p256.cert])
    tried = [rsa3072.identity, ec_p384.identity]
    with pytest.raises(errors.NoMatchingIdentity) as exc_info:
        decrypt(envelope, tried)
    exc = exc_info.value
    assert exc.exit_code == 3
    assert exc.tried == (rsa3072.identity.label, ec_p384.identity.label)
    assert len(exc.recipients) == 2
    rsa_desc = [r for r in exc.recipients if r.startswith("RSA key of")]
    ec_desc = [r for r in exc.recipients if r.startswith("EC key of")]
    assert len(rsa_desc) == len(ec_desc) == 1
    assert f"{rsa2048.cert.serial_number:#x}" in rsa_desc[0]
    assert f"{ec_p256.cert.serial_number:#x}" in ec_desc[0]
    # The message carries no plaintext or key material, only counts.
    assert CONTENT.decode("latin-1")[:20] not in str(exc)
    with pytest.raises(errors.NoMatchingIdentity) as exc_info:
        open_envelope(envelope, [])
    assert exc_info.value.tried == ()
    assert len(exc_info.value.recipients) == 2


def test_identity_labels_name_the_certificate(rsa2048, ec_p256):
    assert "rsa2048" in rsa2048.identity.label
    assert "ec-p256" in ec_p256.identity.label
    assert rsa2048.identity.label != ec_p256.identity.label
    assert rsa2048.identity.certificate is rsa2048.cert


def test_subject_key_identifier_recipients_match(openssl, tmp_path, make_keypair, rsa2048, ec_p256):
    """``openssl cms -keyid`` names recipients by the SKI extension's value.

    The RFC 5280 method-1 hash is the common case (test_envelope_openssl); a
    certificate with any other SKI value must match by that value.
    """
    odd_rsa = make_keypair("ski-odd-rsa", rsa2048.key, ski=b"\x01\x02\x03\x04\x05\x06\x07\x08")
    odd_ec = make_keypair("ski-odd-ec", ec_p256.key, ski=bytes(range(20, 40)))
    src = tmp_path / "m.txt"
    src.write_bytes(CONTENT)
    out = tmp_path / "m.der"
    openssl(
        "cms", "-encrypt", "-binary", "-keyid", "-aes-256-gcm", "-in", src, "-outform", "DER", "-out", out,
        "-recip", odd_rsa.cert_path, "-recip", odd_ec.cert_path,
    )  # fmt: skip
    envelope = out.read_bytes()
    body = _enveloped(envelope)
    ids = set()
    for ri in body["recipient_infos"]:
        if ri.name == "ktri":
            assert ri.chosen["rid"].name == "subject_key_identifier"
            ids.add(ri.chosen["rid"].chosen.native)
        else:
            (rek,) = ri.chosen["recipient_encrypted_keys"]
            assert rek["rid"].name == "r_key_id"
            ids.add(rek["rid"].chosen["subject_key_identifier"].native)
    assert ids == {b"\x01\x02\x03\x04\x05\x06\x07\x08", bytes(range(20, 40))}
    for kp in (odd_rsa, odd_ec):
        result = decrypt(envelope, [kp.identity])
        assert result.content == CONTENT
        assert result.info.identity is kp.identity
    # The same keys under certificates with the usual SKI are not named by
    # these recipient identifiers.
    with pytest.raises(errors.NoMatchingIdentity) as exc_info:
        decrypt(envelope, [rsa2048.identity, ec_p256.identity])
    assert any("subjectKeyIdentifier 0102030405060708" in r for r in exc_info.value.recipients)


def test_identity_key_must_match_certificate(rsa2048, rsa3072, ec_p256, ec_p384):
    with pytest.raises(ValueError):
        identity_from_key(rsa3072.key, rsa2048.cert)
    with pytest.raises(ValueError):
        identity_from_key(ec_p256.key, ec_p384.cert)
    with pytest.raises(ValueError):
        identity_from_key(rsa2048.key, ec_p256.cert)
    with pytest.raises(ValueError):
        identity_from_key(ec_p256.key, rsa2048.cert)
    other_p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError):
        identity_from_key(other_p256, ec_p256.cert)
    with pytest.raises(TypeError):
        identity_from_key(b"not a key", rsa2048.cert)
    with pytest.raises(TypeError):
        identity_from_key(rsa2048.key, b"not a certificate")  # type: ignore[arg-type]
    assert isinstance(rsa2048.key, rsa.RSAPrivateKey)


def test_other_key_types_are_refused(test_ca):
    ed_key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed25519 recipient")])
    cert = certificate(name, ed_key, issuer=test_ca.cert.subject, issuer_key=test_ca.key)
    with pytest.raises(errors.InvalidRecipient):
        recipient_from_certificate(cert)
    with pytest.raises(errors.InvalidRecipient):
        encrypt(CONTENT, [cert])
    with pytest.raises(TypeError):
        identity_from_key(ed_key, cert)
    with pytest.raises(TypeError):
        recipient_from_certificate(b"not a certificate")  # type: ignore[arg-type]


def test_default_policy_is_the_documented_one():
    assert DEFAULT_POLICY.min_rsa_bits == 2048
    assert not DEFAULT_POLICY.require_authenticated
    assert set(CONTENT_CIPHERS) <= DEFAULT_POLICY.content_ciphers
    assert (COMPATIBLE.cipher, COMPATIBLE.rsa_padding, COMPATIBLE.ecdh_kdf_hash) == ("aes256-cbc", "pkcs1v15", "sha1")
    assert (MODERN.cipher, MODERN.rsa_padding, MODERN.oaep_hash, MODERN.ecdh_kdf_hash) == (
        "aes256-gcm", "oaep", "sha256", "sha256"
    )
    with pytest.raises(ValueError):
        COMPATIBLE.with_options(cipher="des-ede3-cbc")


# --- what is remembered from one message to the next --------------------------


@pytest.mark.parametrize(
    "profile", [COMPATIBLE, MODERN, MODERN.with_options(oaep_hash="sha1")], ids=["v15", "oaep", "oaep-sha1"]
)
def test_rsa_identity_applies_the_policy_to_every_message(rsa2048, profile):
    # A fresh identity: what it reads from the first message is kept for the next ones,
    # which must still meet the policy given with each of them.
    identity = identity_from_key(rsa2048.key, rsa2048.cert)
    padding = "pkcs1v15" if profile.rsa_padding == "pkcs1v15" else "oaep"
    strict = [
        Policy(rsa_paddings=frozenset({"pkcs1v15", "oaep"} - {padding})),
        Policy(min_rsa_bits=3072),
    ]
    if padding == "oaep":
        strict.append(Policy(oaep_hashes=frozenset({"sha384", "sha512"})))
    for _ in range(2):
        envelope = encrypt(CONTENT, [rsa2048.cert], profile=profile)
        assert decrypt(envelope, [identity]).content == CONTENT
        for policy in strict:
            with pytest.raises(errors.PolicyViolation):
                decrypt(envelope, [identity], policy=policy)
        assert decrypt(envelope, [identity]).content == CONTENT


def test_rsa_identity_not_a_recipient_every_time(rsa2048, rsa3072):
    identity = identity_from_key(rsa3072.key, rsa3072.cert)
    for _ in range(3):
        envelope = encrypt(CONTENT, [rsa2048.cert])
        with pytest.raises(errors.NoMatchingIdentity):
            decrypt(envelope, [identity])
    # Its own mail still opens.
    assert decrypt(encrypt(CONTENT, [rsa3072.cert]), [identity]).content == CONTENT


@pytest.mark.parametrize("profile", [COMPATIBLE, MODERN])
def test_open_envelope_digest_is_envelope_digest(rsa2048, ec_p256, profile):
    envelope = encrypt(CONTENT, [rsa2048.cert, ec_p256.cert], profile=profile)
    for identity in (rsa2048.identity, ec_p256.identity):
        assert open_envelope(envelope, [identity]).digest() == envelope_digest(envelope)

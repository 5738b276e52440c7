"""Signatures both ways with ``openssl cms``: RSA PKCS#1 v1.5, RSA-PSS, ECDSA P-256/P-384.

Our signatures, detached (multipart/signed) and opaque (signed-data), must
pass ``openssl cms -verify -CAfile`` with the session CA, also through an
intermediate CA the message carries. What ``openssl cms -sign`` makes, with
and without ``-nodetach``, must verify with ours, including a message with
long header lines, an 8-bit part and a binary attachment; one changed byte
in the content, a signed attribute or the signature value must make it fail
with ``BadSignature``. Then the details: SHA-1 only when the Policy allows
it, no signed attributes, an unknown signer, the ECDSA low-s replay digest,
the chain checks, and sign-then-encrypt through ``unwrap_message``.
"""

from __future__ import annotations

import base64
import datetime
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import KEY_USAGE, certificate, key_usage
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailcrypt import errors
from mailcrypt.envelope import Signer, sigalg, sign, verify
from mailcrypt.mime.enveloped import encrypt_message
from mailcrypt.mime.signed import open_signed, sign_entity, sign_message
from mailcrypt.mime.unwrap import unwrap_message
from mailcrypt.pki.chain import validate_chain
from mailcrypt.policy import Policy

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
# Validity periods around NOW: a day back to a day or to thirty days ahead.
DAY = {"not_before": NOW - datetime.timedelta(days=1), "not_after": NOW + datetime.timedelta(days=1)}
MONTH = {"not_before": NOW - datetime.timedelta(days=1), "not_after": NOW + datetime.timedelta(days=30)}
SHA1_POLICY = Policy(signature_hashes=frozenset({"sha1", "sha256", "sha384", "sha512"}))

SIGNING_USAGE = KEY_USAGE["signing"]

ATTACHMENT = os.urandom(3000)
LONG_VALUE = "x" * 700
ENTITY = (
    b'Content-Type: multipart/mixed; boundary="=-part-="\r\n'
    b"X-Long-Header: " + LONG_VALUE.encode() + b"\r\n"
    b"\r\n"
    b"--=-part-=\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n" + "Grüße aus Köln, 8-bit text.\r\n".encode() + b"\r\n"
    b"--=-part-=\r\n"
    b'Content-Type: application/octet-stream; name="data.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="data.bin"\r\n'
    b"\r\n" + base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n") + b"--=-part-=--\r\n"
)


@dataclass(frozen=True)
class SigningPair:
    name: str
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    key_path: Path
    cert_path: Path
    rsa_padding: str = "pkcs1v15"
    digest: str = "sha256"

    def signer(self, **options: object) -> Signer:
        return Signer(self.key, self.cert, rsa_padding=self.rsa_padding, digest=self.digest, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def signers(make_keypair: Callable[..., object]) -> dict[str, SigningPair]:
    rsa_pair = make_keypair(
        "signer-rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048), key_usage=SIGNING_USAGE
    )
    p256 = make_keypair("signer-p256", ec.generate_private_key(ec.SECP256R1()), key_usage=SIGNING_USAGE)
    p384 = make_keypair("signer-p384", ec.generate_private_key(ec.SECP384R1()), key_usage=SIGNING_USAGE)

    def pair(kp: object, name: str, **kw: str) -> SigningPair:
        return SigningPair(name, kp.key, kp.cert, kp.key_path, kp.cert_path, **kw)  # type: ignore[attr-defined]

    return {
        "rsa": pair(rsa_pair, "rsa"),
        "rsa-pss": pair(rsa_pair, "rsa-pss", rsa_padding="pss"),
        "p256": pair(p256, "p256"),
        "p384": pair(p384, "p384", digest="sha384"),
    }


SIGNER_NAMES = ("rsa", "rsa-pss", "p256", "p384")
SCHEME = {"rsa": "rsa-pkcs1v15", "rsa-pss": "rsa-pss", "p256": "ecdsa", "p384": "ecdsa"}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Chain:
    root: x509.Certificate
    root_path: Path
    intermediate: x509.Certificate
    signer: SigningPair


def _ca_cert(key, subject, issuer_key, issuer_name, path_length):  # type: ignore[no-untyped-def]
    extensions = [
        (x509.BasicConstraints(ca=True, path_length=path_length), True),
        (key_usage("key_cert_sign", "crl_sign"), True),
    ]
    return certificate(subject, key, issuer=issuer_name, issuer_key=issuer_key, extensions=extensions, **MONTH)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """A signer under an intermediate CA under a root of its own (the session CA has pathLen 0)."""
    root_key, sub_key, key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _ca_cert(root_key, _name("mailcrypt test root"), root_key, _name("mailcrypt test root"), None)
    sub = _ca_cert(sub_key, _name("mailcrypt test intermediate"), root_key, root.subject, 0)
    extensions = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (SIGNING_USAGE, True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False),
        (x509.SubjectAlternativeName([x509.RFC822Name("chained@example.test")]), False),
    ]
    leaf = certificate(
        _name("chained signer"), key, issuer=sub.subject, issuer_key=sub_key, extensions=extensions, **MONTH
    )
    d = tmp_path_factory.mktemp("chain")
    key_path, cert_path, root_path = d / "leaf.key", d / "leaf.crt", d / "root.crt"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    root_path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return Chain(root, root_path, sub, SigningPair("chained", key, leaf, key_path, cert_path))


# ------------------------------------------------------------------ ours -> openssl


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
@pytest.mark.parametrize("name", SIGNER_NAMES)
def test_openssl_verifies_our_signature(name, detached, signers, test_ca, openssl, tmp_path) -> None:
    pair = signers[name]
    signed = sign_entity(ENTITY, pair.signer(), signing_time=NOW, detached=detached)
    (tmp_path / "signed.eml").write_bytes(b"MIME-Version: 1.0\r\n" + signed)
    # No -binary: openssl's MIME reader keeps a CR of the last line in binary mode.
    openssl("cms", "-verify", "-in", tmp_path / "signed.eml", "-CAfile", test_ca.cert_path, "-out", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == ENTITY
    # And ours agrees on who signed with what.
    message, info = open_signed(b"MIME-Version: 1.0\r\n" + signed)
    assert info.certificate == pair.cert
    assert info.signature_algorithm == SCHEME[name]
    assert info.digest_algorithm == pair.digest
    assert info.signing_time == NOW
    assert "aes256-gcm" in info.capabilities and "rsa-oaep-sha256" in info.capabilities
    assert message.endswith(ENTITY.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
def test_openssl_verifies_chained_signature(detached, chain, test_ca, openssl, tmp_path) -> None:
    signed = b"MIME-Version: 1.0\r\n" + sign_entity(
        ENTITY, chain.signer.signer(chain=(chain.intermediate,)), signing_time=NOW, detached=detached
    )
    (tmp_path / "signed.eml").write_bytes(signed)
    # Only the root is given: the intermediate must come from the message.
    openssl("cms", "-verify", "-in", tmp_path / "signed.eml", "-CAfile", chain.root_path, "-out", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == ENTITY
    result = unwrap_message(signed, now=NOW, trust_anchors=[chain.root, test_ca.cert])
    layer = result.layers[0]
    assert layer.chain is not None and layer.chain.status == "valid", layer.chain
    assert layer.chain.path == (chain.signer.cert, chain.intermediate, chain.root)
    assert layer.signature is not None and set(layer.signature.certificates) == {chain.signer.cert, chain.intermediate}


def test_path_length_constraint(chain, openssl, tmp_path) -> None:
    """An intermediate under a pathLen-0 intermediate: openssl and ours both refuse the path."""
    sub2_key = ec.generate_private_key(ec.SECP256R1())
    sub_key = ec.generate_private_key(ec.SECP256R1())
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca_cert(root_key, _name("plen root"), root_key, _name("plen root"), None)
    sub = _ca_cert(sub_key, _name("plen sub"), root_key, root.subject, 0)
    sub2 = _ca_cert(sub2_key, _name("plen sub2"), sub_key, sub.subject, None)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate(_name("too deep"), leaf_key, issuer=sub2.subject, issuer_key=sub2_key, serial=1, **DAY)
    result = validate_chain(leaf, intermediates=[sub, sub2], anchors=[root], now=NOW)
    assert result.status == "invalid" and "pathLenConstraint" in result.reason
    assert validate_chain(leaf, intermediates=[sub, sub2], anchors=[sub], now=NOW).trusted


# ------------------------------------------------------------------ openssl -> ours


def _openssl_sign(
    openssl, pair: SigningPair, tmp_path: Path, *, nodetach: bool, extra: tuple[str, ...] = (), outform: str = "SMIME"
) -> bytes:
    (tmp_path / "entity").write_bytes(ENTITY)
    args = [
        "cms",
        "-sign",
        "-binary",
        "-in",
        tmp_path / "entity",
        "-signer",
        pair.cert_path,
        "-inkey",
        pair.key_path,
        "-md",
        pair.digest,
        "-outform",
        outform,
        "-out",
        tmp_path / "signed",
    ]
    if outform == "SMIME":
        args += ["-from", "sender@example.test", "-to", "bob@example.test", "-subject", "long " + LONG_VALUE]
    if nodetach:
        args.append("-nodetach")
    if pair.rsa_padding == "pss":
        args += ["-keyopt", "rsa_padding_mode:pss"]
    openssl(*args, *extra)
    return (tmp_path / "signed").read_bytes()


@pytest.mark.parametrize("nodetach", [False, True], ids=["detached", "nodetach"])
@pytest.mark.parametrize("name", SIGNER_NAMES)
def test_we_verify_openssl_signature(name, nodetach, signers, test_ca, openssl, tmp_path) -> None:
    pair = signers[name]
    # openssl writes its own clock as signingTime: it lies between these two readings
    # (to the second), however long the suite has been running.
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    smime = _openssl_sign(openssl, pair, tmp_path, nodetach=nodetach)
    after = datetime.datetime.now(datetime.UTC)
    result = unwrap_message(smime, now=after, trust_anchors=[test_ca.cert])
    assert [layer.form for layer in result.layers] == ["opaque" if nodetach else "detached"]
    layer = result.layers[0]
    assert layer.signature is not None and layer.chain is not None
    assert layer.signature.certificate == pair.cert
    assert layer.signature.signature_algorithm == SCHEME[name]
    assert layer.signature.digest_algorithm == pair.digest
    assert layer.chain.status == "valid", layer.chain.reason
    assert before <= layer.signature.signing_time <= after
    # The final message: the outer headers (long Subject) and the signed entity, byte for byte.
    assert b"Subject: long " + LONG_VALUE.encode() in result.message
    assert result.message.endswith(ENTITY.split(b"\r\n\r\n", 1)[1])
    assert b"X-Long-Header: " + LONG_VALUE.encode() in result.message
    assert "Grüße aus Köln".encode() in result.message
    assert result.replay_key == (layer.digest, layer.signature.signing_time, "signature")


@pytest.mark.parametrize("nodetach", [False, True], ids=["detached", "nodetach"])
def test_changed_content_byte_is_refused(nodetach, signers, openssl, tmp_path) -> None:
    smime = _openssl_sign(openssl, signers["rsa"], tmp_path, nodetach=nodetach)
    if nodetach:
        der = bytearray(
            base64.b64decode(smime.split(b"\n\n", 1)[1] if b"\r\n\r\n" not in smime else smime.split(b"\r\n\r\n", 1)[1])
        )
        at = der.find("Köln".encode())
        der[at] ^= 0x01
        with pytest.raises(errors.BadSignature, match="message digest differs"):
            verify(bytes(der))
        return
    at = smime.find("Köln".encode())
    tampered = smime[:at] + b"k" + smime[at + 1 :]
    with pytest.raises(errors.BadSignature, match="message digest differs"):
        unwrap_message(tampered, now=NOW)


def _signing_time_digit(der: bytes) -> int:
    oid = bytes.fromhex("06092a864886f70d010905")  # id-signingTime
    at = der.find(oid)
    assert at > 0
    utc = der.find(b"\x17\x0d", at)
    return utc + 2 + 11  # A seconds digit of YYMMDDHHMMSSZ.


@pytest.mark.parametrize("name", SIGNER_NAMES)
def test_changed_signed_attribute_or_signature_is_refused(name, signers, openssl, tmp_path) -> None:
    der = _openssl_sign(openssl, signers[name], tmp_path, nodetach=False, outform="DER")
    assert verify(der, content=ENTITY).certificate == signers[name].cert
    at = _signing_time_digit(der)
    changed = der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]
    with pytest.raises(errors.BadSignature, match="does not verify"):
        verify(changed, content=ENTITY)
    last = len(der) - 3  # Inside the signature value, the last element.
    flipped = der[:last] + bytes([der[last] ^ 0x40]) + der[last + 1 :]
    with pytest.raises(errors.BadSignature):
        verify(flipped, content=ENTITY)
    with pytest.raises(errors.BadSignature, match="message digest differs"):
        verify(der, content=ENTITY.replace(b"8-bit", b"8-Bit"))


def test_changed_message_digest_attribute_is_refused(signers, openssl, tmp_path) -> None:
    der = _openssl_sign(openssl, signers["p256"], tmp_path, nodetach=False, outform="DER")
    at = der.find(bytes.fromhex("06092a864886f70d010904")) + 11 + 4  # Into the messageDigest value.
    changed = der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]
    with pytest.raises(errors.BadSignature):
        verify(changed, content=ENTITY)


def test_sha1_only_when_the_policy_allows(signers, openssl, tmp_path) -> None:
    pair = signers["rsa"]
    der = _openssl_sign(
        openssl, SigningPair(**{**pair.__dict__, "digest": "sha1"}), tmp_path, nodetach=True, outform="DER"
    )
    with pytest.raises(errors.PolicyViolation, match="SHA1"):
        verify(der)
    assert verify(der, policy=SHA1_POLICY).digest_algorithm == "sha1"


def test_no_signed_attributes(signers, openssl, tmp_path) -> None:
    der = _openssl_sign(openssl, signers["p384"], tmp_path, nodetach=False, outform="DER", extra=("-noattr",))
    info = verify(der, content=ENTITY)
    assert info.signing_time is None and info.capabilities == ()
    with pytest.raises(errors.BadSignature):
        verify(der, content=ENTITY + b"\r\n")


def test_unknown_signer_without_certificates(signers, openssl, tmp_path) -> None:
    pair = signers["p256"]
    der = _openssl_sign(openssl, pair, tmp_path, nodetach=True, outform="DER", extra=("-nocerts",))
    with pytest.raises(errors.UnknownSigner) as caught:
        verify(der)
    assert caught.value.exit_code == 5
    assert verify(der, certificates=[pair.cert]).certificate == pair.cert


def test_lf_line_ends_are_canonicalised(signers) -> None:
    signed = sign_message(
        b"From: a@example.test\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n",
        signers["rsa"].signer(),
        signing_time=NOW,
    )
    as_stored = signed.replace(b"\r\n", b"\n")  # A Maildir file with Unix line ends.
    message, info = open_signed(as_stored)
    assert info.certificate == signers["rsa"].cert
    assert message.endswith(b"line one\r\nline two\r\n")


# ------------------------------------------------------------------ details


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name)
def test_ecdsa_replay_digest_is_the_same_for_high_and_low_s(curve) -> None:
    key = ec.generate_private_key(curve)
    signature = key.sign(b"data", ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(signature)
    order = sigalg._CURVE_ORDERS[curve.name]
    twin = utils.encode_dss_signature(r, order - s)
    key.public_key().verify(twin, b"data", ec.ECDSA(hashes.SHA256()))  # Both are valid...
    # ...so both must give one replay key.
    assert sigalg.signature_digest(key.public_key(), signature) == sigalg.signature_digest(key.public_key(), twin)


def test_our_signed_attributes_and_structure(signers) -> None:
    from asn1crypto import cms

    der = sign(ENTITY, signers["p256"].signer(), signing_time=NOW, detached=True)
    sd = cms.ContentInfo.load(der)["content"]
    assert sd["encap_content_info"]["content"].native is None
    assert len(sd["certificates"]) == 1
    attrs = [a["type"].native for a in sd["signer_infos"][0]["signed_attrs"]]
    assert sorted(attrs) == sorted(["content_type", "signing_time", "message_digest", "smime_capabilities"])
    with pytest.raises(ValueError, match="timezone-aware"):
        sign(ENTITY, signers["p256"].signer(), signing_time=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="does not belong"):
        Signer(signers["p256"].key, signers["rsa"].cert)


@pytest.mark.parametrize("name", SIGNER_NAMES)
@pytest.mark.parametrize("detached", [True, False])
def test_signed_data_is_der(name, detached, signers) -> None:
    """``sign`` frames parts encoded once; the whole must be the DER asn1crypto would write."""
    from asn1crypto import cms

    signer = signers[name].signer()
    for when in (NOW, datetime.datetime(2051, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)):
        der = sign(ENTITY, signer, signing_time=when, detached=detached)
        parsed = cms.ContentInfo.load(der)
        assert parsed.dump(force=True) == der
        info = parsed["content"]["signer_infos"][0]
        times = [a["values"][0] for a in info["signed_attrs"] if a["type"].native == "signing_time"]
        # RFC 5652 §11.3: GeneralizedTime from 2050 on.
        assert times[0].name == ("utc_time" if when.year < 2050 else "generalized_time")
        assert times[0].native == when
        assert verify(der, content=ENTITY if detached else None).signing_time == when


def test_detached_signature_with_differing_embedded_content_is_refused(signers) -> None:
    opaque = sign(ENTITY, signers["rsa"].signer(), signing_time=NOW, detached=False)
    assert verify(opaque, content=ENTITY).content == ENTITY
    with pytest.raises(errors.BadSignature, match="differs"):
        verify(opaque, content=ENTITY.replace(b"aus", b"von"))


def test_chain_checks(signers, test_ca, make_keypair, chain) -> None:
    pair = signers["rsa"]
    ok = validate_chain(pair.cert, anchors=[test_ca.cert], now=NOW)
    assert ok.trusted and ok.path == (pair.cert, test_ca.cert)
    assert validate_chain(pair.cert, anchors=[], now=NOW).status == "not-checked"
    expired = validate_chain(pair.cert, anchors=[test_ca.cert], now=NOW + datetime.timedelta(days=400))
    assert expired.status == "invalid" and "not valid at" in expired.reason
    other = ec.generate_private_key(ec.SECP256R1())
    stranger = validate_chain(pair.cert, anchors=[_self_signed(other, test_ca.cert.subject)], now=NOW)
    assert stranger.status == "invalid" and "does not verify" in stranger.reason
    # The conftest recipients carry keyUsage keyEncipherment only: not for signing.
    encrypt_only = make_keypair("encrypt-only", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    refused = validate_chain(encrypt_only.cert, anchors=[test_ca.cert], now=NOW)
    assert refused.status == "invalid" and "digitalSignature" in refused.reason
    assert validate_chain(pair.cert, anchors=[pair.cert], now=NOW).trusted  # Trusted directly.
    missing = validate_chain(chain.signer.cert, anchors=[chain.root], now=NOW)  # Intermediate not given.
    assert missing.status == "invalid" and "neither a trust anchor" in missing.reason


def _self_signed(key: ec.EllipticCurvePrivateKey, name: x509.Name) -> x509.Certificate:
    ca = [(x509.BasicConstraints(ca=True, path_length=None), True)]
    return certificate(name, key, extensions=ca, serial=1, **DAY)


def test_untrusted_signer_is_refused_when_trust_is_required(signers) -> None:
    signed = b"MIME-Version: 1.0\r\n" + sign_entity(ENTITY, signers["rsa"].signer(), signing_time=NOW)
    other = _self_signed(ec.generate_private_key(ec.SECP256R1()), _name("some other CA"))
    with pytest.raises(errors.UntrustedSigner) as caught:
        unwrap_message(signed, now=NOW, trust_anchors=[other], require_trusted=True)
    assert caught.value.exit_code == 5 and caught.value.status == "invalid"


def test_sign_then_encrypt_round_trip(signers, rsa2048, test_ca) -> None:
    original = (
        b"From: Signer <signer-rsa@example.test>\r\n"
        b"To: rsa2048@example.test\r\n"
        b"Subject: the secret plan\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"meet at noon\r\n"
    )
    signed = sign_message(original, signers["rsa"].signer(), signing_time=NOW)
    assert re.search(rb"Message-ID: <[0-9a-f]{32}@example\.test>\r\n", signed)
    encrypted = encrypt_message(signed, [rsa2048.cert])
    assert b"the secret plan" not in encrypted and b"Message-ID" in encrypted
    result = unwrap_message(encrypted, [rsa2048.identity], now=NOW, trust_anchors=[test_ca.cert])
    assert [(layer.kind, layer.form) for layer in result.layers] == [
        ("enveloped", "enveloped-data"),
        ("signed", "detached"),
    ]
    assert result.content_signatures == (result.layers[1],)
    assert result.layers[1].chain is not None and result.layers[1].chain.trusted
    message = result.message
    assert b"Subject: the secret plan\r\n" in message
    assert b"Content-Type: text/plain; charset=utf-8\r\n" in message
    assert b"protected-headers" not in message and b"multipart/signed" not in message
    assert message.endswith(b"\r\n\r\nmeet at noon\r\n")
    assert re.search(rb"Message-ID: <[0-9a-f]{32}@example\.test>", message)
    assert "CN=signer-rsa" in result.layers[1].describe() and "chain: valid" in result.layers[1].describe()
    digest, when, kind = result.replay_key  # type: ignore[misc]
    assert (digest, when, kind) == (result.layers[1].digest, NOW, "signature")


def test_too_many_layers_are_refused(signers) -> None:
    message = b"Subject: deep\r\n\r\nbody\r\n"
    for _ in range(4):
        message = sign_message(message, signers["p256"].signer(), signing_time=NOW, detached=False)
    assert len(unwrap_message(message, now=NOW).layers) == 4
    with pytest.raises(errors.CMSParseError, match="nested"):
        unwrap_message(message, now=NOW, max_layers=3)


# ------------------------------------------------------------------ small parts


def test_signed_attributes_are_rebuilt_as_der() -> None:
    """RFC 5652 §5.4: BER (indefinite lengths, unsorted SET) is hashed in its DER form."""
    from mailcrypt.envelope.der import set_of_der

    a = bytes.fromhex("3009060355040331020c00")  # SEQUENCE { OID, SET { UTF8String "" } }
    b = bytes.fromhex("3007060355040a3100")
    ber = b"\xa0\x80" + b + bytes.fromhex("3080060355040331800c0000000000") + b"\x00\x00"
    assert set_of_der(ber) == b"\x31" + bytes([len(a) + len(b)]) + min(a, b) + max(a, b)
    constructed = bytes.fromhex("a0 11 30 0f 06 03 55 04 03 24 80 04 01 61 04 01 62 00 00".replace(" ", ""))
    assert set_of_der(constructed) == bytes.fromhex("310b300906035504030402 6162".replace(" ", ""))


def test_capabilities_round_trip() -> None:
    from mailcrypt.envelope.capabilities import (
        OUR_CAPABILITIES,
        capabilities_attribute,
        parse_capabilities,
        supports_profile,
    )
    from mailcrypt.policy import COMPATIBLE, MODERN

    attribute = capabilities_attribute()
    assert parse_capabilities(attribute["values"]) == OUR_CAPABILITIES
    assert supports_profile(OUR_CAPABILITIES, MODERN, key_type="rsa")
    assert supports_profile(OUR_CAPABILITIES, MODERN, key_type="ec")
    assert supports_profile(["aes256-cbc", "rsa-pkcs1v15"], COMPATIBLE, key_type="rsa")
    assert not supports_profile(["aes256-cbc", "rsa-pkcs1v15"], MODERN, key_type="rsa")
    assert not supports_profile(["aes256-gcm", "ecdh-sha1kdf-aes128-wrap"], MODERN, key_type="ec")


def _issue(subject: str, issuer_key, issuer_name, *, ca: bool, extensions=(), email: str | None = None):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    written: list[tuple[x509.ExtensionType, bool]] = [(x509.BasicConstraints(ca=ca, path_length=None), True)]
    if email:
        written.append((x509.SubjectAlternativeName([x509.RFC822Name(email)]), False))
    written += [(ext, True) for ext in extensions]
    return key, certificate(_name(subject), key, issuer=issuer_name, issuer_key=issuer_key, extensions=written, **DAY)


def test_rfc822_name_constraints() -> None:
    root_key, root = _issue("nc root", None, None, ca=True)
    permitted = x509.NameConstraints(permitted_subtrees=[x509.RFC822Name(".example.test")], excluded_subtrees=None)
    sub_key, sub = _issue("nc sub", root_key, root.subject, ca=True, extensions=[permitted])
    _, inside = _issue("inside", sub_key, sub.subject, ca=False, email="a@mail.example.test")
    _, outside = _issue("outside", sub_key, sub.subject, ca=False, email="a@example.org")
    assert validate_chain(inside, intermediates=[sub], anchors=[root], now=NOW).trusted
    refused = validate_chain(outside, intermediates=[sub], anchors=[root], now=NOW)
    assert refused.status == "invalid" and "a@example.org is outside the permitted subtrees" in refused.reason
    odd = x509.NameConstraints(
        permitted_subtrees=[x509.RegisteredID(x509.ObjectIdentifier("1.2.3"))], excluded_subtrees=None
    )
    odd_key, odd_sub = _issue("odd sub", root_key, root.subject, ca=True, extensions=[odd])
    _, leaf = _issue("leaf", odd_key, odd_sub.subject, ca=False, email="a@example.test")
    assert validate_chain(leaf, intermediates=[odd_sub], anchors=[root], now=NOW).status == "unsupported"


def test_path_building_is_bounded() -> None:
    """Many certificates with one subject, cross-signed: the search gives up instead of exploding."""
    root_key, root = _issue("bounded root", None, None, ca=True)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(12)]
    same = _name("same name")
    ca = [(x509.BasicConstraints(ca=True, path_length=None), True)]
    mesh = [
        certificate(same, k, issuer=same, issuer_key=keys[(i + 1) % len(keys)], extensions=ca, **DAY)
        for i, k in enumerate(keys)
    ]
    _, leaf = _issue("leaf in mesh", keys[0], same, ca=False)
    result = validate_chain(leaf, intermediates=mesh, anchors=[root], now=NOW)
    assert result.status == "invalid"

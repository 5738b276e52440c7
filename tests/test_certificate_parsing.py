"""The one certificate parser: malformed certificates are typed errors, in messages and in files.

Each malformed certificate is made from a good one by editing its TBS with
asn1crypto and signing it again with the test CA (so only the edited field
is wrong): an unknown public key algorithm, an unknown version, a negative
or zero serial number, a duplicated extension, a subjectAltName that does
not decode, and a truncated certificate. In a message (SignedData carrying
it instead of the signer's certificate) each must be a ``MessageError``
(exit 4), never a library exception or a warning; in a file, a
``ConfigError`` naming the file.
"""

from __future__ import annotations

import base64
import datetime
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cli_run import verify_strictly
from conftest import CertificateAuthority, KeyPair
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailcrypt import errors
from mailcrypt.cli import main
from mailcrypt.envelope import Signer
from mailcrypt.keydir import KeyDirectory, load_certificates, load_key_pair
from mailcrypt.mime import sign_message, unwrap_message
from mailcrypt.pki import load_certificate
from mailcrypt.pki import load_certificates as parse_certificates

NOW = datetime.datetime.now(datetime.UTC)
MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"

# An edit changes a certificate's TBS and returns its new DER.
Edit = Callable[[asn1_x509.TbsCertificate], bytes]


def _der(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined, no-any-return]


def _tlv(tag: int, contents: bytes) -> bytes:
    n = len(contents)
    length = bytes([n]) if n < 0x80 else bytes([0x81, n]) if n < 0x100 else b"\x82" + n.to_bytes(2, "big")
    return bytes([tag]) + length + contents


def forge(keypair: KeyPair, ca: CertificateAuthority, edit: Edit) -> bytes:
    """``keypair``'s certificate with ``edit`` applied to its TBS, signed again by the CA.

    Assembled as raw DER, so that asn1crypto never parses (or refuses) the bad value.
    """
    certificate = asn1_x509.Certificate.load(_der(keypair.cert))
    original = certificate["tbs_certificate"].dump()
    tbs_der = edit(certificate["tbs_certificate"])
    assert tbs_der != original
    signature = ca.key.sign(tbs_der, ec.ECDSA(hashes.SHA256()))
    algorithm = certificate["signature_algorithm"].dump()
    bits = _tlv(0x03, b"\x00" + signature)  # a BIT STRING with no unused bits
    return _tlv(0x30, tbs_der + algorithm + bits)


def _serial(value: int) -> Edit:
    def edit(tbs: asn1_x509.TbsCertificate) -> bytes:
        tbs["serial_number"] = value
        return tbs.dump()  # type: ignore[no-any-return]

    return edit


def _version(value: int) -> Edit:
    def edit(tbs: asn1_x509.TbsCertificate) -> bytes:
        tbs["version"] = value
        return tbs.dump()  # type: ignore[no-any-return]

    return edit


def _unknown_key_algorithm(tbs: asn1_x509.TbsCertificate) -> bytes:
    # The SubjectPublicKeyInfo (the seventh TBS field, RFC 5280 §4.1) with the algorithm 1.2.3.4.5.
    fields = _elements(tbs.dump())
    bits = _elements(fields[6])[1]
    fields[6] = _tlv(0x30, _tlv(0x30, bytes.fromhex("06042a030405")) + bits)
    return _tlv(0x30, b"".join(fields))


def _elements(der: bytes) -> list[bytes]:
    """The raw DER of each element of a DER SEQUENCE (definite lengths)."""
    body, pos, elements = der[2 + (der[1] & 0x7F if der[1] & 0x80 else 0) :], 0, []
    while pos < len(body):
        first = body[pos + 1]
        n = first & 0x7F if first & 0x80 else 0
        length = int.from_bytes(body[pos + 2 : pos + 2 + n], "big") if n else first
        end = pos + 2 + n + length
        elements.append(body[pos:end])
        pos = end
    return elements


def _with_extensions(tbs: asn1_x509.TbsCertificate, extensions: list[bytes]) -> bytes:
    """The TBS with its Extensions ([3] EXPLICIT, last in RFC 5280 §4.1) made of these raw DERs."""
    fields = _elements(tbs.dump())[:-1]
    return _tlv(0x30, b"".join([*fields, _tlv(0xA3, _tlv(0x30, b"".join(extensions)))]))


def _duplicate_extension(tbs: asn1_x509.TbsCertificate) -> bytes:
    extensions = [e.dump() for e in tbs["extensions"]]
    return _with_extensions(tbs, [*extensions, extensions[0]])


def _bad_subject_alt_name(tbs: asn1_x509.TbsCertificate) -> bytes:
    # A GeneralNames whose rfc822Name says it is 127 bytes long in a 2-byte value.
    bad = bytes.fromhex("300b0603551d1104043002817f")
    kept = [e.dump() for e in tbs["extensions"] if e["extn_id"].dotted != "2.5.29.17"]
    return _with_extensions(tbs, [*kept, bad])


def _long_country_name(tbs: asn1_x509.TbsCertificate) -> bytes:
    tbs["subject"] = asn1_x509.Name.build({"country_name": "USA", "common_name": "three letters"})
    return tbs.dump()  # type: ignore[no-any-return]


MALFORMED: dict[str, Edit] = {
    "three-letter country": _long_country_name,
    "negative serial": _serial(-1),
    "zero serial": _serial(0),
    "version 7": _version(7),
    "duplicate extension": _duplicate_extension,
    "bad subjectAltName": _bad_subject_alt_name,
}


@pytest.fixture(scope="module")
def forged(rsa2048: KeyPair, test_ca: CertificateAuthority) -> dict[str, bytes]:
    made = {name: forge(rsa2048, test_ca, edit) for name, edit in MALFORMED.items()}
    # The certificate's content cut short, in a SEQUENCE whose length says so (it still frames).
    content = _der(rsa2048.cert)[4:-20]
    made["truncated"] = b"\x30\x82" + len(content).to_bytes(2, "big") + content
    made["unknown key algorithm"] = forge(rsa2048, test_ca, _unknown_key_algorithm)
    return made


@pytest.mark.parametrize("name", [*MALFORMED, "truncated"])
def test_the_parser_refuses_a_malformed_certificate_typed_and_without_a_warning(
    forged: dict[str, bytes], name: str
) -> None:
    before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(errors.MalformedCertificate) as caught:
            load_certificate(forged[name])
    assert caught.value.reason
    # The parser changes no process-wide warning state (the proxy's worker threads share it).
    assert warnings.filters == before


def test_the_parser_reads_the_serial_from_the_der_before_cryptography(forged: dict[str, bytes]) -> None:
    with pytest.raises(errors.MalformedCertificate, match=r"serial number -1.*RFC 5280 §4\.1\.2\.2"):
        load_certificate(forged["negative serial"])


def test_parsing_in_threads_leaves_the_warning_filters_alone(forged: dict[str, bytes], rsa2048: KeyPair) -> None:
    before = list(warnings.filters)
    failures: list[BaseException] = []

    def work() -> None:
        for _ in range(50):
            try:
                load_certificate(_der(rsa2048.cert))
                load_certificate(forged["negative serial"])
            except errors.MalformedCertificate:
                continue
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert warnings.filters == before


def test_an_unknown_key_algorithm_parses_and_is_judged_by_its_oid(forged: dict[str, bytes]) -> None:
    # The parser does not judge keys: pubkey does, by OID, so it is UnsupportedAlgorithm there.
    certificate = load_certificate(forged["unknown key algorithm"])
    assert certificate.public_key_algorithm_oid.dotted_string == "1.2.3.4.5"


def test_pem_text_goes_through_the_same_parser(forged: dict[str, bytes], rsa2048: KeyPair) -> None:
    good = rsa2048.cert.public_bytes(serialization.Encoding.PEM)
    assert parse_certificates(good) == [rsa2048.cert]
    bad = (
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(forged["negative serial"])
        + b"-----END CERTIFICATE-----\n"
    )
    with pytest.raises(errors.MalformedCertificate):
        parse_certificates(good + bad)
    with pytest.raises(errors.MalformedCertificate, match="no certificate"):
        parse_certificates(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


# ------------------------------------------------------------------ in messages


def _with_certificate(signed: bytes, der: bytes) -> bytes:
    """An opaque signed message whose SignedData carries ``der`` in place of the signer's certificate."""
    head, body = signed.split(b"\r\n\r\n", 1)
    signed_data = cms.ContentInfo.load(base64.b64decode(body))["content"]
    # The forged certificate goes in as it is: asn1crypto parses it lazily and never re-encodes it.
    signed_data["certificates"] = cms.CertificateSet([cms.CertificateChoices.load(der)])
    info = cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    assert der in info
    return head + b"\r\n\r\n" + base64.encodebytes(info).replace(b"\n", b"\r\n")


@pytest.fixture(scope="module")
def signed(rsa2048: KeyPair) -> bytes:
    signer = Signer(rsa2048.key, rsa2048.cert)  # type: ignore[arg-type]
    return sign_message(MESSAGE, signer, signing_time=NOW, detached=False)


@pytest.mark.parametrize("name", [*MALFORMED, "truncated", "unknown key algorithm"])
def test_a_malformed_certificate_in_a_message_is_a_message_error(
    forged: dict[str, bytes], signed: bytes, test_ca: CertificateAuthority, name: str
) -> None:
    message = _with_certificate(signed, forged[name])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(errors.MessageError) as caught:
            unwrap_message(message, now=NOW, trust_anchors=[test_ca.cert])
    expected = errors.UnsupportedAlgorithm if name == "unknown key algorithm" else errors.MalformedCertificate
    assert isinstance(caught.value, expected), caught.value


@pytest.mark.parametrize("name", ["version 7", "negative serial", "unknown key algorithm", "truncated"])
def test_verify_exits_4_for_a_malformed_signer_certificate(
    forged: dict[str, bytes], signed: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(_with_certificate(signed, forged[name]))
    status = main(["--home", str(tmp_path / "home"), "verify", str(path)])
    out, err = capsys.readouterr()
    assert status == 4, err
    assert out == "" and err.count("\n") == 1 and "internal error" not in err


def test_verify_under_python_w_error_prints_no_warning(forged: dict[str, bytes], signed: bytes, tmp_path: Path) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(_with_certificate(signed, forged["negative serial"]))
    proc = verify_strictly(path, tmp_path / "home")
    assert proc.returncode == 4, proc.stderr
    assert "serial number -1" in proc.stderr and "Warning" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


# --------------------------------------------------------------------- in files


@pytest.mark.parametrize("name", [*MALFORMED, "truncated"])
@pytest.mark.parametrize("form", ["der", "pem"])
def test_a_malformed_certificate_file_is_a_config_error(
    forged: dict[str, bytes], tmp_path: Path, name: str, form: str
) -> None:
    der = forged[name]
    path = tmp_path / f"cert.{form}"
    if form == "der":
        path.write_bytes(der)
    else:
        path.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n")
    with pytest.raises(errors.ConfigError, match="cert"):
        load_certificates(path)
    with pytest.raises(errors.ConfigError, match=str(path)):
        KeyDirectory(tmp_path / "keys").import_file(path, now=NOW)


def test_a_pkcs7_bundle_goes_through_the_parser(forged: dict[str, bytes], rsa2048: KeyPair, tmp_path: Path) -> None:
    def bundle(*ders: bytes) -> bytes:
        signed_data = cms.SignedData(
            {
                "version": "v1",
                "digest_algorithms": [],
                "encap_content_info": {"content_type": "data"},
                "certificates": [cms.CertificateChoices.load(d) for d in ders],
                "signer_infos": [],
            }
        )
        return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()

    good = tmp_path / "good.p7b"
    good.write_bytes(bundle(_der(rsa2048.cert)))
    kd = KeyDirectory(tmp_path / "keys")
    kd.import_file(good, now=NOW)
    bad = tmp_path / "bad.p7b"
    bad.write_bytes(bundle(_der(rsa2048.cert), forged["version 7"]))
    with pytest.raises(errors.ConfigError, match="bad.p7b"):
        kd.import_file(bad, now=NOW)
    # Every certificate file reads the same forms (encrypt --cert, trust anchors): DER or PEM PKCS7.
    armored = tmp_path / "good.p7c"
    armored.write_bytes(
        b"-----BEGIN PKCS7-----\n" + base64.encodebytes(good.read_bytes()) + b"-----END PKCS7-----\n"
    )
    for path in (good, armored):
        assert [c.serial_number for c in load_certificates(path)] == [rsa2048.cert.serial_number]
    with pytest.raises(errors.ConfigError, match=r"certificate file .*bad\.p7b: no readable certificate"):
        load_certificates(bad)
    empty = tmp_path / "empty.p7b"
    empty.write_bytes(bundle())
    with pytest.raises(errors.ConfigError, match="an empty PKCS#7 bundle"):
        load_certificates(empty)


def test_a_malformed_trust_anchor_is_a_config_error(forged: dict[str, bytes], tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.der"
    anchor.write_bytes(forged["negative serial"])
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(f'[keys]\ntrust_anchors = ["{anchor}"]\n')
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    assert main(["--home", str(home), "verify", str(message)]) == 2


def test_a_key_file_with_a_certificate_of_an_unknown_key_type_is_a_config_error(
    forged: dict[str, bytes], rsa2048: KeyPair, tmp_path: Path
) -> None:
    # The key is compared with the certificate's only when its algorithm is RSA or EC (by OID):
    # cryptography's "Unknown key type" must not escape.
    cert = tmp_path / "unknown.der"
    cert.write_bytes(forged["unknown key algorithm"])
    key = tmp_path / "key.pem"
    key.write_bytes(rsa2048.key_path.read_bytes())
    key.chmod(0o600)
    with pytest.raises(errors.ConfigError, match="no certificate for the key"):
        load_key_pair(key, cert)

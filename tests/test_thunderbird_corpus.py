"""Thunderbird's S/MIME corpus: every enveloped message in it must decrypt with mailcrypt.

The corpus (Mozilla comm-central ``mailnews/test/data/smime/``, made by NSS and
OpenSSL, see its README.md) lives beside the repository in
``../shared/corpus/thunderbird-smime/``, or wherever ``MAILCRYPT_CORPUS`` points.
A user's machine does not have it, so the tests skip with a reason when it is
absent; when ``CI`` is set a missing corpus is a failure.

Which files are enveloped is found by parsing, not from a list: every file that
is not key material is read as DER (when it starts with a SEQUENCE tag) or as a
MIME message, and every ``application/pkcs7-mime`` part is decoded. An
EnvelopedData or AuthEnvelopedData found that way is a case. A SignedData with
encapsulated content (``sig ... opaque``) is opened with asn1crypto and its
content parsed again as MIME, so an envelope that was signed afterwards (an
outer opaque signature, possibly twice) is found too; nothing here verifies
those signatures. Detached ``multipart/signed`` needs nothing special: the
envelope is its first part.

The expected identity comes from the RecipientInfos themselves (issuer and
serial number, or subject key identifier, compared with the corpus
certificates), cross-checked against the corpus naming: Bob for ``generated/``
and ``manual/``, Fran or Fran-ec for ``interop/``. Envelopes whose
RecipientInfos match no corpus certificate are the stale ones the README
mentions (made under an older CA, with other keys); they must fail with
``NoMatchingIdentity``. One envelope addressed to Fran uses des-ede3-cbc,
which mailcrypt reads (never writes) so that old mail stays readable. The
decrypted content is compared
byte for byte with what ``openssl cms -decrypt`` makes of the same envelope
and key.

All corpus identities are passed to every decrypt call at once; the matching
one must be the one reported.
"""

from __future__ import annotations

import email
import email.policy
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import cms
from corpus import CORPUS, PASSWORD, require_corpus
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mailcrypt import errors
from mailcrypt.envelope import decrypt, identity_from_key

KEY_MATERIAL = {".p12", ".key", ".crt", ".pem"}
PKCS7_MIME = {"application/pkcs7-mime", "application/x-pkcs7-mime"}
ENVELOPED = {"enveloped_data": "enveloped-data", "authenticated_enveloped_data": "authEnveloped-data"}
# Content ciphers by OID: AES (RFC 3565, RFC 5084) and 3DES, which mailcrypt reads in old mail.
CIPHERS = {
    "1.2.840.113549.3.7": "des-ede3-cbc",
    "2.16.840.1.101.3.4.1.2": "aes128-cbc",
    "2.16.840.1.101.3.4.1.22": "aes192-cbc",
    "2.16.840.1.101.3.4.1.42": "aes256-cbc",
    "2.16.840.1.101.3.4.1.6": "aes128-gcm",
    "2.16.840.1.101.3.4.1.26": "aes192-gcm",
    "2.16.840.1.101.3.4.1.46": "aes256-gcm",
}


# ------------------------------------------------------------------ identities


@dataclass(frozen=True)
class CorpusIdentity:
    name: str
    key: object
    cert: x509.Certificate


def _load_p12(path: Path) -> tuple[object, x509.Certificate]:
    # NSS writes its PKCS#12 files in BER; pyca falls back to BER parsing with a UserWarning,
    # which the suite's filterwarnings=error would turn into a failure. Only that warning is ignored.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PKCS#12 bundle could not be parsed as DER", category=UserWarning)
        key, cert, _extra = pkcs12.load_key_and_certificates(path.read_bytes(), PASSWORD)
    assert key is not None and cert is not None, path
    return key, cert


def load_identities(root: Path) -> list[CorpusIdentity]:
    """Every identity in the corpus, once: PEM .key/.crt pairs first, then .p12 files not already seen."""
    found: dict[bytes, CorpusIdentity] = {}
    for key_path in sorted(root.rglob("*.key")):
        crt_path = key_path.with_suffix(".crt")
        if not crt_path.is_file():
            continue
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
        ident = CorpusIdentity(key_path.stem, key, cert)
        found.setdefault(cert.fingerprint(hashes.SHA256()), ident)
    for p12_path in sorted(root.rglob("*.p12")):
        crt_path = p12_path.with_suffix(".crt")
        if crt_path.is_file():
            cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
            if cert.fingerprint(hashes.SHA256()) in found:
                continue
        key, cert = _load_p12(p12_path)
        found.setdefault(cert.fingerprint(hashes.SHA256()), CorpusIdentity(p12_path.stem, key, cert))
    return sorted(found.values(), key=lambda i: i.name)


def rid_matches(rid: cms.RecipientIdentifier | cms.KeyAgreementRecipientIdentifier, cert: x509.Certificate) -> bool:
    chosen = rid.chosen
    if rid.name == "issuer_and_serial_number":
        return (
            chosen["serial_number"].native == cert.serial_number
            and chosen["issuer"].dump() == cert.issuer.public_bytes()
        )
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return False
    if rid.name == "subject_key_identifier":
        return chosen.native == ski
    if rid.name == "r_key_id":
        return chosen["subject_key_identifier"].native == ski
    return False


def addressed_to(content_info: cms.ContentInfo, identities: list[CorpusIdentity]) -> list[str]:
    """Names of the corpus identities some RecipientInfo of the envelope is addressed to."""
    names = []
    for ri in content_info["content"]["recipient_infos"]:
        if ri.name == "ktri":
            rids = [ri.chosen["rid"]]
        elif ri.name == "kari":
            rids = [rek["rid"] for rek in ri.chosen["recipient_encrypted_keys"]]
        else:
            continue
        names += [i.name for i in identities for rid in rids if rid_matches(rid, i.cert)]
    return names


# ---------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    id: str
    path: Path
    route: str  # how the CMS was reached, for failure messages
    der: bytes
    content_type: str
    cipher: str | None  # None: not one of the AES ciphers mailcrypt implements
    cipher_oid: str


def _from_der(der: bytes, route: str) -> list[tuple[str, bytes, cms.ContentInfo]]:
    try:
        ci = cms.ContentInfo.load(der)
        ctype = ci["content_type"].native
    except ValueError:
        return []
    if ctype in ENVELOPED:
        return [(route, der, ci)]
    if ctype == "signed_data":
        inner = ci["content"]["encap_content_info"]["content"].native
        return _from_mime(inner, route + " > signed-data") if inner else []
    return []


def _from_mime(raw: bytes, route: str) -> list[tuple[str, bytes, cms.ContentInfo]]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    out = []
    for part in msg.walk():
        if part.get_content_type() in PKCS7_MIME:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload:
                out += _from_der(payload, route + " > " + part.get_content_type())
    return out


def discover(root: Path) -> list[Case]:
    cases = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix in KEY_MATERIAL:
            continue
        raw = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        found = _from_der(raw, "DER") if raw[:1] == b"\x30" else _from_mime(raw, "MIME")
        for n, (route, der, ci) in enumerate(found):
            enveloped = ci["content_type"].native == "enveloped_data"
            eci_name = "encrypted_content_info" if enveloped else "auth_encrypted_content_info"
            oid = ci["content"][eci_name]["content_encryption_algorithm"]["algorithm"].dotted
            case_id = rel if len(found) == 1 else f"{rel}#{n}"
            cases.append(Case(case_id, path, route, der, ENVELOPED[ci["content_type"].native], CIPHERS.get(oid), oid))
    return cases


IDENTITIES = load_identities(CORPUS) if CORPUS.is_dir() else []
CASES = discover(CORPUS) if CORPUS.is_dir() else []
ADDRESSED = {c.id: addressed_to(cms.ContentInfo.load(c.der), IDENTITIES) for c in CASES}
LIVE = [pytest.param(c, id=c.id) for c in CASES if ADDRESSED[c.id]]
STALE = [pytest.param(c, id=c.id) for c in CASES if not ADDRESSED[c.id]]
if not CORPUS.is_dir():
    # One placeholder per test, so that it skips (or fails under CI) with the reason, instead of
    # pytest's anonymous "empty parameter set".
    LIVE = STALE = [pytest.param(None, id="corpus-absent")]


def name_says(case: Case) -> str:
    """The recipient the corpus README's naming implies."""
    top = case.id.split("/", 1)[0]
    if top == "interop":
        return "Fran-ec" if case.path.name.lower().startswith("fran-ec") else "Fran"
    return "Bob"


def openssl_decrypt(der: bytes, ident: CorpusIdentity, tmp_path: Path) -> bytes:
    key_file = tmp_path / f"{ident.name}.key"
    key_file.write_bytes(
        ident.key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_file = tmp_path / f"{ident.name}.crt"
    cert_file.write_bytes(ident.cert.public_bytes(serialization.Encoding.PEM))
    res = subprocess.run(
        ["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-inkey", str(key_file), "-recip", str(cert_file)],
        input=der,
        capture_output=True,
        check=False,
    )
    assert res.returncode == 0, f"openssl cannot decrypt either: {res.stderr.decode(errors='replace')}"
    return res.stdout


def test_corpus_present_and_found() -> None:
    require_corpus()
    names = {i.name for i in IDENTITIES}
    assert {"Bob", "Fran", "Fran-ec"} <= names, names
    # The README promises enveloped messages to Bob in generated/ and to Fran/Fran-ec in interop/.
    assert any(c.id.startswith("generated/") for c in CASES if ADDRESSED[c.id])
    assert {name_says(c) for c in CASES if c.id.startswith("interop/")} == {"Fran", "Fran-ec"}


@pytest.mark.parametrize("case", LIVE)
def test_corpus_envelope_decrypts(case: Case, tmp_path: Path) -> None:
    require_corpus()
    addressed = ADDRESSED[case.id]
    assert addressed == [name_says(case)], (
        f"{case.id}: RecipientInfos name {addressed}, file name says {name_says(case)}"
    )
    by_name = {i.name: i for i in IDENTITIES}
    expected = by_name[addressed[0]]
    identities = [identity_from_key(i.key, i.cert) for i in IDENTITIES]
    expected_identity = identities[IDENTITIES.index(expected)]

    result = decrypt(case.der, identities)

    info = result.info
    assert info.identity is expected_identity, (
        f"{case.id} ({case.route}): matched {info.identity!r}, expected {expected.name}"
    )
    assert info.content_type == case.content_type
    assert info.cipher == case.cipher
    assert result.content == openssl_decrypt(case.der, expected, tmp_path), (
        f"{case.id}: plaintext differs from openssl's"
    )


@pytest.mark.parametrize("case", STALE)
def test_corpus_stale_envelope_is_not_for_us(case: Case) -> None:
    require_corpus()
    identities = [identity_from_key(i.key, i.cert) for i in IDENTITIES]
    with pytest.raises(errors.NoMatchingIdentity) as caught:
        decrypt(case.der, identities)
    assert type(caught.value) is errors.NoMatchingIdentity, f"{case.id}: raised {type(caught.value).__name__}"
    assert len(caught.value.tried) == len(identities)

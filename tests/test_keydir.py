"""The key directory with certificates made by openssl: import, list, look up, export, remove.

Every certificate here comes from ``openssl req``/``openssl ca`` (see
``openssl_pki``), so the tests exercise what another tool wrote, including
DER, bundles and PKCS#7. Refusals assert the message, since the message is
what the administrator reads.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from openssl_pki import PKI, Made, openssl

from mailcrypt import errors
from mailcrypt.keydir import KeyDirectory
from mailcrypt.pki import validate, validate_chain
from mailcrypt.policy import MODERN, Policy, PolicyTable, RecipientPolicy

DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("openssl-pki"))


@pytest.fixture(scope="module")
def root(pki: PKI) -> Made:
    return pki.root("Test Root", eku="emailProtection")


@pytest.fixture(scope="module")
def certs(pki: PKI, root: Made) -> dict[str, Made]:
    """The certificates of the module, by role."""
    issue = pki.issue
    return {
        "bob": issue("bob", ca=root, emails=("Bob@Example.ORG",)),
        "bob-ec-der": issue("bob-ec", ca=root, key="p256", emails=("Bob@Example.ORG",)),
        "carol": issue("carol", ca=root, key="p384", emails=("carol@example.net", "c.smith@example.net")),
        "legacy-email": issue("legacy-email", ca=root, subject_email="Dave@Example.COM", eku=None),
        "no-ku": issue("no-ku", ca=root, emails=("erin@example.org",), key_usage=None, eku=None),
        "expired": issue(
            "expired", ca=root, emails=("old@example.org",), start="20200101000000Z", end="20210101000000Z"
        ),
        "future": issue(
            "future", ca=root, key="p256", emails=("new@example.org",), start="20990101000000Z", end="20991231000000Z"
        ),
        "sign-only": issue("sign-only", ca=root, emails=("frank@example.org",), key_usage="digitalSignature"),
        "ec-encipher": issue(
            "ec-encipher", ca=root, key="p256", emails=("gina@example.org",), key_usage="keyEncipherment"
        ),
        "tls-eku": issue("tls-eku", ca=root, emails=("hal@example.org",), eku="serverAuth,clientAuth"),
        "rsa1024": issue("rsa1024", ca=root, key="rsa1024", emails=("ivy@example.org",)),
        "p521": issue("p521", ca=root, key="p521", emails=("jo@example.org",)),
        "no-address": issue("no-address", ca=root),
        # Two for one address: an older one valid for years, a newer one for 30 days.
        "kim-old": issue(
            "kim-old", ca=root, emails=("kim@example.org",), start="20240101000000Z", end="20400101000000Z"
        ),
        "kim-new": issue("kim-new", ca=root, key="p256", emails=("kim@example.org",)),
        "gateway": issue("gateway", ca=root, emails=("gateway@mx.example.com",)),
    }


@pytest.fixture
def kd(tmp_path: Path) -> KeyDirectory:
    return KeyDirectory(tmp_path / "keys")


def fp(made: Made) -> str:
    return validate.fingerprint(made.certificate)


# ---------------------------------------------------------------- import and lookup


def test_import_pem_files_it_under_its_address(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    result = kd.import_file(certs["bob"].cert)
    assert [e.fingerprint for e in result.imported] == [fp(certs["bob"])]
    (entry,) = kd.list()
    assert entry.kind == "recipient"
    assert entry.addresses == ("Bob@Example.ORG",)
    assert entry.key_type == "rsa2048"
    assert entry.source == os.path.abspath(certs["bob"].cert)
    assert entry.status() == "valid"
    assert kd.path.joinpath("certs", f"{fp(certs['bob'])}.pem").exists()


def test_import_der(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["bob-ec-der"].der())
    (entry,) = kd.lookup("Bob@example.org")
    assert entry.key_type == "p256"
    assert entry.fingerprint == fp(certs["bob-ec-der"])


def test_importing_twice_changes_nothing(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["bob"].cert)
    again = kd.import_file(certs["bob"].der())
    assert again.imported == () and [e.fingerprint for e in again.unchanged] == [fp(certs["bob"])]
    assert len(kd.list()) == 1


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        ("Bob@Example.ORG", True),
        ("Bob@example.org", True),  # the domain ignores case
        ("Bob@EXAMPLE.org", True),
        ("bob@example.org", False),  # the local part does not
        ("BOB@example.org", False),
        ("Bob@example.org.", True),  # a trailing root dot is the same domain
        ("Bob@example.com", False),
    ],
)
def test_address_case_rules(kd: KeyDirectory, certs: dict[str, Made], asked: str, found: bool) -> None:
    kd.import_file(certs["bob"].cert)
    assert bool(kd.lookup(asked)) is found
    if found:
        assert kd.best(asked) == certs["bob"].certificate
    else:
        with pytest.raises(errors.NoRecipientCertificate) as info:
            kd.best(asked)
        assert info.value.address == asked
        assert f"no certificate for {asked}" in str(info.value)


def test_filed_under_every_san_address(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["carol"].cert)
    assert [e.fingerprint for e in kd.lookup("carol@example.net")] == [fp(certs["carol"])]
    assert [e.fingerprint for e in kd.lookup("c.smith@EXAMPLE.net")] == [fp(certs["carol"])]


def test_legacy_email_address_attribute(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["legacy-email"].cert)
    (entry,) = kd.lookup("Dave@example.com")
    assert entry.addresses == ("Dave@Example.COM",)


def test_no_key_usage_and_no_eku_is_allowed(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    # RFC 5280: an absent keyUsage or extendedKeyUsage restricts nothing.
    kd.import_file(certs["no-ku"].cert)
    assert kd.best("erin@example.org") == certs["no-ku"].certificate


def test_pem_bundle_files_leaves_and_keeps_the_ca(
    kd: KeyDirectory, certs: dict[str, Made], root: Made, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(certs[n].cert.read_bytes() for n in ("bob", "carol")) + root.cert.read_bytes())
    result = kd.import_file(bundle)
    assert {e.fingerprint for e in result.imported} == {fp(certs["bob"]), fp(certs["carol"])}
    assert [e.fingerprint for e in result.chain] == [fp(root)]
    assert len(kd.list()) == 2  # the CA certificate is not a recipient
    assert [e.kind for e in kd.list(kinds=("chain",))] == ["chain"]


def test_pkcs7_bundle(kd: KeyDirectory, certs: dict[str, Made], tmp_path: Path) -> None:
    p7b = tmp_path / "bundle.p7b"
    openssl(
        "crl2pkcs7",
        "-nocrl",
        "-certfile",
        certs["bob"].cert,
        "-certfile",
        certs["carol"].cert,
        "-outform",
        "DER",
        "-out",
        p7b,
    )
    result = kd.import_file(p7b)
    assert {e.fingerprint for e in result.imported} == {fp(certs["bob"]), fp(certs["carol"])}


def test_bundle_with_one_bad_certificate_imports_the_rest(
    kd: KeyDirectory, certs: dict[str, Made], tmp_path: Path
) -> None:
    bundle = tmp_path / "mixed.pem"
    bundle.write_bytes(certs["bob"].cert.read_bytes() + certs["expired"].cert.read_bytes())
    result = kd.import_file(bundle)
    assert [e.fingerprint for e in result.imported] == [fp(certs["bob"])]
    ((label, reason),) = result.refused
    assert "old@example.org" in label and "expired on 2021-01-01 00:00 UTC" in reason


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("expired", "certificate for old@example.org (sha256:{fp16}) expired on 2021-01-01 00:00 UTC"),
        (
            "future",
            "certificate for new@example.org (sha256:{fp16}) is not valid before 2099-01-01 00:00 UTC (not yet valid)",
        ),
        ("sign-only", "has a keyUsage without keyEncipherment, which RSA key transport needs"),
        ("ec-encipher", "has a keyUsage without keyAgreement, which ECDH needs"),
        ("tls-eku", "has an extendedKeyUsage without emailProtection"),
        ("rsa1024", "has an RSA key of 1024 bits; at least 2048 bits are required"),
        (
            "no-address",
            "names no e-mail address (no rfc822Name in its subjectAltName, "
            "nor, without a subjectAltName, an emailAddress in its subject)",
        ),
    ],
)
def test_unusable_certificates_are_refused_with_a_clear_message(
    kd: KeyDirectory, certs: dict[str, Made], name: str, expected: str
) -> None:
    with pytest.raises(errors.InvalidRecipient) as info:
        kd.import_file(certs[name].cert)
    assert expected.format(fp16=fp(certs[name])[:16]) in str(info.value)
    assert info.value.exit_code == 3
    assert kd.list() == []
    assert list(kd.path.joinpath("certs").iterdir()) == []


def test_curves_and_rsa_size_come_from_the_policy(certs: dict[str, Made], root: Made) -> None:
    # The default Policy accepts P-521 (the envelope core does ECDH on it); a
    # Policy without it refuses it. The verifier's Policy is the one applied.
    now = datetime.datetime.now(datetime.UTC)
    p521 = certs["p521"].certificate
    assert validate.recipient_problem(p521, now=now) is None
    narrow = Policy(curves=frozenset({"secp256r1", "secp384r1"}), min_rsa_bits=3072)
    verifier = validate.ChainVerifier([root.certificate], policy=narrow)
    assert validate.recipient_problem(p521, now=now, chain=verifier) == (
        "has an EC key on secp521r1; the policy accepts the curves secp256r1, secp384r1"
    )
    bob = certs["bob"].certificate
    assert validate.recipient_problem(bob, now=now, chain=validate.ChainVerifier([root.certificate])) is None
    assert validate.recipient_problem(bob, now=now, chain=verifier) == (
        "has an RSA key of 2048 bits; at least 3072 bits are required"
    )


def test_the_purpose_decides_only_the_end_entity_key_usage(certs: dict[str, Made], root: Made) -> None:
    # One path validation for signers and recipients: a sign-only RSA
    # certificate chains for signing, not for encryption; an EC certificate
    # with keyEncipherment (not keyAgreement) neither signs nor receives.
    now = datetime.datetime.now(datetime.UTC)
    anchors = [root.certificate]
    sign_only, ec_encipher = certs["sign-only"].certificate, certs["ec-encipher"].certificate
    assert validate_chain(sign_only, anchors=anchors, now=now, purpose="signing").trusted
    refused = validate_chain(sign_only, anchors=anchors, now=now, purpose="encryption")
    assert refused.status == "invalid" and "without keyEncipherment" in refused.reason
    assert "without keyEncipherment" in (validate.ChainVerifier(anchors).problem(sign_only, now=now) or "")
    for purpose, missing in (("signing", "digitalSignature"), ("encryption", "keyAgreement")):
        result = validate_chain(ec_encipher, anchors=anchors, now=now, purpose=purpose)
        assert result.status == "invalid" and f"without {missing}" in result.reason


def test_address_mismatch_is_refused(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    with pytest.raises(errors.InvalidRecipient) as info:
        kd.import_file(certs["bob"].cert, address="alice@example.org")
    assert str(info.value) == (
        f"certificate for Bob@Example.ORG (sha256:{fp(certs['bob'])[:16]}) does not name alice@example.org "
        "(it names Bob@Example.ORG)"
    )
    kd.import_file(certs["bob"].cert, address="Bob@example.ORG")
    assert len(kd.list()) == 1


def test_unreadable_and_wrong_files(kd: KeyDirectory, certs: dict[str, Made], tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"missing\.pem: no such file"):
        kd.import_file(tmp_path / "missing.pem")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x01\x02 not a certificate at all")
    with pytest.raises(
        errors.ConfigError, match="expected PEM or DER certificates, a PKCS#7 certificate bundle or a PKCS#12 file"
    ):
        kd.import_file(junk)
    with pytest.raises(errors.ConfigError, match="holds a private key"):
        kd.import_file(certs["bob"].key)
    assert kd.list() == []


# ---------------------------------------------------------------- choosing at use


def test_newest_valid_certificate_is_chosen(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["kim-old"].cert)
    kd.import_file(certs["kim-new"].cert)
    assert [e.fingerprint for e in kd.lookup("kim@example.org")] == [fp(certs["kim-new"]), fp(certs["kim-old"])]
    now = datetime.datetime.now(datetime.UTC)
    assert kd.best("kim@example.org", now=now) == certs["kim-new"].certificate
    # Once the newer one has expired, the older one (valid until 2040) is used.
    later = now + 60 * DAY
    assert kd.best("kim@example.org", now=later) == certs["kim-old"].certificate
    # And after both have expired, the message says why each was passed over.
    with pytest.raises(errors.NoRecipientCertificate) as info:
        kd.best("kim@example.org", now=datetime.datetime(2041, 1, 1, tzinfo=datetime.UTC))
    message = str(info.value)
    assert message.startswith("no usable certificate for kim@example.org: ")
    assert f"sha256:{fp(certs['kim-new'])[:16]} expired on" in message
    assert f"sha256:{fp(certs['kim-old'])[:16]} expired on 2040-01-01 00:00 UTC" in message


def test_recipients_for_uses_policy_profiles_and_gateways(tmp_path: Path, certs: dict[str, Made]) -> None:
    policy = PolicyTable(
        default="require",
        profile="compatible",
        domains={"mx.example.com": RecipientPolicy(gateway=certs["gateway"].cert)},
        addresses={"Bob@example.org": RecipientPolicy(profile="modern")},
    )
    kd = KeyDirectory(tmp_path / "keys", policy=policy)
    kd.import_file(certs["bob"].cert)
    kd.import_file(certs["carol"].cert)
    chosen = kd.recipients_for(["Bob@Example.org", "carol@example.net", "anyone@MX.example.com", "x@mx.example.com"])
    assert [(c.address, c.certificate, c.profile.name) for c in chosen] == [
        ("Bob@Example.org", certs["bob"].certificate, "modern"),
        ("carol@example.net", certs["carol"].certificate, "compatible"),
        ("anyone@MX.example.com", certs["gateway"].certificate, "compatible"),
        ("x@mx.example.com", certs["gateway"].certificate, "compatible"),
    ]
    assert chosen[0].profile == MODERN
    address, certificate, profile, agreement, reads = chosen[1]  # a plain tuple for the command line
    assert address == "carol@example.net" and agreement and reads  # Carol's key is EC (P-384).
    assert (chosen[0].key_agreement, chosen[0].reads_key_agreement) == (False, False)  # RSA, nothing known.
    with pytest.raises(errors.NoRecipientCertificate) as info:
        kd.recipients_for(["carol@example.net", "nobody@example.org"])
    assert info.value.address == "nobody@example.org"
    assert info.value.exit_code == 3
    assert "no certificate for nobody@example.org" in str(info.value)


def test_an_rsa_client_reads_key_agreement_by_policy_or_by_what_it_announced(
    tmp_path: Path, certs: dict[str, Made]
) -> None:
    """DESIGN.md §1 "Readable by every recipient": known from ``mixed_recipient_infos`` or announced ECDH."""
    policy = PolicyTable(domains={"example.org": RecipientPolicy(mixed_recipient_infos=True)})
    kd = KeyDirectory(tmp_path / "keys", policy=policy)
    kd.import_file(certs["bob"].cert)
    (by_policy,) = kd.recipients_for(["Bob@Example.org"])
    assert by_policy.reads_key_agreement and not by_policy.key_agreement
    plain = KeyDirectory(tmp_path / "keys", policy=PolicyTable())
    announced = {"aes256-cbc": ("aes256-cbc", "rsa-pkcs1v15"), "ecdh": ("aes256-cbc", "ecdh-sha1kdf-aes256-wrap")}
    for name, expected in (("aes256-cbc", False), ("ecdh", True)):
        (choice,) = plain.recipients_for(["Bob@Example.org"], advertised=lambda a, c, n=name: announced[n])
        assert choice.reads_key_agreement is expected, name
    # An address's own setting wins over its domain's.
    strict = PolicyTable(
        domains={"example.org": RecipientPolicy(mixed_recipient_infos=True)},
        addresses={"Bob@example.org": RecipientPolicy(mixed_recipient_infos=False)},
    )
    assert strict.decide("Bob@EXAMPLE.org").mixed_recipient_infos is False
    assert policy.decide("Bob@EXAMPLE.org").mixed_recipient_infos is True


def test_certificates_are_checked_again_at_use(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["bob"].cert)
    with pytest.raises(errors.NoRecipientCertificate, match="expired on"):
        kd.recipients_for(["Bob@example.org"], now=datetime.datetime.now(datetime.UTC) + 365 * DAY)


# ---------------------------------------------------------------- trust anchors


def test_trust_anchor_chain_through_a_bundled_intermediate(pki: PKI, tmp_path: Path, certs: dict[str, Made]) -> None:
    anchor = pki.root("Anchor Root", key="p384")
    intermediate = pki.issue("Anchor Intermediate", ca=anchor, key="p256", is_ca=True, eku="emailProtection")
    leaf = pki.issue("anchored", ca=intermediate, emails=("lee@example.org",))
    kd = KeyDirectory(tmp_path / "keys", trust_anchors=[anchor.certificate])
    # Without the intermediate there is no path to the anchor.
    with pytest.raises(errors.InvalidRecipient, match="does not chain to a trust anchor in keys.trust_anchors"):
        kd.import_file(leaf.cert)
    # With it in the bundle, the chain is built and the intermediate kept for later.
    bundle = tmp_path / "chain.pem"
    bundle.write_bytes(leaf.cert.read_bytes() + intermediate.cert.read_bytes())
    result = kd.import_file(bundle)
    assert [e.fingerprint for e in result.imported] == [fp(leaf)]
    assert kd.recipients_for(["lee@example.org"])[0].certificate == leaf.certificate
    # A certificate from another CA is refused.
    with pytest.raises(errors.InvalidRecipient, match="does not chain to a trust anchor"):
        kd.import_file(certs["bob"].cert)


def test_trust_anchor_rejects_issuer_without_email_eku(pki: PKI, tmp_path: Path) -> None:
    anchor = pki.root("TLS Root", key="p256")
    intermediate = pki.issue("TLS Intermediate", ca=anchor, key="p256", is_ca=True, eku="serverAuth")
    leaf = pki.issue("tls-issued", ca=intermediate, emails=("tess@example.org",))
    kd = KeyDirectory(tmp_path / "keys", trust_anchors=[anchor.certificate])
    bundle = tmp_path / "chain.pem"
    bundle.write_bytes(leaf.cert.read_bytes() + intermediate.cert.read_bytes())
    with pytest.raises(errors.InvalidRecipient) as info:
        kd.import_file(bundle)
    assert "does not chain to a trust anchor in keys.trust_anchors" in str(info.value)
    assert "issuer's extendedKeyUsage does not include emailProtection" in str(info.value)
    assert kd.list(kinds=("recipient", "identity", "chain")) == []  # nothing kept, not even the CA


def test_a_pinned_certificate_is_its_own_anchor(tmp_path: Path, certs: dict[str, Made]) -> None:
    kd = KeyDirectory(tmp_path / "keys", trust_anchors=[certs["bob"].certificate])
    kd.import_file(certs["bob"].cert)
    assert kd.best("Bob@example.org") == certs["bob"].certificate


# ---------------------------------------------------------------- list, export, remove


def test_list_json_and_order(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    for name in ("carol", "bob", "kim-old", "kim-new"):
        kd.import_file(certs[name].cert)
    entries = kd.list()
    assert [e.addresses[0] for e in entries] == [
        "Bob@Example.ORG",
        "carol@example.net",
        "kim@example.org",
        "kim@example.org",
    ]
    assert entries[2].fingerprint == fp(certs["kim-new"])  # newest first within an address
    data = json.loads(json.dumps([e.as_dict() for e in entries]))
    assert data[0]["addresses"] == ["Bob@Example.ORG"]
    assert data[0]["status"] == "valid" and data[0]["kind"] == "recipient"
    assert set(data[0]) >= {
        "fingerprint",
        "subject",
        "issuer",
        "serial",
        "not_before",
        "not_after",
        "key_type",
        "source",
        "imported",
    }


def test_export_round_trip(kd: KeyDirectory, certs: dict[str, Made], tmp_path: Path) -> None:
    kd.import_file(certs["bob"].cert)
    pem = kd.export("Bob@EXAMPLE.org")
    assert x509.load_pem_x509_certificate(pem) == certs["bob"].certificate
    assert kd.export(fp(certs["bob"])[:12], der=True) == certs["bob"].der().read_bytes()
    out = tmp_path / "exported.pem"
    out.write_bytes(pem)
    other = KeyDirectory(tmp_path / "other-keys")
    other.import_file(out)
    assert [e.fingerprint for e in other.list()] == [fp(certs["bob"])]
    # openssl reads the export as well.
    assert b"Bob@Example.ORG" in openssl("x509", "-in", out, "-noout", "-ext", "subjectAltName")
    with pytest.raises(errors.NoRecipientCertificate, match="no certificate for nobody@example.org"):
        kd.export("nobody@example.org")


def test_export_picks_the_valid_one_unless_all(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["kim-old"].cert)
    kd.import_file(certs["kim-new"].cert)
    assert x509.load_pem_x509_certificates(kd.export("kim@example.org")) == [certs["kim-new"].certificate]
    everything = x509.load_pem_x509_certificates(kd.export("kim@example.org", all=True))
    assert everything == [certs["kim-new"].certificate, certs["kim-old"].certificate]


def test_remove_by_address(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    for name in ("kim-old", "kim-new", "bob"):
        kd.import_file(certs[name].cert)
    removed = kd.remove("kim@EXAMPLE.ORG")
    assert {e.fingerprint for e in removed} == {fp(certs["kim-old"]), fp(certs["kim-new"])}
    assert [e.addresses for e in kd.list()] == [("Bob@Example.ORG",)]
    assert not kd.path.joinpath("certs", f"{fp(certs['kim-new'])}.pem").exists()
    with pytest.raises(errors.NoRecipientCertificate):
        kd.remove("kim@example.org")


@pytest.mark.parametrize("form", ["full", "prefix", "colons", "sha256:"])
def test_remove_by_fingerprint(kd: KeyDirectory, certs: dict[str, Made], form: str) -> None:
    kd.import_file(certs["bob"].cert)
    kd.import_file(certs["carol"].cert)
    digest = fp(certs["bob"])
    selector = {
        "full": digest.upper(),
        "prefix": digest[:10],
        "colons": ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper(),
        "sha256:": "sha256:" + digest[:16],
    }[form]
    (removed,) = kd.remove(selector)
    assert removed.fingerprint == digest
    assert [e.fingerprint for e in kd.list()] == [fp(certs["carol"])]


def test_bad_selectors(kd: KeyDirectory) -> None:
    with pytest.raises(errors.UsageError, match="neither an e-mail address nor a SHA-256 fingerprint"):
        kd.remove("abc")
    with pytest.raises(errors.NoRecipientCertificate):
        kd.remove("0123456789abcdef")


# ---------------------------------------------------------------- the index and the files


def test_index_is_rebuilt_from_the_files(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["bob"].cert)
    kd.import_file(certs["carol"].cert)
    before = kd.list()
    kd.path.joinpath("index.sqlite").unlink()
    assert kd.list() == before  # sources and import times survive: they are in the files
    kd.path.joinpath("index.sqlite").write_bytes(b"this is not a database" * 100)
    assert kd.list() == before
    assert kd.rebuild_index() == 2


def test_index_follows_files_changed_by_hand(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["bob"].cert)
    assert len(kd.list()) == 1
    # A certificate dropped in under its fingerprint is found; a removed one is forgotten.
    carol = certs["carol"].certificate
    kd.path.joinpath("certs", f"{validate.fingerprint(carol)}.pem").write_bytes(
        carol.public_bytes(serialization.Encoding.PEM)
    )
    kd.path.joinpath("certs", f"{fp(certs['bob'])}.pem").unlink()
    assert [e.addresses[0] for e in kd.list()] == ["carol@example.net"]
    assert kd.lookup("Bob@example.org") == []


def test_index_survives_a_stale_modification_time(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["bob"].cert)
    kd.list()
    certs_dir = kd.path / "certs"
    old = certs_dir.stat().st_mtime_ns - 10**10
    os.utime(certs_dir, ns=(old, old))
    kd.list()  # records the old time as seen
    carol = certs["carol"].certificate
    certs_dir.joinpath(f"{validate.fingerprint(carol)}.pem").write_bytes(carol.public_bytes(serialization.Encoding.PEM))
    assert len(kd.list()) == 2


def test_file_modes(kd: KeyDirectory, certs: dict[str, Made]) -> None:
    kd.import_file(certs["bob"].cert)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    for directory in ("", "certs", "chain", "identities"):
        assert mode(kd.path / directory) == 0o700
    assert mode(kd.path / "index.sqlite") == 0o600
    assert mode(kd.path / "certs" / f"{fp(certs['bob'])}.pem") == 0o644
    with sqlite3.connect(kd.path / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM certificates").fetchone()[0] == 1
    db.close()


# ---------------------------------------------------------------- what the commands build on


@pytest.mark.parametrize("name", ["bob", "bob-ec-der"])
@pytest.mark.parametrize("profile_name", ["compatible", "modern"])
def test_encrypting_to_the_directory_choice_opens_with_openssl(
    tmp_path: Path, certs: dict[str, Made], name: str, profile_name: str
) -> None:
    """What `mailcrypt encrypt --to Bob@Example.ORG` will do: look up, encrypt, and openssl decrypts."""
    from mailcrypt.envelope import encrypt

    policy = PolicyTable(addresses={"Bob@example.org": RecipientPolicy(profile=profile_name)})
    kd = KeyDirectory(tmp_path / "keys", policy=policy)
    kd.import_file(certs[name].cert)
    ((address, certificate, profile, _, _),) = kd.recipients_for(["Bob@EXAMPLE.org"])
    assert profile.name == profile_name
    message = b"Content-Type: text/plain\r\n\r\nhello Bob\r\n"
    der = tmp_path / "message.der"
    der.write_bytes(encrypt(message, [certificate], profile=profile))
    plain = openssl(
        "cms",
        "-decrypt",
        "-binary",
        "-inform",
        "DER",
        "-in",
        der,
        "-inkey",
        certs[name].key,
        "-recip",
        certs[name].cert,
    )
    assert plain == message


def test_from_settings_uses_the_configured_trust_anchors(
    tmp_path: Path, pki: PKI, root: Made, certs: dict[str, Made]
) -> None:
    from mailcrypt import config

    other = pki.root("Other Root")
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(f'[keys]\ntrust_anchors = ["{other.cert}"]\n')
    kd = KeyDirectory.from_settings(config.load_settings(home))
    with pytest.raises(errors.InvalidRecipient, match="does not chain to a trust anchor"):
        kd.import_file(certs["bob"].cert)
    (home / "config.toml").write_text(f'[keys]\ntrust_anchors = ["{other.cert}", "{root.cert}"]\n')
    kd = KeyDirectory.from_settings(config.load_settings(home))
    # Loaded once, here; the commands (decrypt, verify, fetch) take them from the key directory.
    assert kd.trust_anchors == (other.certificate, root.certificate)
    kd.import_file(certs["bob"].cert)
    assert kd.best("Bob@example.org") == certs["bob"].certificate
    (home / "config.toml").write_text("")
    assert KeyDirectory.from_settings(config.load_settings(home)).trust_anchors == ()


def test_gateway_certificate_checks(tmp_path: Path, pki: PKI, root: Made) -> None:
    bare = pki.issue("gateway-without-address", ca=root, key="p384")
    stale = pki.issue(
        "gateway-expired", ca=root, emails=("gw@example.net",), start="20200101000000Z", end="20210101000000Z"
    )
    policy = PolicyTable(
        domains={
            "example.com": RecipientPolicy(gateway=bare.cert),
            "example.net": RecipientPolicy(gateway=stale.cert),
        }
    )
    kd = KeyDirectory(tmp_path / "keys", policy=policy)
    # A gateway certificate need not name the addresses behind it, nor any address.
    assert kd.recipients_for(["a@example.com"])[0].certificate == bare.certificate
    with pytest.raises(errors.NoRecipientCertificate) as info:
        kd.recipients_for(["b@example.net"])
    assert info.value.address == "b@example.net"
    assert str(info.value).startswith(f"the gateway certificate for b@example.net ({stale.cert}) expired on 2021-01-01")

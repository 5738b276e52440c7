"""One address rule for every use of a certificate, and one normal form for addresses.

The attack of issue 13: a sub-CA constrained to rfc822Name ``example.org``
issues a certificate with subjectAltName ``bob@example.org`` and subject
emailAddress ``ceo@victim.test``. It must never count for
``ceo@victim.test``: not in the key directory (import, list, lookup), not in
harvesting, not as a recipient (the proxy's RCPT decision, ``--cert``
selection), and both chain validators refuse it. The certificates are made
by the real ``openssl`` command (``openssl_pki``).

Addresses: IDNA 2008 / UTS #46, so ``bob@straße.de`` and
``bob@xn--strae-oqa.de`` are one key and ``bob@strasse.de`` another, in the
key directory and in the policy table alike.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from openssl_pki import PKI, Made

from mailcrypt import errors
from mailcrypt.addresses import address_key, domain_key, normalize_address
from mailcrypt.config import load_settings
from mailcrypt.envelope import Signer
from mailcrypt.keydir import KeyDirectory, certificates_for, harvest
from mailcrypt.mime import sign_message, unwrap_message
from mailcrypt.pki import ChainVerifier, certificate_addresses, names_address, validate_chain
from mailcrypt.policy import PolicyTable, RecipientPolicy
from mailcrypt.state import Store
from proxy.groups import RecipientBook
from proxy.relay import Refused

# An hour ahead: the module's certificates are made after import, valid from then for 30 days.
NOW = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
VICTIM = "ceo@victim.test"


@dataclass(frozen=True)
class Constrained:
    root: Made
    sub: Made
    #: SAN bob@example.org, subject emailAddress ceo@victim.test: the attack.
    evil: Made
    #: No SAN, subject emailAddress dave@example.org: a legacy certificate inside the constraint.
    legacy: Made
    #: No SAN, subject emailAddress ceo@victim.test: a legacy certificate outside it.
    legacy_outside: Made
    #: A SAN with only a DNS name beside the emailAddress: the SAN alone decides.
    dns_only: Made


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("constrained-pki"))


@pytest.fixture(scope="module")
def constrained(pki: PKI) -> Constrained:
    root = pki.root("Address Root")
    sub = pki.issue("Mail Sub-CA", ca=root, key="p256", is_ca=True, name_constraints="permitted;email:example.org")
    evil = pki.issue(
        "evil",
        ca=sub,
        key="p256",
        emails=("bob@example.org",),
        subject_email=VICTIM,
        key_usage="digitalSignature,keyAgreement",
    )
    legacy = pki.issue("legacy", ca=sub, subject_email="dave@example.org")
    legacy_outside = pki.issue("legacy-outside", ca=sub, subject_email=VICTIM)
    dns_only = pki.issue("dns-only", ca=root, subject_email="erin@example.org", other_names=("DNS:host.example.org",))
    return Constrained(root, sub, evil, legacy, legacy_outside, dns_only)


def test_the_address_set_is_the_san_or_else_the_subject_email(constrained: Constrained) -> None:
    assert certificate_addresses(constrained.evil.certificate) == ["bob@example.org"]
    assert not names_address(constrained.evil.certificate, VICTIM)
    assert names_address(constrained.evil.certificate, "bob@EXAMPLE.org")
    # Without any subjectAltName the legacy attribute counts (RFC 8550 §3, RFC 5280 §4.2.1.10).
    assert certificate_addresses(constrained.legacy.certificate) == ["dave@example.org"]


def test_a_san_without_rfc822_names_hides_the_subject_email(constrained: Constrained) -> None:
    # The SAN alone decides once there is one (see mailcrypt/pki/mailboxes.py).
    assert certificate_addresses(constrained.dns_only.certificate) == []
    assert not names_address(constrained.dns_only.certificate, "erin@example.org")


def test_both_chain_validators_refuse_the_certificate(constrained: Constrained) -> None:
    evil = constrained.evil.certificate
    signer = validate_chain(
        evil, intermediates=[constrained.sub.certificate], anchors=[constrained.root.certificate], now=NOW
    )
    assert signer.status == "invalid"
    assert "ceo@victim.test is outside the permitted subtrees" in signer.reason
    recipient = ChainVerifier([constrained.root.certificate]).problem(
        evil, intermediates=[constrained.sub.certificate], now=NOW
    )
    assert recipient is not None and "ceo@victim.test is outside the permitted subtrees" in recipient
    # A legacy certificate with no SAN is held to the constraint through its emailAddress.
    for verdict in (
        validate_chain(
            constrained.legacy_outside.certificate,
            intermediates=[constrained.sub.certificate],
            anchors=[constrained.root.certificate],
            now=NOW,
        ).status,
        ChainVerifier([constrained.root.certificate]).problem(
            constrained.legacy_outside.certificate, intermediates=[constrained.sub.certificate], now=NOW
        ),
    ):
        assert verdict not in ("valid", None)
    assert validate_chain(
        constrained.legacy.certificate,
        intermediates=[constrained.sub.certificate],
        anchors=[constrained.root.certificate],
        now=NOW,
    ).trusted
    assert (
        ChainVerifier([constrained.root.certificate]).problem(
            constrained.legacy.certificate, intermediates=[constrained.sub.certificate], now=NOW
        )
        is None
    )


def test_key_directory_files_it_only_under_the_san_address(tmp_path: Path, constrained: Constrained) -> None:
    kd = KeyDirectory(tmp_path / "keys")
    kd.import_file(constrained.evil.cert, now=NOW)
    (entry,) = kd.list()
    assert entry.addresses == ("bob@example.org",)
    assert kd.lookup(VICTIM) == []
    assert [e.fingerprint for e in kd.lookup("bob@example.org")] == [entry.fingerprint]
    with pytest.raises(errors.NoRecipientCertificate):
        kd.recipients_for([VICTIM], now=NOW)
    with pytest.raises(errors.InvalidRecipient, match="does not name ceo@victim.test"):
        kd.import_file(constrained.evil.cert, address=VICTIM, now=NOW)
    # The index is a cache: rebuilt from the files, it says the same.
    kd.rebuild_index()
    assert kd.lookup(VICTIM) == [] and [e.addresses for e in kd.list()] == [("bob@example.org",)]


def test_key_directory_with_the_anchor_refuses_it(tmp_path: Path, constrained: Constrained) -> None:
    kd = KeyDirectory(tmp_path / "keys", trust_anchors=[constrained.root.certificate])
    kd.import_certificates([constrained.sub.certificate, constrained.legacy.certificate], source="test", now=NOW)
    with pytest.raises(errors.InvalidRecipient, match="outside the permitted subtrees"):
        kd.import_certificates([constrained.evil.certificate], source="test", now=NOW)
    assert kd.lookup(VICTIM) == [] and kd.lookup("bob@example.org") == []


def test_recipient_selection_finds_nothing_for_the_victim(tmp_path: Path, constrained: Constrained) -> None:
    assert certificates_for(VICTIM, [constrained.evil.certificate]) == []
    assert certificates_for("bob@example.org", [constrained.evil.certificate]) == [constrained.evil.certificate]
    kd = KeyDirectory(tmp_path / "keys")
    kd.import_file(constrained.evil.cert, now=NOW)
    book = RecipientBook(kd, PolicyTable())
    with pytest.raises(Refused, match="^550 5.7.1"):
        book.plan(VICTIM)
    assert book.plan("bob@example.org").certificate == constrained.evil.certificate


def _signed_by_evil(constrained: Constrained, sender: str) -> bytes:
    key = serialization.load_pem_private_key(constrained.evil.key.read_bytes(), None)
    signer = Signer(key, constrained.evil.certificate, chain=(constrained.sub.certificate,))  # type: ignore[arg-type]
    message = f"From: {sender}\r\nTo: alice@example.org\r\nSubject: wire the money\r\n\r\nNow.\r\n".encode()
    return sign_message(message, signer, signing_time=NOW)


@pytest.mark.parametrize("anchored", [False, True], ids=["no-anchors", "anchors"])
def test_harvesting_never_files_it_for_the_victim(tmp_path: Path, constrained: Constrained, anchored: bool) -> None:
    anchors = [constrained.root.certificate] if anchored else []
    kd = KeyDirectory(tmp_path / "keys", trust_anchors=anchors)
    unwrapped = unwrap_message(_signed_by_evil(constrained, VICTIM), now=NOW, trust_anchors=anchors)
    (layer,) = unwrapped.content_signatures
    if anchored:
        assert layer.chain is not None and layer.chain.status == "invalid"
    store = Store.open(tmp_path / "state.db")
    try:
        notes = harvest(unwrapped, sender=VICTIM, keys=kd, store=store, now=NOW, trusted_only=anchored)
    finally:
        store.close()
    assert notes and all(note.startswith("not harvested") for note in notes)
    assert "does not name the sender ceo@victim.test" in notes[0]
    assert kd.lookup(VICTIM) == [] and kd.list() == []


def test_addresses_are_compared_in_idna_2008_form() -> None:
    assert normalize_address("bob@Straße.DE") == "bob@xn--strae-oqa.de"
    assert address_key("bob@straße.de") == address_key("bob@XN--STRAE-OQA.de") == "bob@xn--strae-oqa.de"
    assert address_key("bob@strasse.de") != address_key("bob@straße.de")
    assert domain_key("Bücher.Example.") == "xn--bcher-kva.example"
    # The local part keeps its case (RFC 5280 §7.5).
    assert address_key("Bob@straße.de") != address_key("bob@straße.de")
    for bad in ("bob@-x.de", "bob@a..de", "bob@xn--zz.de", "bob@" + "a" * 64 + ".de"):
        with pytest.raises(errors.UsageError, match="invalid domain"):
            normalize_address(bad)


def test_key_directory_finds_an_idn_address_by_either_form(tmp_path: Path, pki: PKI) -> None:
    root = pki.root("IDN Root")
    strasse_sharp = pki.issue("bob-idn", ca=root, emails=("bob@xn--strae-oqa.de",))
    strasse_ss = pki.issue("bob-ss", ca=root, emails=("bob@strasse.de",))
    kd = KeyDirectory(tmp_path / "keys")
    kd.import_file(strasse_sharp.cert, address="bob@straße.de", now=NOW)
    (idn,) = kd.lookup("bob@straße.de")
    assert [e.fingerprint for e in kd.lookup("bob@xn--strae-oqa.de")] == [idn.fingerprint]
    assert kd.lookup("bob@strasse.de") == []
    with pytest.raises(errors.InvalidRecipient, match="does not name bob@strasse.de"):
        kd.import_file(strasse_sharp.cert, address="bob@strasse.de", now=NOW)
    kd.import_file(strasse_ss.cert, now=NOW)
    (ss,) = kd.lookup("bob@strasse.de")
    assert ss.fingerprint != idn.fingerprint
    assert [e.fingerprint for e in kd.lookup("bob@straße.de")] == [idn.fingerprint]
    (choice,) = kd.recipients_for(["bob@straße.de"], now=NOW)
    assert choice.certificate == strasse_sharp.certificate


def test_policy_table_follows_the_same_rule(tmp_path: Path) -> None:
    table = PolicyTable(
        domains={"straße.de": RecipientPolicy(policy="plaintext")},
        addresses={"alice@xn--strae-oqa.de": RecipientPolicy(profile="modern")},
    )
    assert table.decide("bob@xn--strae-oqa.de").policy == "plaintext"
    assert table.decide("bob@STRASSE.de").policy == "require"
    assert table.decide("alice@straße.de").profile_set
    # The same through the configuration file.
    (tmp_path / "config.toml").write_text(
        '[identity]\naddress = "alice@example.org"\n'
        '[policy]\ndefault = "require"\n'
        '[policy.domains."xn--strae-oqa.de"]\npolicy = "opportunistic"\n',
        encoding="utf-8",
    )
    settings = load_settings(tmp_path)
    assert settings.policy.decide("bob@straße.de").policy == "opportunistic"
    assert settings.policy.decide("bob@strasse.de").policy == "require"


def test_recipients_of_one_message_are_one_delivery_in_either_idna_form() -> None:
    from mailcrypt.mime import recipient_addresses

    block = "To: bob@straße.de, Bob@XN--STRAE-OQA.de, bob@strasse.de\r\n\r\n".encode()
    assert recipient_addresses(block) == ["bob@straße.de", "bob@strasse.de"]

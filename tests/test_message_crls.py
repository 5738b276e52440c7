"""The CRLs a signed message carries as a revocation source (RFC 5652 §5.1; ``pki.MessageCRLs``).

The whole PKITS run is in ``test_pkits.py``; these tests pin the pieces:
the envelope hands the CRLs on, ``MessageCRLs`` answers from them and asks
its fallback for the rest, and ``[keys] revocation`` still decides what a
missing answer means.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from cryptography import x509
from test_pkits import NOW, POLICY, _anchor, _require

from mailcrypt.mime.unwrap import unwrap_message
from mailcrypt.pki import (
    MessageCRLs,
    OnlineRevocationChecker,
    RevocationChecker,
    RevocationRequired,
    RevocationStatus,
)


def _message(case: str) -> bytes:
    return (_require() / "smime" / f"Signed{case}.eml").read_bytes()


def _chain(case: str, revocation: RevocationChecker | None) -> tuple[str, str]:
    result = unwrap_message(
        _message(case), now=NOW, policy=POLICY, trust_anchors=[_anchor(_require())], revocation=revocation
    )
    chain = result.layers[0].chain
    assert chain is not None
    return chain.status, chain.reason


def test_the_signature_hands_on_the_carried_crls_as_der() -> None:
    unwrapped = unwrap_message(_message("InvalidRevokedEETest3"), now=NOW, policy=POLICY)
    signature = unwrapped.layers[0].signature
    assert signature is not None
    issuers = sorted(x509.load_der_x509_crl(der).issuer.rfc4514_string() for der in signature.crls)
    assert issuers == [
        "CN=Good CA,O=Test Certificates 2011,C=US",
        "CN=Trust Anchor,O=Test Certificates 2011,C=US",
    ]


def test_without_a_revocation_checker_the_crls_are_not_consulted() -> None:
    # [keys] revocation = "off": nothing is checked, carried CRLs included.
    assert _chain("InvalidRevokedEETest3", None)[0] == "valid"


@pytest.mark.parametrize("mode", ["soft-fail", "hard-fail"])
def test_a_revoked_signer_is_refused_in_either_mode(mode: str) -> None:
    status, reason = _chain("InvalidRevokedEETest3", OnlineRevocationChecker(None, mode=mode, policy=POLICY))
    assert status == "invalid"
    assert "is revoked (given CRL of CN=Good CA" in reason and "key_compromise" in reason


def test_a_missing_crl_is_the_settings_business() -> None:
    # No PKITS certificate names an HTTP CRL or OCSP responder: the online
    # checker answers "unavailable" without network, and the mode decides.
    soft = _chain("MissingCRLTest1", OnlineRevocationChecker(None, mode="soft-fail", policy=POLICY))
    assert soft[0] == "valid" and "not checked" in soft[1], soft
    hard = _chain("MissingCRLTest1", OnlineRevocationChecker(None, mode="hard-fail", policy=POLICY))
    assert hard[0] == "invalid" and "cannot be checked" in hard[1], hard
    assert _chain("MissingCRLTest1", RevocationRequired())[0] == "invalid"


class _Recorder:
    """A fallback that records what it was asked (it is not the thing under test)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def status(self, certificate: x509.Certificate, issuer: x509.Certificate, *, now: datetime) -> RevocationStatus:
        self.asked.append(certificate.subject.rfc4514_string())
        return RevocationStatus("good", False, "recorder", "asked")


def _certificates(case: str) -> tuple[x509.Certificate, x509.Certificate, list[x509.Certificate], list[bytes]]:
    signature = unwrap_message(_message(case), now=NOW, policy=POLICY).layers[0].signature
    assert signature is not None
    leaf = signature.certificate
    issuer = next(c for c in signature.certificates if c.subject == leaf.issuer and c != leaf)
    return leaf, issuer, list(signature.certificates), list(signature.crls)


def test_the_fallback_answers_only_what_the_crls_do_not() -> None:
    anchor = _anchor(_require())
    leaf, issuer, certificates, crls = _certificates("ValidSignaturesTest1")
    recorder = _Recorder()
    checker = MessageCRLs(crls, certificates=certificates, anchors=[anchor], fallback=recorder, policy=POLICY)
    answer = checker.status(leaf, issuer, now=NOW)
    assert (answer.state, recorder.asked) == ("good", [])
    assert "given CRL of CN=Good CA" in answer.source
    # The same certificate with no CRL given: the fallback answers.
    bare = MessageCRLs([], certificates=certificates, anchors=[anchor], fallback=recorder, policy=POLICY)
    assert bare.status(leaf, issuer, now=NOW).source == "recorder"
    assert recorder.asked == [leaf.subject.rfc4514_string()]


def test_a_crl_signed_by_another_key_than_the_issuers_needs_a_trusted_crl_signer() -> None:
    # PKITS 4.4.19/20: the CA signs CRLs with a second key of the same name. Its
    # certificate must itself be valid (and unrevoked); without it in the pool,
    # the CRL has no issuer to trust and the fallback is asked.
    anchor = _anchor(_require())
    leaf, issuer, certificates, crls = _certificates("ValidSeparateCertificateandCRLKeysTest19")
    with_signer = MessageCRLs(crls, certificates=certificates, anchors=[anchor], fallback=RevocationRequired())
    assert with_signer.status(leaf, issuer, now=NOW).state == "good"
    others = [c for c in certificates if c == issuer or c.subject != issuer.subject]
    without = MessageCRLs(crls, certificates=others, anchors=[anchor], fallback=RevocationRequired(), policy=POLICY)
    answer = without.status(leaf, issuer, now=NOW)
    assert answer.state == "unavailable" and answer.blocking and "bad signature" in answer.reason, answer


def test_a_dsa_crl_issuer_is_refused_by_policy() -> None:
    # A CRL issuer's key is read as every other key is (envelope.public_key):
    # DSA is refused by its OID and the policy, before a key object is built.
    root = _require()
    ca = x509.load_der_x509_certificate((root / "certs" / "DSACACert.crt").read_bytes())
    leaf = x509.load_der_x509_certificate((root / "certs" / "ValidDSASignaturesTest4EE.crt").read_bytes())
    crl = (root / "crls" / "DSACACRL.crl").read_bytes()
    checker = MessageCRLs([crl], certificates=[ca], anchors=[_anchor(root)], fallback=RevocationRequired())
    answer = checker.status(leaf, ca, now=NOW)
    assert answer.state == "unavailable" and "DSA keys are not allowed by the policy" in answer.reason, answer

"""Thunderbird's S/MIME corpus: signed messages verify, broken ones are refused.

The corpus (see ``tests/corpus.py`` for where it lives; absent, the
tests skip with a reason, or fail when ``CI`` is set) was made by NSS. Its
file names say what each message is (its README.md): ``dsig`` detached
multipart/signed, ``sig ... opaque`` signed-data, ``env`` enveloped to Bob,
``dave`` a second signer, nesting from the inside out, left to right.

- Every current (``.eml``) signed message must unwrap with Bob's key, every
  layer in the order the name says, signed by Alice or Dave, with a chain
  to the corpus ``TestCA.pem``; SHA-1 ones are read with the default Policy
  too, but marked as no proof (``Layer.weak``), and verify as proof only when
  the Policy lists SHA-1 among ``signature_hashes``.
- Every ``.bad`` and ``mismatch-econtent`` message is refused with
  ``BadSignature``, and so are the hand-made broken ones in ``manual/``.
- ``alice.env.dsig.*.multipart.eml`` (an envelope signed afterwards) are
  refused too: NSS signed the envelope part with LF line ends and the file
  carries CRLF, so the digest differs; ``openssl cms -verify`` refuses them
  as well, and Thunderbird's own test expects them not to verify.
- The stale files without ``.eml`` (an older CA, see the README) still hold
  valid signatures, but their chain to today's TestCA is not valid.
"""

from __future__ import annotations

import datetime
import re
import subprocess
from pathlib import Path

import pytest
from corpus import CORPUS, require_corpus
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailcrypt import errors
from mailcrypt.envelope import identity_from_key, verify
from mailcrypt.mime.signed import canonical
from mailcrypt.mime.unwrap import unwrap_message
from mailcrypt.pki.chain import validate_chain
from mailcrypt.policy import Policy

GENERATED = CORPUS / "generated"
SHA1_POLICY = Policy(signature_hashes=frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"}))
# The corpus certificates are valid from January 2026 until 2031 (generated/expiration.txt).
NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def _names(pattern: str, where: Path = GENERATED) -> list[str]:
    return sorted(p.name for p in where.glob(pattern)) if where.is_dir() else []


def _param(names: list[str]) -> list[object]:
    return [pytest.param(n, id=n) for n in names] or [pytest.param(None, id="corpus-absent")]


SIGNED_EML = [n for n in _names("*.eml") if re.search(r"\b(d?sig)\b", n.replace(".", " "))]
BROKEN = [n for n in SIGNED_EML if ".bad." in n or "mismatch-econtent" in n]
ENV_THEN_DSIG = [n for n in SIGNED_EML if n.startswith("alice.env.dsig.")]
GOOD = [n for n in SIGNED_EML if n not in BROKEN and n not in ENV_THEN_DSIG]
MANUAL_BROKEN = [
    "alice.dsig.SHA256.multipart.env.dsig.eml",
    "alice.env.mixed.dsig.SHA256.multipart.eml",
    "outer-smime-bad-sig-inner-smime-enc-sig.eml",
    "outer-smime-bad-sig-inner-smime-enc.eml",
]
STALE_MULTIPART = _names("alice.dsig.SHA*.multipart") + _names("alice.sig.SHA*.opaque")


def expected_layers(name: str) -> list[tuple[str, str | None, str | None]]:
    """(form, signer, hash) from the outside in, read from a corpus file name."""
    tokens = name.removesuffix(".eml").split(".")
    signer, inner_first = "Alice", []
    for i, token in enumerate(tokens):
        if token in ("alice", "dave"):
            signer = token.capitalize()
        elif token == "env":
            inner_first.append(("enveloped-data", None, None))
        elif token in ("dsig", "sig"):
            digest = tokens[i + 1].lower()
            inner_first.append(("detached" if token == "dsig" else "opaque", signer, digest))
    return list(reversed(inner_first))


@pytest.fixture(scope="module")
def corpus() -> dict[str, object]:
    require_corpus()
    key = serialization.load_pem_private_key((GENERATED / "Bob.key").read_bytes(), password=None)
    bob = identity_from_key(key, x509.load_pem_x509_certificate((GENERATED / "Bob.crt").read_bytes()))
    return {"bob": bob, "ca": x509.load_pem_x509_certificate((GENERATED / "TestCA.pem").read_bytes())}


def test_corpus_has_signed_messages() -> None:
    require_corpus()
    assert len(GOOD) >= 40 and len(BROKEN) >= 8 and len(ENV_THEN_DSIG) >= 4, (len(GOOD), len(BROKEN))
    assert any("dave" in n for n in GOOD) and any(".env." in n for n in GOOD)


@pytest.mark.parametrize("name", _param(GOOD))
def test_good_signed_message_verifies(name: str, corpus: dict) -> None:
    raw = (GENERATED / name).read_bytes()
    expected = expected_layers(name)
    result = unwrap_message(raw, [corpus["bob"]], now=NOW, policy=SHA1_POLICY, trust_anchors=[corpus["ca"]])
    got = [
        (layer.form, None, None)
        if layer.kind == "enveloped"
        else (layer.form, layer.signature.certificate.subject.rfc4514_string(), layer.signature.digest_algorithm)
        for layer in result.layers
    ]
    assert [g[0] for g in got] == [e[0] for e in expected], f"{name}: layers {got}"
    for (_, subject, digest), (_, signer, want_digest), layer in zip(got, expected, result.layers, strict=True):
        if layer.kind == "signed":
            assert f"CN={signer}" in subject and digest == want_digest, (name, subject, digest)
            assert layer.chain is not None and layer.chain.status == "valid", (name, layer.chain.reason)
            assert layer.signature.signing_time is not None
            assert isinstance(layer.signature.capabilities, tuple)  # NSS sends none here.
    assert b"This is a test message from Alice to Bob." in result.message or b"<html" in result.message.lower()
    assert result.replay_key is not None and result.replay_key[2] == "signature"
    if any(e[2] == "sha1" for e in expected):
        # The default policy reads SHA-1 signatures too, but as no proof (DESIGN.md §2): the
        # content is the same, each SHA-1 layer is weak, and the replay guard sees no signature.
        default = unwrap_message(raw, [corpus["bob"]], now=NOW, trust_anchors=[corpus["ca"]])
        assert default.message == result.message
        assert [layer.weak for layer in default.layers] == [e[2] == "sha1" for e in expected]
        assert all("SHA-1 and is not accepted as proof" in layer.describe() for layer in default.weak_signatures)
        if all(e[2] in (None, "sha1") for e in expected):
            assert not default.proofs
            key = default.replay_key
            assert (key is None) if ".env" not in name else (key is not None and key[2] == "envelope")


@pytest.mark.parametrize("name", _param(BROKEN))
def test_bad_and_mismatched_signatures_are_refused(name: str, corpus: dict) -> None:
    with pytest.raises(errors.BadSignature) as caught:
        unwrap_message((GENERATED / name).read_bytes(), [corpus["bob"]], now=NOW, policy=SHA1_POLICY)
    assert caught.value.exit_code == 5


@pytest.mark.parametrize("name", _param(ENV_THEN_DSIG))
def test_envelope_signed_over_lf_text_is_refused_like_openssl(name: str, corpus: dict) -> None:
    path = GENERATED / name
    with pytest.raises(errors.BadSignature, match="message digest differs"):
        unwrap_message(path.read_bytes(), [corpus["bob"]], now=NOW, policy=SHA1_POLICY)
    if ".dave." not in name:
        proc = subprocess.run(
            ["openssl", "cms", "-verify", "-noverify", "-in", str(path), "-out", "/dev/null"], capture_output=True
        )
        assert proc.returncode != 0 and b"verification failure" in proc.stderr.lower()


@pytest.mark.parametrize("name", _param(MANUAL_BROKEN))
def test_hand_made_broken_outer_signatures_are_refused(name: str, corpus: dict) -> None:
    with pytest.raises(errors.BadSignature):
        unwrap_message((CORPUS / "manual" / name).read_bytes(), [corpus["bob"]], now=NOW, policy=SHA1_POLICY)


@pytest.mark.parametrize("name", _param(_names("outer-pgp-sig-*.eml", CORPUS / "manual")))
def test_openpgp_signed_message_is_not_an_smime_layer(name: str, corpus: dict) -> None:
    raw = (CORPUS / "manual" / name).read_bytes()
    result = unwrap_message(raw, [corpus["bob"]], now=NOW)
    # The S/MIME parts inside a multipart/signed of another protocol are content, not layers.
    assert result.layers == () and result.message == raw


@pytest.mark.parametrize("name", _param(STALE_MULTIPART))
def test_stale_signatures_hold_but_do_not_chain_to_todays_ca(name: str, corpus: dict) -> None:
    result = unwrap_message((GENERATED / name).read_bytes(), now=NOW, policy=SHA1_POLICY, trust_anchors=[corpus["ca"]])
    (layer,) = result.layers
    assert layer.chain is not None and layer.chain.status == "invalid"


@pytest.mark.parametrize("hash_name", ["SHA1", "SHA256", "SHA384", "SHA512"])
def test_stale_der_signatures(hash_name: str, corpus: dict) -> None:
    detached = verify(
        (GENERATED / f"alice.mime.dsig.{hash_name}").read_bytes(),
        content=canonical((GENERATED / "alice.mime").read_bytes()),
        policy=SHA1_POLICY,
    )
    opaque = verify((GENERATED / f"alice.textplain.sig.{hash_name}").read_bytes(), policy=SHA1_POLICY)
    assert opaque.content == canonical((GENERATED / "alice.textplain").read_bytes())
    for info in (detached, opaque):
        assert info.digest_algorithm == hash_name.lower()
        assert (
            validate_chain(
                info.certificate, intermediates=info.certificates, anchors=[corpus["ca"]], now=NOW, policy=SHA1_POLICY
            ).status
            == "invalid"
        )
    with pytest.raises(errors.BadSignature):
        verify(
            (GENERATED / f"alice.mime.dsig.{hash_name}").read_bytes(),
            content=canonical((GENERATED / "alice.mime").read_bytes()) + b"\r\n",
            policy=SHA1_POLICY,
        )


def test_future_date_header_is_not_the_signing_time(corpus: dict, tmp_path: Path) -> None:
    """``future`` has a Date six hours ahead of its siblings but the same signingTime.

    Freshness is judged on the signed signingTime, never on the unsigned Date header.
    """
    from mailcrypt.state.replay import ReplayGuard
    from mailcrypt.state.store import Store

    def signed_at(name: str) -> datetime.datetime:
        result = unwrap_message((GENERATED / name).read_bytes(), now=NOW, trust_anchors=[corpus["ca"]])
        when = result.layers[0].signature.signing_time  # type: ignore[union-attr]
        assert when is not None
        return when

    raw = (GENERATED / "alice.future.dsig.SHA256.multipart.eml").read_bytes()
    assert b"Date: Mon, 26 Jan 2026 20:38:03 +0000" in raw
    future = signed_at("alice.future.dsig.SHA256.multipart.eml")
    assert abs(future - signed_at("alice.dsig.SHA256.multipart.eml")) < datetime.timedelta(minutes=5)
    with Store.open(tmp_path / "state.db") as store:
        ReplayGuard(store).check_freshness(future, future)

"""NIST PKITS path validation, through its S/MIME messages.

The PKITS data (2011 edition) ships in the ``cryptography-vectors`` package
(test extra) under ``x509/PKITS_data/``: ``smime/Signed<Test>.eml`` are
messages signed by each test's end entity, carrying the test's
certificates; ``certs/TrustAnchorRootCertificate.crt`` is the anchor. Every
message is unwrapped with that anchor, requiring revocation information
from the CRLs the message carries (``RevocationRequired`` behind
``MessageCRLs``, no network), and each case's outcome
(``valid``, ``invalid`` or ``unsupported``, see ``classify``) must equal
the one committed in ``pkits_expected.txt``, which says why each
non-obvious one is what it is. A case that moves, in either direction,
fails the test: the file is changed on purpose or not at all.

``test_signer_and_recipient_are_judged_alike`` runs the same paths for the
encryption purpose (the recipient check of the key directory and the
proxy): the verdict may differ only where the end entity's keyUsage says so.
"""

from __future__ import annotations

import collections
import datetime
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from cli_run import verify_strictly
from cryptography import x509

from mailcrypt import errors
from mailcrypt.cli import main
from mailcrypt.mime.unwrap import unwrap_message
from mailcrypt.pki import ChainVerifier, RevocationRequired, usage_problem, validate_chain
from mailcrypt.policy import Policy

# PKITS certificates are valid from 2010 to 2030.
NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
# The DSA cases sign with SHA-1; allowing it lets them reach the algorithm check.
POLICY = Policy(signature_hashes=frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"}))

EXPECTED = Path(__file__).with_name("pkits_expected.txt")


def _pkits() -> Path | None:
    try:
        import cryptography_vectors
    except ImportError:
        return None
    return Path(cryptography_vectors.__file__).parent / "x509" / "PKITS_data"


PKITS = _pkits()


def _require() -> Path:
    if PKITS is None or not (PKITS / "smime").is_dir():
        reason = "cryptography-vectors is not installed (pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI is set, so this is a failure")
        pytest.skip(reason)
    return PKITS


def expected_outcomes() -> dict[str, str]:
    """``pkits_expected.txt``: ``<case> <outcome>`` per line, ``#`` comments."""
    expected = {}
    for line in EXPECTED.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            name, outcome = fields
            assert name not in expected, f"{name} is listed twice"
            expected[name] = outcome
    return expected


def classify(raw: bytes, anchor: x509.Certificate) -> tuple[str, str]:
    """(outcome, reason) for one PKITS message.

    ``valid``: the signature holds and the chain is valid; ``invalid``: the
    chain is invalid or the signature refused; ``unsupported``: an algorithm
    mailcrypt refuses by policy (DSA) or a chain it cannot judge;
    ``malformed``: a certificate the one parser refuses (exit 4).
    """
    try:
        result = unwrap_message(raw, now=NOW, policy=POLICY, trust_anchors=[anchor], revocation=RevocationRequired())
    except errors.UnsupportedAlgorithm as exc:
        return "unsupported", f"algorithm: {exc}"
    except errors.MalformedCertificate as exc:
        return "malformed", str(exc)
    except errors.MailcryptError as exc:
        return "invalid", f"{type(exc).__name__}: {exc}"
    (layer,) = result.layers
    assert layer.chain is not None
    return layer.chain.status, layer.chain.reason


def _anchor(root: Path) -> x509.Certificate:
    return x509.load_der_x509_certificate((root / "certs" / "TrustAnchorRootCertificate.crt").read_bytes())


def _cases(root: Path) -> dict[str, Path]:
    return {path.stem.removeprefix("Signed"): path for path in sorted((root / "smime").glob("Signed*.eml"))}


def test_pkits_smime_messages_match_the_committed_outcomes(capsys: pytest.CaptureFixture[str]) -> None:
    root = _require()
    anchor = _anchor(root)
    expected = expected_outcomes()
    cases = _cases(root)
    assert sorted(cases) == sorted(expected), "pkits_expected.txt must list every PKITS S/MIME case, once"
    wrong = []
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for name, path in cases.items():
        outcome, reason = classify(path.read_bytes(), anchor)
        want = expected[name]
        if want != outcome:
            wrong.append(f"{name}: {outcome}, expected {want} ({reason})")
        kind = "Valid" if name.startswith("Valid") else "Invalid" if name.startswith("Invalid") else "other"
        counts[(kind, want)] += 1
    with capsys.disabled():
        print("\nPKITS S/MIME expected outcomes: " + ", ".join(f"{k} {w}: {n}" for (k, w), n in sorted(counts.items())))
    assert not wrong, "\n".join(wrong)
    # The targets of issue 13, on the committed file itself: every Valid case
    # verified but the DSA ones (refused by policy, RFC 8551 §2.2); every
    # Invalid one refused, the CRL cases included.
    for name, want in expected.items():
        if name.startswith("Valid"):
            assert want == "valid" or (want == "unsupported" and "DSA" in name), name
        if name.startswith("Invalid"):
            assert want in ("invalid", "malformed") or (want == "unsupported" and "DSA" in name), name


def test_signer_and_recipient_are_judged_alike() -> None:
    root = _require()
    anchor = _anchor(root)
    expected = expected_outcomes()
    differ = []
    for name, path in _cases(root).items():
        try:
            unwrapped = unwrap_message(path.read_bytes(), now=NOW, policy=POLICY, trust_anchors=[])
        except errors.UnsupportedAlgorithm:
            # Only the DSA cases stop before a signer is known.
            assert expected[name] == "unsupported", name
            continue
        except errors.MalformedCertificate:
            # A refused certificate is refused alike for either purpose.
            assert expected[name] == "malformed", name
            continue
        except errors.MailcryptError:
            # A signature that does not hold names no signer to judge.
            assert expected[name] == "invalid", name
            continue
        signature = unwrapped.layers[0].signature
        assert signature is not None
        leaf, carried = signature.certificate, signature.certificates
        verdicts = {
            purpose: validate_chain(
                leaf, intermediates=carried, anchors=[anchor], now=NOW, policy=POLICY, purpose=purpose
            )
            for purpose in ("signing", "encryption")
        }
        signing, encryption = verdicts["signing"], verdicts["encryption"]
        recipient = ChainVerifier([anchor], policy=POLICY).problem(leaf, intermediates=carried, now=NOW)
        # The recipient check of the key directory is this very verdict.
        assert (recipient is None) == encryption.trusted, name
        if (signing.status, signing.reason) == (encryption.status, encryption.reason):
            continue
        # Where they differ, it is the end entity's keyUsage for the purpose, and nothing else.
        ku_problem = usage_problem(leaf, "encryption")
        assert signing.trusted and encryption.status == "invalid", name
        assert ku_problem is not None and ku_problem in encryption.reason, name
        differ.append(name)
    # Every PKITS end entity allows both purposes (a keyUsage with
    # digitalSignature and keyEncipherment, or none), so every path is judged
    # the same; tests/test_keydir.py shows a purpose deciding.
    assert differ == [], differ


@pytest.mark.parametrize("case", ["ValidDSASignaturesTest4", "ValidDSAParameterInheritanceTest5"])
def test_dsa_signer_is_refused_by_its_oid_without_a_warning(case: str) -> None:
    # The suite runs with filterwarnings=error; the explicit filter keeps this test
    # meaningful if that setting ever changes. cryptography deprecates building DSA
    # key objects: mailcrypt must refuse DSA before it builds one.
    pkits = _require()
    raw = (pkits / "smime" / f"Signed{case}.eml").read_bytes()
    anchor = x509.load_der_x509_certificate((pkits / "certs" / "TrustAnchorRootCertificate.crt").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(errors.UnsupportedAlgorithm, match="DSA"):
            unwrap_message(raw, now=NOW, policy=POLICY, trust_anchors=[anchor])
        # The default policy refuses the SHA-1 digest of these cases even sooner: typed too.
        with pytest.raises(errors.UnsupportedAlgorithm):
            unwrap_message(raw, now=NOW, trust_anchors=[anchor])


def test_dsa_signer_through_the_command_line(tmp_path: Path) -> None:
    pkits = _require()
    message = pkits / "smime" / "SignedValidDSASignaturesTest4.eml"
    proc = verify_strictly(message, tmp_path / "home")
    # Exit 4: an algorithm mailcrypt does not accept (DESIGN §6), said in one line, no warning.
    assert proc.returncode == 4, proc.stderr
    assert re.search("DSA|SHA1", proc.stderr) and "Warning" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


_EXIT = {"valid": 0, "invalid": 5, "unsupported": 4, "malformed": 4}


def _home(tmp_path: Path, anchor_file: Path | None, *, revocation: str = "soft-fail") -> Path:
    home = tmp_path / "home"
    home.mkdir(parents=True)
    anchors = f'["{anchor_file}"]' if anchor_file is not None else "[]"
    (home / "config.toml").write_text(f'[keys]\ntrust_anchors = {anchors}\nrevocation = "{revocation}"\n')
    return home


def test_verify_exit_status_with_the_pkits_anchor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # DESIGN.md §6: with trust anchors configured, a signer whose chain is not
    # valid is exit 5; the one-line error says why, and nothing is printed.
    # Hard-fail is PKITS's "revocation information required": the CRLs the
    # messages carry answer, and nothing else can (no PKITS certificate names
    # an HTTP CRL or an OCSP responder).
    root = _require()
    home = _home(tmp_path, root / "certs" / "TrustAnchorRootCertificate.crt", revocation="hard-fail")
    expected = expected_outcomes()
    wrong = []
    for name, path in _cases(root).items():
        status = main(["--home", str(home), "verify", str(path)])
        out, err = capsys.readouterr()
        if status != _EXIT[expected[name]]:
            wrong.append(f"{name}: exit {status}, expected {_EXIT[expected[name]]} ({err.strip()})")
        elif status == 5 and (out or err.count("\n") != 1):
            wrong.append(f"{name}: exit 5 but printed {out!r} and {err!r}")
    assert not wrong, "\n".join(wrong)


def test_verify_through_the_command(tmp_path: Path) -> None:
    root = _require()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}

    def verify(home: Path, case: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "mailcrypt",
                "--home",
                str(home),
                "verify",
                str(root / "smime" / f"Signed{case}.eml"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            stdin=subprocess.DEVNULL,
        )

    anchored = _home(tmp_path / "anchored", root / "certs" / "TrustAnchorRootCertificate.crt")
    ok = verify(anchored, "ValidPolicyMappingTest1")
    assert ok.returncode == 0 and "certificate chain: valid" in ok.stdout, ok.stderr
    for case, why in (
        ("InvalidPolicyMappingTest2", "certificate policies"),
        ("InvalidNameChainingEETest1", "neither a trust anchor nor a certificate given"),  # unknown issuer
        ("InvalidEEnotAfterDateTest6", "is not valid at"),
        # The default soft-fail still reads the CRLs a message carries: a revoked signer is refused.
        ("InvalidRevokedEETest3", "is revoked (given CRL of CN=Good CA"),
    ):
        refused = verify(anchored, case)
        assert refused.returncode == 5, (case, refused.stderr)
        assert re.search("(not trusted|is revoked): certificate chain invalid", refused.stderr), refused.stderr
        assert why in refused.stderr, refused.stderr
        assert refused.stdout == "" and refused.stderr.count("\n") == 1
    # Soft-fail: a signer no CRL answers for is accepted, and the missing answer is said.
    missing = verify(anchored, "MissingCRLTest1")
    assert missing.returncode == 0, missing.stderr
    assert "certificate chain: valid" in missing.stdout and "revocation of" in missing.stdout, missing.stdout
    # Without anchors the chain is not checked, and says so; the signature holds: exit 0.
    unanchored = _home(tmp_path / "plain", None)
    loose = verify(unanchored, "InvalidPolicyMappingTest2")
    assert loose.returncode == 0, loose.stderr
    assert "certificate chain: not checked (no trust anchors are configured)" in loose.stdout

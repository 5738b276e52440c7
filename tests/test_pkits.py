"""NIST PKITS path validation, through its S/MIME messages.

The PKITS data (2011 edition) ships in the ``cryptography-vectors`` package
(test extra) under ``x509/PKITS_data/``: ``smime/Signed<Test>.eml`` are
messages signed by each test's end entity, carrying the test's
certificates; ``certs/TrustAnchorRootCertificate.crt`` is the anchor. Every
message is unwrapped with that anchor; each case ends up as:

- ``verified``: a "Valid" case whose signature holds and chain is valid;
- ``rejected``: an "Invalid" case refused (chain ``invalid``, or the
  signature refused);
- ``unsupported``: the case needs something mailcrypt does not do: the
  chain status is ``unsupported`` (policy or name-constraint extensions),
  the algorithm is (DSA), or the case turns on revocation, which is never
  checked (CRLs, PKITS §4.4, §4.5.2/5/7/8, §4.7.4/5, §4.14, §4.15);
- ``other``: the cases named neither Valid nor Invalid, whose outcome
  depends on the PKITS user settings (initial policy set and so on).

The test fails if an Invalid case is ever reported valid without being a
revocation case, or if a Valid case is refused other than as unsupported.
The counts are printed (``pytest -s``) for the record.
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
from cryptography import x509

from mailcrypt import errors
from mailcrypt.mime.unwrap import unwrap_message
from mailcrypt.policy import Policy

# PKITS certificates are valid from 2010 to 2030.
NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
# The DSA cases sign with SHA-1; allowing it lets them reach the algorithm check.
POLICY = Policy(signature_hashes=frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"}))

# Cases whose outcome depends on revocation information (CRLs), which mailcrypt never checks.
_REVOCATION = re.compile(r"crl|revoked|distributionpoint|onlysomereasons|onlycontains|serialnumber", re.I)
_REVOCATION_NAMES = {"InvalidBasicSelfIssuedOldWithNewTest2", "InvalidBasicSelfIssuedNewWithOldTest5"}


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


def needs_revocation(name: str) -> bool:
    return bool(_REVOCATION.search(name)) or name in _REVOCATION_NAMES


def classify(name: str, raw: bytes, anchor: x509.Certificate) -> tuple[str, str]:
    """(outcome, reason) for one PKITS message; ``name`` without ``Signed`` and ``.eml``."""
    try:
        result = unwrap_message(raw, now=NOW, policy=POLICY, trust_anchors=[anchor])
    except errors.UnsupportedAlgorithm as exc:
        return "unsupported", f"algorithm: {exc}"
    except errors.MailcryptError as exc:
        return "refused", f"{type(exc).__name__}: {exc}"
    (layer,) = result.layers
    assert layer.chain is not None
    status, reason = layer.chain.status, layer.chain.reason
    if status == "valid" and name.startswith("Invalid") and needs_revocation(name):
        return "unsupported", "revocation (CRLs) is not checked"
    if status == "valid":
        return "valid", reason
    if status == "unsupported":
        return "unsupported", reason
    return "refused", reason


def test_pkits_smime_messages(capsys: pytest.CaptureFixture[str]) -> None:
    root = _require()
    anchor = x509.load_der_x509_certificate((root / "certs" / "TrustAnchorRootCertificate.crt").read_bytes())
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    wrong: list[str] = []
    reasons: collections.Counter[str] = collections.Counter()
    for path in sorted((root / "smime").glob("Signed*.eml")):
        name = path.stem.removeprefix("Signed")
        kind = "Valid" if name.startswith("Valid") else "Invalid" if name.startswith("Invalid") else "other"
        outcome, reason = classify(name, path.read_bytes(), anchor)
        if kind == "Valid":
            label = {"valid": "verified", "unsupported": "unsupported"}.get(outcome, "WRONG")
        elif kind == "Invalid":
            label = {"refused": "rejected", "unsupported": "unsupported"}.get(outcome, "WRONG")
        else:
            label = outcome
        counts[(kind, label)] += 1
        if label == "unsupported":
            reasons[re.sub(r" in CN=.*| of .*|: SHA.*|\{.*", "", reason)[:60]] += 1
        if label == "WRONG":
            wrong.append(f"{name}: {outcome} ({reason})")
    total = {k: sum(v for (kind, _), v in counts.items() if kind == k) for k in ("Valid", "Invalid", "other")}
    lines = [
        "PKITS S/MIME (cryptography-vectors x509/PKITS_data/smime):",
        f"  Valid:   {counts[('Valid', 'verified')]} of {total['Valid']} verified,"
        f" {counts[('Valid', 'unsupported')]} unsupported, {counts[('Valid', 'WRONG')]} wrongly refused",
        f"  Invalid: {counts[('Invalid', 'rejected')]} of {total['Invalid']} rejected,"
        f" {counts[('Invalid', 'unsupported')]} unsupported, {counts[('Invalid', 'WRONG')]} wrongly accepted",
        f"  neither (outcome depends on PKITS settings): {total['other']}"
        f" ({', '.join(f'{n} {k}' for (kind, k), n in sorted(counts.items()) if kind == 'other')})",
        "  unsupported because: " + "; ".join(f"{r} ({n})" for r, n in reasons.most_common()),
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert not wrong, "\n".join(wrong)
    assert total["Valid"] > 80 and total["Invalid"] > 100
    assert counts[("Valid", "verified")] >= 50 and counts[("Invalid", "rejected")] >= 20


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    env["MAILCRYPT_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "mailcrypt", "verify", str(message)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    # Exit 4: an algorithm mailcrypt does not accept (DESIGN §6), said in one line, no warning.
    assert proc.returncode == 4, proc.stderr
    assert re.search("DSA|SHA1", proc.stderr) and "Warning" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr

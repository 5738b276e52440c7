"""Does a certificate chain to a trust anchor, for signing or for encryption? RFC 5280 §6.1.

The one path validation of mailcrypt (DESIGN.md §3a): signers (``mime``)
and recipients (``validate.ChainVerifier``, for the key directory, the
proxy and ``encrypt``) are judged by ``validate_chain``, differing only in
the purpose asked of the end-entity certificate. cryptography's
``x509.verification`` is not used: it applies the WebPKI profile (byte-wise
name comparison, critical basicConstraints, no directoryName or URI
constraints, no policy processing), which on the PKITS S/MIME messages
refuses 45 of the 88 "Valid" paths; S/MIME chains from older CAs hit the
same rules. The checks, each named in ``CHECKS``:

- path building by issuer name (RFC 5280 §7.1 comparison), trying every
  candidate issuer, including self-issued key-rollover certificates;
- the signature of every link, with a hash and key size the Policy allows;
- validity of every certificate at ``now``, the anchor included;
- basicConstraints cA on every issuer, pathLenConstraint (§6.1.4 (l), (m))
  and keyUsage keyCertSign when present (§6.1.4 (n)); an issuer's
  extendedKeyUsage, when present, must allow e-mail (``purposes``);
- the end entity's purpose (``purposes``, RFC 8550 §4.4.2, §4.4.4):
  ``signing`` or ``encryption``;
- name constraints of the forms in ``nameconstraints.py`` (§6.1.3 (b)-(c));
- certificate policies (``policies.py``, §6.1.3 (d)-(f), §6.1.4 (a)-(b),
  (h)-(j), §6.1.5) with the default user inputs;
- no unrecognised critical extension (§6.1.4 (o));
- revocation, when the caller gives a ``RevocationChecker`` (§6.1.3 (a)(3)).

Path building is bounded (depth and signature checks), since the
certificates come from the message, i.e. from anyone.

What it won't do: fetch anything or open files (revocation is the
checker's business). A path with a name constraint of a form mailcrypt does
not evaluate gets the status ``unsupported``, never ``valid``; without a
checker, revocation is simply not checked, which the result's
``not_checked`` says.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import exceptions, x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtensionOID

from mailcrypt.envelope import public_key
from mailcrypt.errors import CMSParseError, UnsupportedAlgorithm
from mailcrypt.pki.nameconstraints import NameConstraintState, UnsupportedConstraint
from mailcrypt.pki.policies import PolicyError, check_policies
from mailcrypt.pki.purposes import ALL_PURPOSES, Purpose, issuer_problem, purpose_problem
from mailcrypt.pki.revocation import RevocationChecker
from mailcrypt.policy import DEFAULT_POLICY, Policy

__all__ = ["ChainResult", "CHECKS", "NOT_CHECKED", "validate_chain"]

CHECKS = (
    "path built by issuer name (RFC 5280 §7.1 comparison)",
    "signature of every link",
    "validity of every certificate at the given time",
    "basicConstraints cA and pathLenConstraint on issuers",
    "keyUsage keyCertSign and extendedKeyUsage emailProtection on issuers",
    "end-entity keyUsage and extendedKeyUsage for the purpose (signing or encryption)",
    "name constraints (directoryName, rfc822Name, dNSName, URI, iPAddress)",
    "certificate policies (RFC 5280 §6.1, initial policy set anyPolicy)",
    "no unrecognised critical extension",
)
NOT_CHECKED = ("revocation (CRL, OCSP)",)

_HASH_NAMES = {h: h for h in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")}
_KNOWN = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.POLICY_MAPPINGS,
    ExtensionOID.INHIBIT_ANY_POLICY,
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
    ExtensionOID.FRESHEST_CRL,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.NAME_CONSTRAINTS,
}
_MAX_DEPTH = 8
# Signature checks one path search may spend: a message could carry many
# certificates with one subject name, all cross-signed by keys of the sender's.
_MAX_SIGNATURE_CHECKS = 64


@dataclass(frozen=True)
class ChainResult:
    """Whether a certificate chains to a trust anchor, and why (not).

    ``status`` is ``valid``, ``invalid``, ``unsupported`` (the path needs a
    check mailcrypt does not do) or ``not-checked`` (no anchors given).
    ``path`` runs from the certificate to the anchor when one was reached.
    ``revoked`` says that the path was refused because a certificate of it is
    revoked (``status`` is then ``invalid``).
    """

    status: str
    reason: str
    path: tuple[x509.Certificate, ...] = ()
    #: The certificate policies a valid path is valid for (RFC 5280 §6.1.5
    #: (g)), dotted; empty when no certificate of it names one.
    policies: tuple[str, ...] = ()
    checks: tuple[str, ...] = CHECKS
    not_checked: tuple[str, ...] = NOT_CHECKED
    revoked: bool = False

    @property
    def trusted(self) -> bool:
        return self.status == "valid"


class _Fail(Exception):
    def __init__(self, status: str, reason: str, *, revoked: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.revoked = revoked


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


@functools.lru_cache(maxsize=256)
def _name_key(name: x509.Name) -> object:
    # RFC 5280 §7.1: names compare after string preparation (case, spaces, string type).
    return asn1_x509.Name.load(name.public_bytes()).hashable


def _check_signature(cert: x509.Certificate, issuer: x509.Certificate, policy: Policy) -> None:
    """Raise _Fail unless ``issuer``'s key made ``cert``'s signature."""
    try:
        key = public_key(issuer, policy=policy)
    except UnsupportedAlgorithm as exc:
        # PolicyViolation too: DSA issuers are refused by their OID, before a key object exists.
        raise _Fail("unsupported", f"cannot check the signature on {_subject(cert)}: {exc}") from None
    except CMSParseError as exc:
        raise _Fail("invalid", str(exc)) from None
    try:
        algorithm = cert.signature_hash_algorithm
        params = cert.signature_algorithm_parameters
    except exceptions.UnsupportedAlgorithm:
        raise _Fail("unsupported", f"the signature algorithm of {_subject(cert)} is not supported") from None
    name = _HASH_NAMES.get(algorithm.name) if algorithm is not None else None
    if algorithm is not None and name in policy.weak_signature_hashes and name not in policy.signature_hashes:
        # A chain signed with SHA-1 or MD5 is no proof, but the message is still read (DESIGN.md §2).
        raise _Fail("invalid", f"{_subject(cert)} is signed with {algorithm.name.upper()}, not accepted as proof")
    if algorithm is not None and name not in policy.signature_hashes:
        raise _Fail("invalid", f"{_subject(cert)} is signed with {algorithm.name.upper()}, not allowed by the policy")
    try:
        if isinstance(key, rsa.RSAPublicKey) and isinstance(params, (padding.PKCS1v15, padding.PSS)):
            if algorithm is None:
                raise _Fail("unsupported", f"the RSA signature on {_subject(cert)} names no hash")
            if key.key_size < policy.min_rsa_bits:
                raise _Fail("invalid", f"RSA key of {_subject(issuer)} is below the policy minimum")
            key.verify(cert.signature, cert.tbs_certificate_bytes, params, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(cert.signature, cert.tbs_certificate_bytes, params)
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)) and algorithm is None:
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            raise _Fail("unsupported", f"cannot check a {type(key).__name__} signature on {_subject(cert)}")
    except exceptions.InvalidSignature:
        raise _Fail("invalid", f"the signature on {_subject(cert)} does not verify with {_subject(issuer)}") from None


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except ValueError:
        raise _Fail("invalid", f"{_subject(cert)} has malformed extensions") from None


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return _extensions(cert).get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _check_path(path: list[x509.Certificate], now: datetime, purpose: Purpose) -> tuple[str, ...]:
    """The checks of RFC 5280 §6.1 that mailcrypt does, on end entity..anchor.

    A one-element path is an end entity that is itself a trust anchor.
    Returns the certificate policies the path is valid for (``policies``).
    """
    for cert in path:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise _Fail("invalid", f"{_subject(cert)} is not valid at {now:%Y-%m-%d %H:%M} UTC")
    # The anchor is trusted as configured; only the certificates below it are judged.
    for cert in path[:-1] or path:
        for ext in _extensions(cert):
            if ext.critical and ext.oid not in _KNOWN:
                raise _Fail(
                    "invalid", f"{_subject(cert)} has an unrecognised critical extension {ext.oid.dotted_string}"
                )
    # Issuers, from the one below the anchor down to the end entity's issuer.
    max_path_length = len(path) - 1
    for cert in reversed(path[1:-1]):
        if cert.version != x509.Version.v3:
            raise _Fail("invalid", f"{_subject(cert)} is a version 1 certificate and cannot be a CA")
        bc = _ext(cert, x509.BasicConstraints)
        if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
            raise _Fail("invalid", f"{_subject(cert)} is not a CA certificate (basicConstraints)")
        if not _self_issued(cert):  # Self-issued ones do not count (§6.1.4 (l)).
            if max_path_length <= 0:
                raise _Fail("invalid", f"the path is longer than a pathLenConstraint allows at {_subject(cert)}")
            max_path_length -= 1
        if bc.path_length is not None and bc.path_length < max_path_length:
            max_path_length = bc.path_length
        ku = _ext(cert, x509.KeyUsage)
        if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
            raise _Fail("invalid", f"{_subject(cert)} may not sign certificates (keyUsage)")
        problem = issuer_problem(cert)
        if problem is not None:
            raise _Fail("invalid", f"{_subject(cert)}: {problem}")
    _check_names(path)
    leaf = path[0]
    _extensions(leaf)  # Malformed extensions are refused before their values are read.
    problem = purpose_problem(leaf, purpose)
    if problem is not None:
        raise _Fail("invalid", f"{_subject(leaf)} {problem}")
    below_anchor = list(reversed(path[:-1]))
    try:
        return check_policies(below_anchor, [_self_issued(cert) for cert in below_anchor])
    except PolicyError as exc:
        raise _Fail("invalid", f"{exc} (certificate policies)") from None


def _self_issued(cert: x509.Certificate) -> bool:
    return _name_key(cert.subject) == _name_key(cert.issuer)


def _check_names(path: list[x509.Certificate]) -> None:
    """§6.1.3 (b)-(c) and §6.1.4 (g), from the anchor down; the anchor's own constraints are not applied."""
    state = NameConstraintState()
    below_anchor = path[:-1]
    for i in range(len(below_anchor) - 1, -1, -1):
        cert = below_anchor[i]
        leaf = i == 0
        if leaf or not _self_issued(cert):
            problem = state.violation(cert)
            if problem:
                raise _Fail("invalid", f"{_subject(cert)}: {problem} (name constraints)")
        constraints = _ext(cert, x509.NameConstraints)
        if not leaf and isinstance(constraints, x509.NameConstraints):
            try:
                state.add(constraints)
            except UnsupportedConstraint as exc:
                raise _Fail("unsupported", f"not checked: {exc} in {_subject(cert)}") from None


class _Search:
    """Depth-first path building from a certificate up to the anchors, on a budget."""

    def __init__(
        self, intermediates: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate], policy: Policy
    ) -> None:
        self.candidates = [(a, True) for a in anchors] + [(c, False) for c in intermediates]
        self.policy = policy
        self.failures: list[_Fail] = []
        self.checks_left = _MAX_SIGNATURE_CHECKS

    def paths(self, cert: x509.Certificate, path: list[x509.Certificate]) -> Iterator[list[x509.Certificate]]:
        """Every path from ``cert`` (the last of ``path``) to an anchor, lazily."""
        if len(path) > _MAX_DEPTH:
            self.failures.append(_Fail("invalid", "no path to a trust anchor within the depth limit"))
            return
        issuer = _name_key(cert.issuer)
        found = False
        for candidate, is_anchor in self.candidates:
            if candidate in path or _name_key(candidate.subject) != issuer:
                continue
            found = True
            if self.checks_left <= 0:
                self.failures.append(_Fail("invalid", "path building gave up: too many candidate certificates"))
                return
            self.checks_left -= 1
            try:
                _check_signature(cert, candidate, self.policy)
            except _Fail as failure:
                self.failures.append(failure)
                continue
            if is_anchor:
                yield [*path, candidate]
            else:
                yield from self.paths(candidate, [*path, candidate])
        if not found:
            self.failures.append(
                _Fail("invalid", f"the issuer of {_subject(cert)} is neither a trust anchor nor a certificate given")
            )


def _check_revocation(path: list[x509.Certificate], now: datetime, revocation: RevocationChecker | None) -> list[str]:
    """Raise _Fail for a revoked certificate (or a blocking unknown); the notes of non-blocking answers."""
    if revocation is None:
        return []
    notes = []
    for cert, issuer in zip(path[:-1], path[1:], strict=True):
        answer = revocation.status(cert, issuer, now=now)
        if answer.state == "revoked":
            detail = f"{answer.source}: {answer.reason}" if answer.reason else answer.source
            raise _Fail("invalid", f"{_subject(cert)} is revoked ({detail})", revoked=True)
        if answer.blocking:
            raise _Fail("invalid", f"revocation of {_subject(cert)} cannot be checked: {answer.reason}")
        if answer.state == "unavailable":
            notes.append(f"revocation of {_subject(cert)} not checked: {answer.reason}")
    return notes


def validate_chain(
    certificate: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate] = (),
    anchors: Sequence[x509.Certificate],
    now: datetime,
    policy: Policy = DEFAULT_POLICY,
    revocation: RevocationChecker | None = None,
    purpose: Purpose = "signing",
) -> ChainResult:
    """Check that ``certificate`` chains to one of ``anchors`` at ``now``, fit for ``purpose``.

    ``purpose`` is ``signing`` (a signer) or ``encryption`` (a recipient);
    the two differ only in the keyUsage asked of ``certificate`` itself
    (``crl-signing``: a CRL issuer's certificate, for the revocation checker).
    ``intermediates`` are untrusted helpers (the certificates a message
    carries). ``revocation``, when given, is asked about every certificate of
    a path that passed the other checks (see ``pki.revocation``). Returns a
    ``ChainResult``; never raises for a bad chain. The first path that passes
    every check wins; otherwise an ``unsupported`` path is reported before an
    ``invalid`` one.
    """
    if not isinstance(certificate, x509.Certificate):
        raise TypeError("certificate must be a cryptography x509.Certificate")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if purpose not in ALL_PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(ALL_PURPOSES)}")
    anchors = list(anchors)
    if not anchors:
        return ChainResult("not-checked", "no trust anchors are configured")
    search = _Search([c for c in intermediates if c != certificate], anchors, policy)
    outcomes: list[tuple[_Fail, list[x509.Certificate]]] = []
    starts = [[certificate]] if certificate in anchors else []
    for path in itertools.chain(starts, search.paths(certificate, [certificate])):
        try:
            policies = _check_path(path, now, purpose)
            notes = _check_revocation(path, now, revocation)
        except _Fail as refused:
            outcomes.append((refused, path))
            continue
        reason = "; ".join([f"chains to {_subject(path[-1])}", *notes])
        return ChainResult("valid", reason, tuple(path), policies)
    for wanted in ("unsupported", "invalid"):
        for failure, path in outcomes:
            if failure.status == wanted:
                return ChainResult(failure.status, failure.reason, tuple(path), revoked=failure.revoked)
    failures = search.failures
    failure = next((f for f in failures if f.status == "unsupported"), None) or (
        failures[0] if failures else _Fail("invalid", "no path to a trust anchor")
    )
    return ChainResult(failure.status, failure.reason)

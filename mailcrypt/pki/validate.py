"""Is this certificate fit to encrypt mail to (or, for our own, to decrypt with)?

The checks, each returning a problem in words or None:

- validity dates against a ``now`` the caller passes in;
- key type and size: RSA of at least 2048 bits, EC on P-256 or P-384;
- keyUsage, when present: keyEncipherment for RSA key transport,
  keyAgreement for ECDH (RFC 8550 §4.4.2, RFC 5753);
- extendedKeyUsage, when present: emailProtection or anyExtendedKeyUsage
  (RFC 8550 §4.4.4);
- the address: the certificate must be for it, by the one rule of
  ``mailboxes.certificate_addresses`` (RFC 8550 §3);
- with trust anchors: a chain to one of them, and, with a
  ``RevocationChecker``, no certificate of it below the anchor revoked (nor,
  under hard-fail, of unknown status).

The chain check uses cryptography's ``x509.verification`` (a client verifier,
which builds the path and checks signatures, validity and the CA profile of
every issuer), with two changes for S/MIME: an issuer's extendedKeyUsage may
name emailProtection, and the end-entity extensions are left to the checks
above, since the web PKI profile would demand a TLS client EKU and an AKI
that e-mail certificates need not have. It follows the web PKI's choice of
signature algorithms, so a chain signed with SHA-1 is refused. A certificate
that is itself listed as an anchor is trusted as it is (pinning).

Nothing here reads files or keeps state; ``check_*`` raise
``errors.InvalidRecipient`` with a message naming the certificate.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from mailcrypt import errors
from mailcrypt.envelope import algorithm_name
from mailcrypt.pki.mailboxes import certificate_addresses, names_address
from mailcrypt.pki.nameconstraints import email_violation
from mailcrypt.pki.revocation import RevocationChecker
from mailcrypt.policy import DEFAULT_POLICY

__all__ = [
    "MIN_RSA_BITS",
    "fingerprint",
    "key_type",
    "describe",
    "is_ca",
    "is_self_signed",
    "is_chain_certificate",
    "date_problem",
    "key_problem",
    "usage_problem",
    "address_problem",
    "ChainVerifier",
    "recipient_problem",
    "check_recipient",
    "check_identity",
]

MIN_RSA_BITS = 2048
_NO_ADDRESS = (
    "names no e-mail address (no rfc822Name in its subjectAltName, "
    "nor, without a subjectAltName, an emailAddress in its subject)"
)
_CURVES = {"secp256r1": "p256", "secp384r1": "p384"}


def fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint of the DER encoding, lower-case hex (the file name)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def key_type(certificate: x509.Certificate) -> str:
    """A short name of the public key: rsa2048, p256, p384, ec-secp521r1, ed25519, ..."""
    try:
        algorithm = algorithm_name(certificate)
        # DSA and unknown algorithms are named by their OID alone: no key object
        # is built for an algorithm mailcrypt refuses (envelope.pubkey).
        if algorithm not in DEFAULT_POLICY.public_key_algorithms:
            return algorithm
        key = certificate.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm, errors.CMSParseError):
        return "unknown"
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _CURVES.get(key.curve.name, f"ec-{key.curve.name}")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "ed448"
    return type(key).__name__.lower()


def describe(certificate: x509.Certificate) -> str:
    """``certificate for bob@example.org (sha256:0123456789abcdef)``, for messages."""
    addresses = certificate_addresses(certificate)
    who = ", ".join(addresses) if addresses else (certificate.subject.rfc4514_string() or "an empty subject")
    return f"certificate for {who} (sha256:{fingerprint(certificate)[:16]})"


def _when(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _extension(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def is_ca(certificate: x509.Certificate) -> bool:
    """True for a certificate with basicConstraints cA=TRUE."""
    try:
        bc = _extension(certificate, x509.BasicConstraints)
    except ValueError:
        return False
    return isinstance(bc, x509.BasicConstraints) and bc.ca


def is_self_signed(certificate: x509.Certificate) -> bool:
    """True when the certificate is its own issuer and its signature verifies with its own key."""
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def is_chain_certificate(certificate: x509.Certificate) -> bool:
    """True for a CA certificate that belongs in a chain, not to a mailbox.

    ``openssl req -x509`` marks self-signed certificates cA=TRUE by default,
    so a self-signed certificate that names an e-mail address is taken as a
    mailbox's own certificate even when it says it is a CA.
    """
    if not is_ca(certificate):
        return False
    return not (is_self_signed(certificate) and certificate_addresses(certificate))


def date_problem(certificate: x509.Certificate, now: datetime.datetime) -> str | None:
    """Outside its validity period at ``now``?"""
    if now < certificate.not_valid_before_utc:
        return f"is not valid before {_when(certificate.not_valid_before_utc)} (not yet valid)"
    if now > certificate.not_valid_after_utc:
        return f"expired on {_when(certificate.not_valid_after_utc)}"
    return None


def key_problem(certificate: x509.Certificate) -> str | None:
    """A key that cannot receive S/MIME mail under our policy?"""
    kind = key_type(certificate)
    if kind.startswith("rsa"):
        bits = int(kind[3:])
        if bits < MIN_RSA_BITS:
            return f"has an RSA key of {bits} bits; at least {MIN_RSA_BITS} bits are required"
        return None
    if kind in ("p256", "p384"):
        return None
    if kind.startswith("ec-"):
        return f"has an EC key on {kind[3:]}; only P-256 and P-384 are accepted"
    return f"has a {kind} key; only RSA (2048 bits or more) and EC P-256/P-384 keys can receive S/MIME mail"


def usage_problem(certificate: x509.Certificate) -> str | None:
    """keyUsage or extendedKeyUsage forbidding encryption to this key?"""
    try:
        ku = _extension(certificate, x509.KeyUsage)
        eku = _extension(certificate, x509.ExtendedKeyUsage)
    except ValueError:
        return "has malformed or duplicate extensions"
    if isinstance(ku, x509.KeyUsage):
        kind = key_type(certificate)
        if kind.startswith("rsa") and not ku.key_encipherment:
            return "has a keyUsage without keyEncipherment, which RSA key transport needs (RFC 8550 §4.4.2)"
        if (kind in ("p256", "p384") or kind.startswith("ec-")) and not ku.key_agreement:
            return "has a keyUsage without keyAgreement, which ECDH needs (RFC 5753, RFC 8550 §4.4.2)"
    if isinstance(eku, x509.ExtendedKeyUsage):
        allowed = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
        if not allowed.intersection(eku):
            return "has an extendedKeyUsage without emailProtection (RFC 8550 §4.4.4)"
    return None


def address_problem(certificate: x509.Certificate, address: str) -> str | None:
    """Is the certificate not for ``address`` (``mailboxes.names_address``)?"""
    names = certificate_addresses(certificate)
    if not names:
        return _NO_ADDRESS
    if not names_address(certificate, address):
        return f"does not name {address} (it names {', '.join(names)})"
    return None


def _issuer_eku(policy: verification.Policy, certificate: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    # An issuing CA may restrict its EKUs; for mail it must allow emailProtection.
    if eku is None:
        return
    if ExtendedKeyUsageOID.EMAIL_PROTECTION in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
        return
    raise ValueError("issuer's extendedKeyUsage does not include emailProtection")


_ENCOUNTERED = re.compile(r"\s*\(encountered processing .*\)\s*$", re.S)
_VALIDATOR = re.compile(r"Python extension validator failed: \w+: ")


class ChainVerifier:
    """Checks that certificates chain to configured trust anchors (see the module docstring)."""

    def __init__(self, anchors: Sequence[x509.Certificate], *, revocation: RevocationChecker | None = None) -> None:
        self.anchors = tuple(anchors)
        self.revocation = revocation
        self._pinned = {a.public_bytes(serialization.Encoding.DER) for a in self.anchors}
        self._store = verification.Store(list(self.anchors)) if self.anchors else None
        self._ca_policy = verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(
            x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _issuer_eku
        )

    def __bool__(self) -> bool:
        return bool(self.anchors)

    def problem(
        self, certificate: x509.Certificate, *, intermediates: Sequence[x509.Certificate] = (), now: datetime.datetime
    ) -> str | None:
        """None when there are no anchors or the certificate chains to one; else the reason."""
        if self._store is None:
            return None
        if certificate.public_bytes(serialization.Encoding.DER) in self._pinned:
            return None
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(ca_policy=self._ca_policy, ee_policy=verification.ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        try:
            path = verifier.verify(certificate, list(intermediates)).chain
        except verification.VerificationError as exc:
            detail = _ENCOUNTERED.sub("", str(exc)).removeprefix("validation failed: ")
            detail = _VALIDATOR.sub("", detail)
            return f"does not chain to a trust anchor in keys.trust_anchors ({detail})"
        # cryptography applies rfc822Name constraints to the SAN only; the
        # subject's emailAddress attributes are held to them too, as by
        # chain.py, so that signer and recipient are judged alike. The
        # anchor's own constraints are not applied, as in chain.py.
        violation = email_violation(certificate, path[1:-1])
        if violation is not None:
            return f"does not chain to a trust anchor in keys.trust_anchors ({violation} (name constraints))"
        return self._revocation_problem(path, now)

    def _revocation_problem(self, path: Sequence[x509.Certificate], now: datetime.datetime) -> str | None:
        """The checker's answer for each certificate below the anchor, as a problem (as in ``chain``)."""
        if self.revocation is None:
            return None
        for depth, (certificate, issuer) in enumerate(zip(path[:-1], path[1:], strict=True)):
            answer = self.revocation.status(certificate, issuer, now=now)
            whose = "is" if depth == 0 else f"has a revoked issuer: {certificate.subject.rfc4514_string()} is"
            if answer.state == "revoked":
                return f"{whose} revoked ({answer.source}: {answer.reason})"
            if answer.blocking:
                return f"cannot be checked for revocation (revocation = hard-fail): {answer.reason}"
        return None


def recipient_problem(
    certificate: x509.Certificate,
    *,
    now: datetime.datetime,
    address: str | None = None,
    require_address: bool = True,
    chain: ChainVerifier | None = None,
    intermediates: Sequence[x509.Certificate] = (),
) -> str | None:
    """The first reason not to encrypt to ``certificate``, or None.

    With ``address`` the certificate must name it; else, unless
    ``require_address`` is false (a domain's gateway), it must name some address.
    """
    checks = (
        lambda: date_problem(certificate, now),
        lambda: key_problem(certificate),
        lambda: usage_problem(certificate),
        lambda: (
            address_problem(certificate, address)
            if address is not None
            else (_has_address(certificate) if require_address else None)
        ),
        lambda: chain.problem(certificate, intermediates=intermediates, now=now) if chain else None,
    )
    for check in checks:
        problem = check()
        if problem is not None:
            return problem
    return None


def _has_address(certificate: x509.Certificate) -> str | None:
    if certificate_addresses(certificate):
        return None
    return _NO_ADDRESS


def check_recipient(
    certificate: x509.Certificate,
    *,
    now: datetime.datetime,
    address: str | None = None,
    chain: ChainVerifier | None = None,
    intermediates: Sequence[x509.Certificate] = (),
) -> None:
    """Raise ``errors.InvalidRecipient`` if mail cannot be encrypted to ``certificate``."""
    problem = recipient_problem(certificate, now=now, address=address, chain=chain, intermediates=intermediates)
    if problem is not None:
        label = describe(certificate)
        raise errors.InvalidRecipient(f"{label} {problem}", subject=label)


def check_identity(certificate: x509.Certificate) -> None:
    """Raise ``errors.InvalidRecipient`` if our own certificate's key cannot decrypt mail.

    Dates are not checked: an expired identity still opens the mail that
    was encrypted to it (DESIGN.md §1, old keys after renewal).
    """
    for problem in (key_problem(certificate), usage_problem(certificate)):
        if problem is not None:
            label = describe(certificate)
            raise errors.InvalidRecipient(f"{label} {problem}", subject=label)

"""Is this certificate fit to encrypt mail to (or, for our own, to decrypt with)?

The checks, each returning a problem in words or None:

- validity dates against a ``now`` the caller passes in;
- key type and size, from the ``Policy`` alone: RSA of at least
  ``policy.min_rsa_bits``, EC on one of ``policy.curves``;
- the encryption purpose (``purposes``): keyUsage, when present,
  keyEncipherment for RSA key transport, keyAgreement for ECDH (RFC 8550
  §4.4.2, RFC 5753); extendedKeyUsage, when present, emailProtection or
  anyExtendedKeyUsage (RFC 8550 §4.4.4);
- the address: the certificate must be for it, by the one rule of
  ``mailboxes.certificate_addresses`` (RFC 8550 §3);
- with trust anchors: a valid path to one of them, judged by
  ``chain.validate_chain`` for the purpose ``encryption`` -- the same path
  validation that judges signers (DESIGN.md §3a), so a signer the user is
  told is trusted can be encrypted to, and the other way round. A
  certificate that is itself listed as an anchor is trusted as it is
  (pinning).

Nothing here reads files or keeps state; ``check_*`` raise
``errors.InvalidRecipient`` with a message naming the certificate.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from mailcrypt import errors
from mailcrypt.envelope import algorithm_name, public_key
from mailcrypt.pki.chain import validate_chain
from mailcrypt.pki.mailboxes import certificate_addresses, names_address
from mailcrypt.pki.purposes import Purpose, purpose_problem
from mailcrypt.pki.revocation import RevocationChecker
from mailcrypt.policy import DEFAULT_POLICY, Policy

__all__ = [
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

_NO_ADDRESS = (
    "names no e-mail address (no rfc822Name in its subjectAltName, "
    "nor, without a subjectAltName, an emailAddress in its subject)"
)
# Short names for display (``keys list``); which curves are accepted is the Policy's.
_CURVE_NAMES = {"secp256r1": "p256", "secp384r1": "p384"}


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
        return _CURVE_NAMES.get(key.curve.name, f"ec-{key.curve.name}")
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


def key_problem(certificate: x509.Certificate, policy: Policy = DEFAULT_POLICY) -> str | None:
    """A key that cannot receive S/MIME mail under ``policy`` (its algorithms, ``min_rsa_bits``, ``curves``)?"""
    try:
        key = public_key(certificate, policy=policy)
    except errors.MailcryptError:
        key = None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < policy.min_rsa_bits:
            return f"has an RSA key of {key.key_size} bits; at least {policy.min_rsa_bits} bits are required"
        return None
    curves = ", ".join(sorted(policy.curves))
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in policy.curves:
            return f"has an EC key on {key.curve.name}; the policy accepts the curves {curves}"
        return None
    return (
        f"has a {key_type(certificate)} key; only RSA ({policy.min_rsa_bits} bits or more)"
        f" and EC keys (on {curves}) can receive S/MIME mail"
    )


def usage_problem(certificate: x509.Certificate, purpose: Purpose = "encryption") -> str | None:
    """keyUsage or extendedKeyUsage forbidding ``purpose`` (``purposes.purpose_problem``)?"""
    try:
        return purpose_problem(certificate, purpose)
    except ValueError:
        return "has malformed or duplicate extensions"


def address_problem(certificate: x509.Certificate, address: str) -> str | None:
    """Is the certificate not for ``address`` (``mailboxes.names_address``)?"""
    names = certificate_addresses(certificate)
    if not names:
        return _NO_ADDRESS
    if not names_address(certificate, address):
        return f"does not name {address} (it names {', '.join(names)})"
    return None


class ChainVerifier:
    """Judges recipients' paths to the configured trust anchors by ``validate_chain`` (purpose encryption)."""

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        *,
        policy: Policy = DEFAULT_POLICY,
        revocation: RevocationChecker | None = None,
    ) -> None:
        self.anchors = tuple(anchors)
        self.policy = policy
        self.revocation = revocation

    def __bool__(self) -> bool:
        return bool(self.anchors)

    def problem(
        self, certificate: x509.Certificate, *, intermediates: Sequence[x509.Certificate] = (), now: datetime.datetime
    ) -> str | None:
        """None when there are no anchors or the certificate chains to one for encryption; else the reason."""
        if not self.anchors:
            return None
        result = validate_chain(
            certificate,
            intermediates=intermediates,
            anchors=self.anchors,
            now=now,
            policy=self.policy,
            revocation=self.revocation,
            purpose="encryption",
        )
        if result.trusted:
            return None
        return f"does not chain to a trust anchor in keys.trust_anchors ({result.reason})"


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
    The key policy is the ``chain``'s, else ``DEFAULT_POLICY``.
    """
    policy = chain.policy if chain is not None else DEFAULT_POLICY
    checks = (
        lambda: date_problem(certificate, now),
        lambda: key_problem(certificate, policy),
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
    for problem in (key_problem(certificate), usage_problem(certificate, "encryption")):
        if problem is not None:
            label = describe(certificate)
            raise errors.InvalidRecipient(f"{label} {problem}", subject=label)

"""A certificate's public key, judged by its algorithm OID before it is built.

Every public key mailcrypt takes from a certificate (a signer, an issuer in a
chain, a recipient) comes through ``public_key``. The SubjectPublicKeyInfo
algorithm (RFC 5280 §4.1.2.7) is read first and checked against
``Policy.public_key_algorithms``; only an allowed algorithm gets a key object.
That order matters: building a DSA key object is itself deprecated in
cryptography (a warning today, an error later), and a key type the library
does not know raises its own exception, which must never escape untyped.

This module does not judge key sizes or curves: the callers that use a key
for a purpose do (``rsa``, ``ecdh``, ``sigalg``, ``chain``).
"""

from __future__ import annotations

from cryptography import exceptions, x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from mailcrypt.errors import CMSParseError, PolicyViolation, UnsupportedAlgorithm
from mailcrypt.policy import Policy

__all__ = ["ALGORITHM_NAMES", "algorithm_name", "public_key"]

#: SubjectPublicKeyInfo algorithms by OID (RFC 3279 §2.3, RFC 4055 §1.2,
#: RFC 5480 §2.1.1, RFC 8410 §3), named as ``Policy.public_key_algorithms`` names them.
ALGORITHM_NAMES = {
    "1.2.840.113549.1.1.1": "rsa",
    "1.2.840.113549.1.1.10": "rsassa-pss",
    "1.2.840.10045.2.1": "ec",
    "1.3.101.112": "ed25519",
    "1.3.101.113": "ed448",
    "1.3.101.110": "x25519",
    "1.3.101.111": "x448",
    "1.2.840.10040.4.1": "dsa",
    "1.2.840.10046.2.1": "dh",
    "1.2.840.113549.1.3.1": "dh",
}


def algorithm_name(certificate: x509.Certificate) -> str:
    """The name of the certificate's public key algorithm (``ALGORITHM_NAMES``), or its dotted OID."""
    try:
        oid = certificate.public_key_algorithm_oid.dotted_string
    except ValueError:
        raise CMSParseError("a certificate's public key algorithm cannot be read") from None
    return ALGORITHM_NAMES.get(oid, oid)


def public_key(certificate: x509.Certificate, *, policy: Policy) -> CertificatePublicKeyTypes:
    """The certificate's public key, if the policy allows its algorithm.

    Raises ``PolicyViolation`` for a known algorithm the policy refuses (DSA by
    default), ``UnsupportedAlgorithm`` for an unknown one, and ``CMSParseError``
    for key bytes that do not parse. Never a library exception.
    """
    name = algorithm_name(certificate)
    oid = certificate.public_key_algorithm_oid.dotted_string
    subject = _subject(certificate)
    if name == oid:
        raise UnsupportedAlgorithm(f"unknown public key algorithm {oid} in the certificate of {subject}", oid=oid)
    if name not in policy.public_key_algorithms:
        raise PolicyViolation(f"{name.upper()} keys are not allowed by the policy (certificate of {subject})", oid=oid)
    try:
        return certificate.public_key()
    except exceptions.UnsupportedAlgorithm:
        raise UnsupportedAlgorithm(f"the {name.upper()} key of {subject} is not supported", oid=oid) from None
    except ValueError:
        raise CMSParseError(f"the {name.upper()} key in the certificate of {subject} is malformed") from None


def _subject(certificate: x509.Certificate) -> str:
    try:
        return certificate.subject.rfc4514_string() or "(empty subject)"
    except ValueError:
        return "(unreadable subject)"

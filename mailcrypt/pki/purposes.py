"""The S/MIME purposes of a certificate: may this key sign mail, or receive it?

RFC 8550 §4.4.2 and §4.4.4, for the end-entity certificate of a path:

- extendedKeyUsage, when present, must name emailProtection or
  anyExtendedKeyUsage, whatever the purpose;
- keyUsage, when present, must allow the purpose: ``signing`` needs
  digitalSignature or nonRepudiation; ``encryption`` needs keyEncipherment
  for RSA key transport and keyAgreement for EC keys (ECDH, RFC 5753).
  A certificate without keyUsage is not restricted (RFC 5280 §4.2.1.3).

An issuer's extendedKeyUsage is held to emailProtection too
(``issuer_problem``): RFC 5280 leaves EKU on CA certificates undefined, but
S/MIME clients (NSS, and so Thunderbird) read it as a limit on what the CA
may certify, and a CA for TLS servers is no authority on mailboxes.

Nothing here builds keys or checks key sizes: the key type is read from the
algorithm identifier (``envelope.algorithm_name``), so a DSA key is never
loaded. Each function returns a problem in words, or None.
"""

from __future__ import annotations

from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mailcrypt.envelope import algorithm_name
from mailcrypt.errors import CMSParseError

__all__ = ["ALL_PURPOSES", "PURPOSES", "Purpose", "issuer_problem", "purpose_problem"]

Purpose = Literal["signing", "encryption", "crl-signing"]
#: The S/MIME purposes (RFC 8550); ``crl-signing`` is the judge's own, for
#: the certificate of a CRL issuer (RFC 5280 §6.3.3 (f)).
PURPOSES: tuple[Purpose, ...] = ("signing", "encryption")
ALL_PURPOSES: tuple[Purpose, ...] = (*PURPOSES, "crl-signing")
_MAIL_EKUS = (ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)


def _extension(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _eku_problem(certificate: x509.Certificate) -> str | None:
    eku = _extension(certificate, x509.ExtendedKeyUsage)
    if isinstance(eku, x509.ExtendedKeyUsage) and not any(oid in eku for oid in _MAIL_EKUS):
        return "has an extendedKeyUsage without emailProtection (RFC 8550 §4.4.4)"
    return None


def purpose_problem(certificate: x509.Certificate, purpose: Purpose) -> str | None:
    """Why ``certificate`` may not be used for ``purpose``, or None.

    Raises ``ValueError`` for malformed or duplicate extensions, as
    cryptography does, and for an unknown purpose.
    """
    if purpose not in ALL_PURPOSES:
        raise ValueError(f"unknown certificate purpose {purpose!r}")
    ku = _extension(certificate, x509.KeyUsage)
    if purpose == "crl-signing":
        # A CRL issuer needs cRLSign when it states a keyUsage (RFC 5280
        # §4.2.1.3, §6.3.3 (f)); extendedKeyUsage plays no part in it.
        if isinstance(ku, x509.KeyUsage) and not ku.crl_sign:
            return "has a keyUsage without cRLSign, which signing CRLs needs (RFC 5280 §4.2.1.3)"
        return None
    if isinstance(ku, x509.KeyUsage):
        if purpose == "signing" and not (ku.digital_signature or ku.content_commitment):
            return "has a keyUsage without digitalSignature or nonRepudiation, which signing needs (RFC 8550 §4.4.2)"
        if purpose == "encryption":
            try:
                algorithm = algorithm_name(certificate)
            except CMSParseError:
                algorithm = "unknown"
            if algorithm in ("rsa", "rsassa-pss") and not ku.key_encipherment:
                return "has a keyUsage without keyEncipherment, which RSA key transport needs (RFC 8550 §4.4.2)"
            if algorithm == "ec" and not ku.key_agreement:
                return "has a keyUsage without keyAgreement, which ECDH needs (RFC 5753, RFC 8550 §4.4.2)"
    return _eku_problem(certificate)


def issuer_problem(certificate: x509.Certificate) -> str | None:
    """Why a CA certificate may not certify mailboxes (its extendedKeyUsage), or None."""
    if _eku_problem(certificate) is not None:
        return "issuer's extendedKeyUsage does not include emailProtection"
    return None

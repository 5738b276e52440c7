"""What one CRL or OCSP response says about one certificate, and the checks both share.

``Answer`` is the verdict of one source (``good``, ``revoked`` or
``unknown``) with the time it may be kept until. ``verify_signature`` checks
a signature over DER bytes with an issuer's or responder's key under the
``Policy`` hashes; ``check_window`` holds thisUpdate/nextUpdate against
``now``. ``locations_extension`` and ``http_url`` read where a
certificate says to ask (cRLDistributionPoints, authorityInfoAccess) and
which of those places are fetched. Everything here is pure: no files, no network. Failures raise
``errors.RevocationUnavailable`` naming the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from asn1crypto import x509 as asn1_x509
from cryptography import exceptions, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from mailcrypt.errors import RevocationUnavailable
from mailcrypt.policy import Policy

__all__ = [
    "Answer",
    "SKEW",
    "check_window",
    "http_url",
    "locations_extension",
    "public_key_of",
    "serial_of",
    "verify_signature",
    "when",
]

_Extension = TypeVar("_Extension", bound=x509.ExtensionType)

#: Clock difference tolerated between us and a CRL issuer or OCSP responder
#: (the same five minutes ``openssl ocsp`` allows by default, ``-validity_period``).
SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Answer:
    """One source's verdict on one certificate.

    ``until`` is when the answer stops being current (the source's
    nextUpdate), None for a revocation that is final (RFC 5280 §5.3.1: only
    certificateHold can be undone).
    """

    state: Literal["good", "revoked", "unknown"]
    source: str
    reason: str
    until: datetime | None


def locations_extension(
    certificate: x509.Certificate, kind: type[_Extension], name: str
) -> tuple[_Extension | None, list[str]]:
    """The extension of ``certificate`` that says where to ask (``kind``, called ``name``), and notes.

    cRLDistributionPoints for a CRL, authorityInfoAccess for OCSP: an
    absent one is None and no note (there is nowhere to ask), a malformed
    one None and a note saying so.
    """
    try:
        return certificate.extensions.get_extension_for_class(kind).value, []
    except x509.ExtensionNotFound:
        return None, []
    except ValueError:
        return None, [f"its {name} extension is malformed"]


def http_url(name: x509.GeneralName) -> str | None:
    """The URL a location names when it is an http:// URI, the only scheme fetched; else None."""
    if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith("http://"):
        return name.value
    return None


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def check_window(this_update: datetime, next_update: datetime | None, *, now: datetime, source: str) -> None:
    """Refuse an answer issued in the future or past its nextUpdate (RFC 5280 §6.3.3 (a), RFC 6960 §3.2 (4)-(5))."""
    if this_update > now + SKEW:
        raise RevocationUnavailable(f"{source}: issued in the future ({when(this_update)})", source=source)
    if next_update is not None and next_update + SKEW < now:
        raise RevocationUnavailable(f"{source}: stale (its nextUpdate {when(next_update)} has passed)", source=source)


def verify_signature(
    key: object,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm | None,
    *,
    policy: Policy,
    source: str,
) -> None:
    """Check ``signature`` over ``data``; raise ``RevocationUnavailable`` when it does not hold."""
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        try:
            key.verify(signature, data)
        except exceptions.InvalidSignature:
            raise RevocationUnavailable(f"{source}: bad signature", source=source) from None
        return
    if algorithm is None or algorithm.name not in policy.signature_hashes:
        name = algorithm.name if algorithm is not None else "an unknown hash"
        raise RevocationUnavailable(f"{source}: signed with {name}, which the policy refuses", source=source)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            raise RevocationUnavailable(f"{source}: signed with an unsupported key type", source=source)
    except exceptions.InvalidSignature:
        raise RevocationUnavailable(f"{source}: bad signature", source=source) from None


def public_key_of(certificate: x509.Certificate, *, source: str) -> object:
    """The certificate's public key, or ``RevocationUnavailable`` when cryptography cannot load it."""
    try:
        return certificate.public_key()
    except (ValueError, TypeError, exceptions.UnsupportedAlgorithm) as exc:
        raise RevocationUnavailable(f"{source}: the signer's key cannot be read ({exc})", source=source) from None


def serial_of(certificate: x509.Certificate) -> int:
    """The certificate's serial number, read from its DER.

    cryptography warns (and will one day refuse) when the serial number of a
    certificate is not positive; RFC 5280 §4.1.2.2 asks users to handle such
    certificates gracefully, and revocation checking must never turn into a
    warning or an exception for one.
    """
    der = certificate.public_bytes(serialization.Encoding.DER)
    return int(asn1_x509.Certificate.load(der)["tbs_certificate"]["serial_number"].native)

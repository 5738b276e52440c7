"""OCSP (RFC 6960): the request for one certificate and the check of the response.

``responder_urls`` reads the certificate's authorityInfoAccess (RFC 5280
§4.2.2.1) for id-ad-ocsp URLs; ``build_request`` makes the DER request with
a nonce (RFC 6960 §4.4.1, RFC 8954); ``check_response`` accepts a response
only when

- its status is successful and it holds a single response for exactly this
  certificate (serial, issuer name hash and issuer key hash);
- it is signed by the issuer itself, or by a delegated responder whose
  certificate the response carries, was issued directly by the issuer, is
  valid now and has the id-kp-OCSPSigning extended key usage (RFC 6960
  §4.2.2.2); the signature hash must be one the ``Policy`` accepts;
- thisUpdate is not in the future and nextUpdate, when present, has not
  passed (§3.2 (4)-(5)); without nextUpdate it must be at most an hour old,
  and it is then not kept;
- a nonce in the response equals ours (a responder may leave it out).

It sends nothing itself (``online`` does) and keeps nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from mailcrypt.errors import RevocationUnavailable
from mailcrypt.pki.revanswer import (
    Answer,
    check_window,
    http_url,
    locations_extension,
    public_key_of,
    serial_of,
    verify_signature,
    when,
)
from mailcrypt.policy import Policy

__all__ = ["build_request", "check_response", "responder_urls"]

# How old a response without nextUpdate may be: such a responder says
# "newer information is always available" (RFC 6960 §4.2.2.1), so only a
# recent one is taken, and it is not cached.
_WITHOUT_NEXT_UPDATE = timedelta(hours=1)


def responder_urls(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    """The HTTP OCSP responder URLs of ``certificate``, and notes on the locations that are skipped."""
    aia, skipped = locations_extension(certificate, x509.AuthorityInformationAccess, "authorityInfoAccess")
    urls: list[str] = []
    for description in aia or ():
        if description.access_method != AuthorityInformationAccessOID.OCSP:
            continue
        location = description.access_location
        if (url := http_url(location)) is not None:
            urls.append(url)
        else:
            skipped.append(f"OCSP location {getattr(location, 'value', location)} skipped (only http:// is used)")
    return urls, skipped


def build_request(certificate: x509.Certificate, issuer: x509.Certificate, nonce: bytes) -> bytes:
    """The DER OCSPRequest for ``certificate`` (SHA-1 CertID, which every responder reads; RFC 5019 §2.1.1)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())
    builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _is_for(single: ocsp.OCSPSingleResponse, certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    if single.serial_number != serial_of(certificate):
        return False
    try:
        # The CertID hashes are recomputed with the responder's hash algorithm.
        expected = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, single.hash_algorithm).build()
    except (ValueError, TypeError, exceptions.UnsupportedAlgorithm):
        return False
    return (single.issuer_key_hash, single.issuer_name_hash) == (expected.issuer_key_hash, expected.issuer_name_hash)


def _names_responder(response: ocsp.OCSPResponse, candidate: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return candidate.subject == response.responder_name
    try:
        key_id = x509.SubjectKeyIdentifier.from_public_key(candidate.public_key()).digest
    except (ValueError, TypeError, exceptions.UnsupportedAlgorithm):
        return False
    return key_id == response.responder_key_hash


def _delegate_problem(responder: x509.Certificate, issuer: x509.Certificate, now: datetime) -> str | None:
    """Why ``responder`` may not answer for ``issuer`` (RFC 6960 §4.2.2.2), or None."""
    try:
        responder.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, exceptions.InvalidSignature, exceptions.UnsupportedAlgorithm):
        return "its certificate was not issued by the certificate's issuer"
    try:
        eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return "its certificate lacks the id-kp-OCSPSigning extended key usage"
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return "its certificate lacks the id-kp-OCSPSigning extended key usage"
    if not responder.not_valid_before_utc <= now <= responder.not_valid_after_utc:
        return "its certificate is not valid now"
    return None


def _signer(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime, source: str) -> x509.Certificate:
    """The certificate whose key signed ``response``, once it is known to be authorised."""
    if _names_responder(response, issuer):
        return issuer
    problems = []
    for candidate in response.certificates:
        if not _names_responder(response, candidate):
            continue
        problem = _delegate_problem(candidate, issuer, now)
        if problem is None:
            return candidate
        problems.append(problem)
    detail = problems[0] if problems else "it is neither the issuer nor a responder certificate the response carries"
    raise RevocationUnavailable(f"{source}: the responder is not authorised ({detail})", source=source)


def check_response(
    der: bytes,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    nonce: bytes | None,
    now: datetime,
    policy: Policy,
    source: str,
) -> Answer:
    """What the DER OCSPResponse ``der`` says about ``certificate`` (see the module docstring).

    Raises ``errors.RevocationUnavailable`` for a response that cannot be
    read or trusted.
    """
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise RevocationUnavailable(f"{source}: not an OCSP response ({exc})", source=source) from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise RevocationUnavailable(f"{source}: the responder answered {response.response_status.name}", source=source)
    try:
        signer = _signer(response, issuer, now, source)
        algorithm = response.signature_hash_algorithm
        verify_signature(
            public_key_of(signer, source=source),
            response.signature,
            response.tbs_response_bytes,
            algorithm,
            policy=policy,
            source=source,
        )
        extensions = response.extensions
        singles = list(response.responses)
    except (ValueError, exceptions.UnsupportedAlgorithm) as exc:
        raise RevocationUnavailable(f"{source}: unreadable OCSP response ({exc})", source=source) from None
    if nonce is not None:
        try:
            echoed = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = None
        if echoed is not None and echoed != nonce:
            raise RevocationUnavailable(f"{source}: the response answers another request (nonce)", source=source)
    single = next((s for s in singles if _is_for(s, certificate, issuer)), None)
    if single is None:
        raise RevocationUnavailable(f"{source}: the response is not about this certificate", source=source)
    this_update, next_update = single.this_update_utc, single.next_update_utc
    check_window(this_update, next_update, now=now, source=source)
    until = next_update
    if next_update is None:
        if this_update < now - _WITHOUT_NEXT_UPDATE:
            raise RevocationUnavailable(f"{source}: an old response without nextUpdate", source=source)
        until = now
    status = single.certificate_status
    if status == ocsp.OCSPCertStatus.GOOD:
        return Answer("good", f"OCSP {source}", "good", until)
    if status == ocsp.OCSPCertStatus.REVOKED:
        reason = single.revocation_reason
        revoked_at = single.revocation_time_utc
        detail = f"revoked on {when(revoked_at)}" if revoked_at else "revoked"
        if reason is not None and reason != x509.ReasonFlags.unspecified:
            detail += f" ({reason.value})"
        final = reason != x509.ReasonFlags.certificate_hold
        return Answer("revoked", f"OCSP {source}", detail, None if final else until)
    return Answer("unknown", f"OCSP {source}", "the responder does not know the certificate", until)

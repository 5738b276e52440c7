"""CRLs (RFC 5280 §5, §6.3): where a certificate's are, and whether one may answer for it.

``distribution_points`` reads the certificate's cRLDistributionPoints for
HTTP URLs (LDAP and other locations are skipped with a note, as are
distribution points that name a separate cRLIssuer or only some reasons:
the online checker does not fetch indirect or partitioned-by-reason CRLs;
the CRLs a message carries are judged in full by ``messagecrls`` and
``crlscope``).
``load_crl`` parses and checks a CRL against the certificate's issuer:

- the CRL's issuer is the issuer's subject and its signature holds under
  the issuer's key with a ``Policy`` hash; an issuer whose keyUsage lacks
  cRLSign may not sign CRLs (§6.3.3 (f));
- thisUpdate is not in the future, nextUpdate is present and has not
  passed (§5.1.2.5, §6.3.3 (a)): a stale CRL answers nothing;
- it is a complete CRL (no deltaCRLIndicator) with no unknown critical
  extension.

``answer`` then checks the issuingDistributionPoint scope for the
certificate (§6.3.3 (b)): a CRL limited to CA or to end-entity
certificates, or to attribute certificates, or to some reasons, or
indirect, or for another distribution point, does not answer for it. The
serial number in revokedCertificates is ``revoked``, else ``good``. Nothing
here fetches or stores anything (``online`` does).
"""

from __future__ import annotations

from datetime import datetime

from cryptography import exceptions, x509
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from mailcrypt.errors import RevocationUnavailable
from mailcrypt.pki import revanswer as answers
from mailcrypt.policy import Policy

__all__ = ["answer", "distribution_points", "load_crl"]

_KNOWN_CRL_EXTENSIONS = {
    ExtensionOID.CRL_NUMBER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.ISSUING_DISTRIBUTION_POINT,
    ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.FRESHEST_CRL,
}


def distribution_points(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    """The HTTP CRL URLs of ``certificate``, and notes on the distribution points skipped."""
    points, skipped = answers.locations_extension(certificate, x509.CRLDistributionPoints, "cRLDistributionPoints")
    urls: list[str] = []
    for point in points or ():
        if point.crl_issuer or point.reasons:
            skipped.append("a distribution point with an indirect CRL issuer or only some reasons skipped")
            continue
        for name in point.full_name or ():
            if (url := answers.http_url(name)) is not None:
                urls.append(url)
            else:
                value = getattr(name, "value", name)
                skipped.append(f"CRL location {value} skipped (only http:// is fetched)")
    return urls, skipped


def load_crl(
    data: bytes, issuer: x509.Certificate, *, now: datetime, policy: Policy, source: str
) -> x509.CertificateRevocationList:
    """Parse ``data`` (DER, or PEM) and check it is a current complete CRL of ``issuer``.

    Raises ``errors.RevocationUnavailable`` otherwise.
    """
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(data)
        )
        extensions = crl.extensions
    except ValueError as exc:
        raise RevocationUnavailable(f"{source}: not a CRL ({exc})", source=source) from None
    if crl.issuer != issuer.subject:
        raise RevocationUnavailable(f"{source}: issued by {crl.issuer.rfc4514_string()}, not the issuer", source=source)
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.crl_sign:
            raise RevocationUnavailable(f"{source}: the issuer's keyUsage does not allow cRLSign", source=source)
    except x509.ExtensionNotFound:
        pass
    except ValueError:
        raise RevocationUnavailable(f"{source}: the issuer has a malformed keyUsage", source=source) from None
    try:
        algorithm = crl.signature_hash_algorithm
    except exceptions.UnsupportedAlgorithm:
        raise RevocationUnavailable(f"{source}: signed with an unsupported algorithm", source=source) from None
    key = answers.public_key_of(issuer, source=source)
    answers.verify_signature(key, crl.signature, crl.tbs_certlist_bytes, algorithm, policy=policy, source=source)
    if crl.next_update_utc is None:
        raise RevocationUnavailable(f"{source}: the CRL has no nextUpdate (RFC 5280 §5.1.2.5)", source=source)
    answers.check_window(crl.last_update_utc, crl.next_update_utc, now=now, source=source)
    for extension in extensions:
        if extension.oid == ExtensionOID.DELTA_CRL_INDICATOR:
            raise RevocationUnavailable(f"{source}: a delta CRL, not a complete one", source=source)
        if extension.critical and extension.oid not in _KNOWN_CRL_EXTENSIONS:
            raise RevocationUnavailable(
                f"{source}: unknown critical CRL extension {extension.oid.dotted_string}", source=source
            )
    return crl


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def _scope_problem(crl: x509.CertificateRevocationList, certificate: x509.Certificate, url: str) -> str | None:
    """Why ``crl`` does not cover ``certificate`` by its issuingDistributionPoint (§6.3.3 (b)), or None."""
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None
    if idp.indirect_crl:
        return "an indirect CRL"
    if idp.only_some_reasons:
        return "a CRL for only some reasons"
    if idp.only_contains_attribute_certs:
        return "a CRL for attribute certificates"
    if idp.only_contains_user_certs and _is_ca(certificate):
        return "a CRL for end-entity certificates only"
    if idp.only_contains_ca_certs and not _is_ca(certificate):
        return "a CRL for CA certificates only"
    if idp.full_name is not None:
        names = {n.value for n in idp.full_name if isinstance(n, x509.UniformResourceIdentifier)}
        if url not in names:
            return "a CRL for another distribution point"
    return None


def answer(
    crl: x509.CertificateRevocationList, certificate: x509.Certificate, *, url: str
) -> answers.Answer:
    """What a CRL checked by ``load_crl`` says about ``certificate``.

    Raises ``errors.RevocationUnavailable`` when the CRL does not cover it.
    """
    source = f"CRL {url}"
    scope = _scope_problem(crl, certificate, url)
    if scope is not None:
        raise RevocationUnavailable(f"{url}: {scope}", source=url)
    entry = crl.get_revoked_certificate_by_serial_number(answers.serial_of(certificate))
    if entry is None:
        return answers.Answer("good", source, "not listed", crl.next_update_utc)
    reason = None
    try:
        reason = entry.extensions.get_extension_for_oid(CRLEntryExtensionOID.CRL_REASON).value.reason  # type: ignore[attr-defined]
    except (x509.ExtensionNotFound, ValueError):
        pass
    if reason == x509.ReasonFlags.remove_from_crl:
        return answers.Answer("good", source, "removed from hold", crl.next_update_utc)
    detail = f"revoked on {answers.when(entry.revocation_date_utc)}"
    if reason is not None and reason != x509.ReasonFlags.unspecified:
        detail += f" ({reason.value})"
    final = reason != x509.ReasonFlags.certificate_hold
    return answers.Answer("revoked", source, detail, None if final else crl.next_update_utc)

"""Reading a CRL whole, and whether it covers a certificate (RFC 5280 §5, §6.3.3 (b), (d)).

``read_crl`` parses a DER CRL once into a ``ReadCRL``: its issuer, number,
deltaCRLIndicator, issuingDistributionPoint, and every entry keyed by
(certificate issuer, serial number), the certificate issuer following the
certificateIssuer entry extensions of an indirect CRL (§5.3.3). A CRL with
an unknown critical CRL or entry extension, or without nextUpdate, is read
but marked unusable (§5.2, §5.3: it "MUST NOT" be used), so that the caller
can say why.

``coverage`` says which revocation reasons a CRL covers for one
certificate, matching the certificate's cRLDistributionPoints (or the
default distribution point of a certificate without them) against the
CRL's issuer, its issuingDistributionPoint names, its onlyContainsUserCerts
/ CACerts / AttributeCerts flags and onlySomeReasons (§6.3.3 (b), (d)).
``delta_fits`` says whether a delta CRL may be applied to a complete one
(§5.2.4). It checks no signature and no time (``messagecrls`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

__all__ = ["ALL_REASONS", "ReadCRL", "coverage", "delta_fits", "name_key", "read_crl"]

#: The reasons a set of CRLs must cover between them (§6.3.3 (d), (i)).
ALL_REASONS = frozenset(
    {
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.ca_compromise,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.certificate_hold,
        x509.ReasonFlags.privilege_withdrawn,
        x509.ReasonFlags.aa_compromise,
    }
)

_KNOWN_CRL_EXTENSIONS = {
    ExtensionOID.CRL_NUMBER.dotted_string,
    ExtensionOID.DELTA_CRL_INDICATOR.dotted_string,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string,
    ExtensionOID.ISSUING_DISTRIBUTION_POINT.dotted_string,
    ExtensionOID.ISSUER_ALTERNATIVE_NAME.dotted_string,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS.dotted_string,
    ExtensionOID.FRESHEST_CRL.dotted_string,
}
# reasonCode, invalidityDate, certificateIssuer, holdInstructionCode (§5.3).
_KNOWN_ENTRY_EXTENSIONS = {"2.5.29.21", "2.5.29.24", "2.5.29.29", "2.5.29.23"}


def name_key(name: x509.Name | asn1_x509.Name) -> object:
    """A name in its RFC 5280 §7.1 comparison form (case, spaces and string type folded)."""
    if isinstance(name, x509.Name):
        name = asn1_x509.Name.load(name.public_bytes())
    return name.hashable


@dataclass(frozen=True)
class ReadCRL:
    """One parsed CRL; ``problem`` says why it may not be used at all (None: it may)."""

    der: bytes
    crl: x509.CertificateRevocationList
    issuer: object  # name_key of the CRL issuer
    number: int | None
    delta_base: int | None  # the deltaCRLIndicator's BaseCRLNumber: a delta CRL
    idp: x509.IssuingDistributionPoint | None
    entries: dict[tuple[object, int], str | None]  # (issuer key, serial) -> reason name
    problem: str | None


def _entries(der: bytes, issuer: object) -> tuple[dict[tuple[object, int], str | None], str | None]:
    """The CRL's entries, read with asn1crypto (it keeps non-positive serials as they are)."""
    entries: dict[tuple[object, int], str | None] = {}
    problem = None
    current = issuer
    tbs = asn1_crl.CertificateList.load(der)["tbs_cert_list"]
    for entry in tbs["revoked_certificates"]:
        reason = None
        for ext in entry["crl_entry_extensions"]:
            oid = ext["extn_id"].dotted
            if oid == "2.5.29.29":
                # Later entries belong to this issuer too, until the next certificateIssuer (§5.3.3).
                names = [n.chosen for n in ext["extn_value"].parsed if n.name == "directory_name"]
                current = names[0].hashable if names else object()
            elif oid == "2.5.29.21":
                reason = ext["extn_value"].parsed.native
            elif ext["critical"].native and oid not in _KNOWN_ENTRY_EXTENSIONS:
                problem = f"an entry has the unknown critical extension {oid} (RFC 5280 §5.3)"
        entries[(current, entry["user_certificate"].native)] = reason
    return entries, problem


def read_crl(der: bytes) -> ReadCRL:
    """Parse a DER CRL. Raises ``ValueError`` (or an asn1crypto error) when it is not one."""
    crl = x509.load_der_x509_crl(der)
    issuer = name_key(crl.issuer)
    problem = None
    number = delta_base = None
    idp = None
    for extension in crl.extensions:
        oid = extension.oid
        if oid == ExtensionOID.CRL_NUMBER:
            number = extension.value.crl_number
        elif oid == ExtensionOID.DELTA_CRL_INDICATOR:
            delta_base = extension.value.crl_number
        elif oid == ExtensionOID.ISSUING_DISTRIBUTION_POINT:
            idp = extension.value
        elif extension.critical and oid.dotted_string not in _KNOWN_CRL_EXTENSIONS:
            problem = f"it has the unknown critical extension {oid.dotted_string} (RFC 5280 §5.2)"
    entries, entry_problem = _entries(der, issuer)
    problem = problem or entry_problem
    if problem is None and crl.next_update_utc is None:
        problem = "it has no nextUpdate (RFC 5280 §5.1.2.5)"
    return ReadCRL(der, crl, issuer, number, delta_base, idp, entries, problem)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def _names(
    full: Iterable[x509.GeneralName] | None, relative: x509.RelativeDistinguishedName | None, parent: x509.Name
) -> set[object]:
    """A distribution point name as comparable keys (§4.2.1.13: a relative name follows its issuer's)."""
    if relative is not None:
        return {("dn", name_key(x509.Name([*parent.rdns, relative])))}
    keys: set[object] = set()
    for name in full or ():
        if isinstance(name, x509.DirectoryName):
            keys.add(("dn", name_key(name.value)))
        else:
            keys.add((type(name).__name__, str(name.value)))
    return keys


_Point = tuple[
    list[x509.GeneralName] | None,  # fullName
    x509.RelativeDistinguishedName | None,  # nameRelativeToCRLIssuer
    frozenset[x509.ReasonFlags] | None,
    list[x509.GeneralName] | None,  # cRLIssuer
]


def _distribution_points(certificate: x509.Certificate) -> list[_Point]:
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        # The default: the certificate's issuer publishes one CRL for all reasons (§6.3.3).
        return [(None, None, None, None)]
    return [(p.full_name, p.relative_name, p.reasons, p.crl_issuer) for p in points]


def coverage(read: ReadCRL, certificate: x509.Certificate) -> frozenset[x509.ReasonFlags]:
    """The reasons ``read`` covers for ``certificate`` (empty: it does not cover it at all).

    Raises ``ValueError`` for a malformed cRLDistributionPoints extension.
    """
    idp = read.idp
    if idp is not None:
        if idp.only_contains_attribute_certs:
            return frozenset()
        if idp.only_contains_user_certs and _is_ca(certificate):
            return frozenset()
        if idp.only_contains_ca_certs and not _is_ca(certificate):
            return frozenset()
    indirect = idp is not None and idp.indirect_crl
    covered: set[x509.ReasonFlags] = set()
    for full_name, relative_name, point_reasons, crl_issuer in _distribution_points(certificate):
        issuers = [certificate.issuer]
        if crl_issuer:
            # The point names the CRL issuer: only an indirect CRL from it serves (§6.3.3 (b)(1)).
            issuers = [n.value for n in crl_issuer if isinstance(n, x509.DirectoryName)]
            if not indirect or read.issuer not in {name_key(n) for n in issuers}:
                continue
        elif read.issuer != name_key(certificate.issuer):
            continue
        if idp is not None and (idp.full_name is not None or idp.relative_name is not None):
            wanted = _names(idp.full_name, idp.relative_name, read.crl.issuer)
            if full_name is not None or relative_name is not None:
                offered = _names(full_name, relative_name, issuers[0] if issuers else certificate.issuer)
            else:
                offered = {("dn", name_key(n)) for n in issuers}
            if not wanted & offered:
                continue
        reasons = set(ALL_REASONS)
        if point_reasons is not None:
            reasons &= set(point_reasons)
        if idp is not None and idp.only_some_reasons is not None:
            reasons &= set(idp.only_some_reasons)
        covered |= reasons
    return frozenset(covered)


def delta_fits(delta: ReadCRL, complete: ReadCRL) -> bool:
    """Whether ``delta`` updates ``complete``: same issuer and scope, a base it builds on (§5.2.4, §6.3.3 (c))."""
    if delta.delta_base is None or complete.number is None or delta.number is None:
        return False
    return (
        delta.issuer == complete.issuer
        and delta.idp == complete.idp
        and delta.delta_base <= complete.number < delta.number
    )

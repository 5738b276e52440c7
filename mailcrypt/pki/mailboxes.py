"""The e-mail addresses a certificate is for: one rule for every use of a certificate.

``certificate_addresses`` is the set the key directory files a certificate
under, harvesting compares with a message's From, the recipient lookup and
the signing-identity choice match against, and name constraints check.
``names_address`` asks whether one address is in it, compared in the normal
form of ``mailcrypt.addresses``.

The rule (RFC 8550 §3, RFC 5280 §4.2.1.6): the rfc822Name entries of the
subjectAltName are the addresses. The legacy emailAddress attribute of the
subject counts only when the certificate has no subjectAltName extension at
all. RFC 8550 §3 asks receivers to recognise both places but says nothing
about which wins; RFC 5280 §4.2.1.10 ties the emailAddress attribute to the
case where "the certificate does not include a subject alternative name",
and that is the case the rfc822Name constraints of most validators cover.
A certificate with a subjectAltName (of any form) is judged by it alone,
so an emailAddress beside it can never add an address that a constrained CA
was not allowed to certify.

``subject_email_addresses`` gives the emailAddress attributes whatever the
subjectAltName says, for name constraints, which apply to them as well
(``nameconstraints``). Nothing here checks signatures, dates or keys.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from mailcrypt.addresses import address_key

__all__ = ["certificate_addresses", "names_address", "subject_email_addresses"]


def subject_email_addresses(certificate: x509.Certificate) -> list[str]:
    """The values of every emailAddress attribute of the subject, as written."""
    return [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]


def certificate_addresses(certificate: x509.Certificate) -> list[str]:
    """The e-mail addresses ``certificate`` is for, each once (first spelling kept), in order.

    See the module docstring for the rule. Entries without a local part and
    a domain are skipped. A certificate whose extensions cannot be read
    (malformed or duplicated, which cryptography refuses as a whole) is for
    no address: whether it has a subjectAltName cannot be told.
    """
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = subject_email_addresses(certificate)
    except ValueError:
        names = []
    else:
        names = san.get_values_for_type(x509.RFC822Name)
    seen: dict[str, str] = {}
    for name in names:
        name = name.strip()
        if "@" in name.strip("@"):
            seen.setdefault(address_key(name), name)
    return list(seen.values())


def names_address(certificate: x509.Certificate, address: str) -> bool:
    """Whether ``address`` is one of ``certificate_addresses(certificate)`` (RFC 5280 §7.5 comparison)."""
    wanted = address_key(address)
    return any(address_key(name) == wanted for name in certificate_addresses(certificate))

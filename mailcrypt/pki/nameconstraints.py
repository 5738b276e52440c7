"""Name constraints (RFC 5280 §4.2.1.10, §6.1.3 (b)-(c), §6.1.4 (g)) for ``chain.py``.

A CA may limit the names its subordinates certify: permitted subtrees
(every name of a constrained form must fall inside one) and excluded
subtrees (no name may fall inside one). The forms an S/MIME chain uses are
implemented:

- directoryName: the subtree's RDNs are a prefix of the subject's, compared
  after RFC 5280 §7.1 string preparation;
- rfc822Name: a mailbox, a host (``example.com``: that host exactly) or a
  domain (``.example.com``: any host below it); applied to the SAN e-mail
  addresses and to every emailAddress attribute of the subject, whether or
  not there is a SAN (see ``_names``);
- dNSName: the name or any name with more labels on its left;
- uniformResourceIdentifier: the URI's host, as a host or ``.domain``;
- iPAddress: address inside the network.

A constraint of any other form (otherName, x400Address, ediPartyName,
registeredID) raises ``UnsupportedConstraint``: the chain is then
``unsupported``, never ``valid``. It reads certificates only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from asn1crypto import x509 as asn1_x509
from cryptography import x509

from mailcrypt.pki.mailboxes import subject_email_addresses

__all__ = ["NameConstraintState", "UnsupportedConstraint"]

_FORMS = (x509.DirectoryName, x509.RFC822Name, x509.DNSName, x509.UniformResourceIdentifier, x509.IPAddress)


class UnsupportedConstraint(Exception):
    """A name constraint of a form mailcrypt does not evaluate."""


def _rdns(name: x509.Name) -> list[str]:
    return [rdn.hashable for rdn in asn1_x509.Name.load(name.public_bytes()).chosen]


def _host_match(host: str, constraint: str) -> bool:
    host, constraint = host.lower().rstrip("."), constraint.lower().rstrip(".")
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


def _dns_match(name: str, constraint: str) -> bool:
    name, constraint = name.lower().rstrip("."), constraint.lower().rstrip(".")
    if not constraint:
        return True
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith("." + constraint)


def _email_match(address: str, constraint: str) -> bool:
    local, _, domain = address.rpartition("@")
    if "@" in constraint:
        c_local, _, c_domain = constraint.rpartition("@")
        return local == c_local and domain.lower() == c_domain.lower()
    return _host_match(domain, constraint)


def _matches(name: x509.GeneralName, constraint: x509.GeneralName) -> bool:
    """Whether ``name`` lies in the subtree ``constraint`` (both of one form)."""
    if isinstance(name, x509.DirectoryName):
        prefix = _rdns(constraint.value)
        return _rdns(name.value)[: len(prefix)] == prefix
    if isinstance(name, x509.RFC822Name):
        return _email_match(name.value, constraint.value)
    if isinstance(name, x509.DNSName):
        return _dns_match(name.value, constraint.value)
    if isinstance(name, x509.UniformResourceIdentifier):
        host = urlsplit(name.value).hostname
        if not host:
            return False
        return _host_match(host, constraint.value)
    if isinstance(name, x509.IPAddress):
        network = constraint.value
        return isinstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and name.value in network
    return False


def _names(cert: x509.Certificate) -> list[x509.GeneralName]:
    """The names of ``cert`` that constraints apply to.

    RFC 5280 §4.2.1.10 requires rfc822Name constraints on the subject's
    emailAddress attributes only when there is no SAN. They are applied
    whatever the SAN says, as OpenSSL does: a name a constrained CA may not
    certify has no business in its certificates, and every address
    ``mailboxes.certificate_addresses`` can return is then inside the
    constraints (the SAN entries, or without a SAN these attributes).
    """
    names: list[x509.GeneralName] = []
    if len(cert.subject) > 0:
        names.append(x509.DirectoryName(cert.subject))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.extend(n for n in san if isinstance(n, _FORMS))
    except x509.ExtensionNotFound:
        pass
    names.extend(x509.RFC822Name(address) for address in subject_email_addresses(cert))
    return names


@dataclass
class NameConstraintState:
    """The permitted and excluded subtrees gathered down a path."""

    permitted: list[dict[type, list[x509.GeneralName]]] = field(default_factory=list)
    excluded: list[x509.GeneralName] = field(default_factory=list)

    def add(self, constraints: x509.NameConstraints) -> None:
        """Take in one CA's constraints (§6.1.4 (g)); raise ``UnsupportedConstraint`` for other forms."""
        for subtree in (*(constraints.permitted_subtrees or ()), *(constraints.excluded_subtrees or ())):
            if not isinstance(subtree, _FORMS):
                raise UnsupportedConstraint(f"a {type(subtree).__name__} name constraint")
        if constraints.permitted_subtrees:
            by_form: dict[type, list[x509.GeneralName]] = {}
            for subtree in constraints.permitted_subtrees:
                by_form.setdefault(type(subtree), []).append(subtree)
            self.permitted.append(by_form)
        self.excluded.extend(constraints.excluded_subtrees or ())

    def violation(self, cert: x509.Certificate) -> str | None:
        """A description of the first name of ``cert`` outside the constraints, or None."""
        for name in _names(cert):
            for by_form in self.permitted:
                allowed = by_form.get(type(name))
                if allowed is not None and not any(_matches(name, c) for c in allowed):
                    return f"{_show(name)} is outside the permitted subtrees"
            for excluded in self.excluded:
                if type(excluded) is type(name) and _matches(name, excluded):
                    return f"{_show(name)} is in an excluded subtree"
        return None


def _show(name: x509.GeneralName) -> str:
    value = name.value.rfc4514_string() if isinstance(name, x509.DirectoryName) else str(name.value)
    return f"{type(name).__name__} {value}"

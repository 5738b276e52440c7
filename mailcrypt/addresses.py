"""The one normal form of e-mail addresses and domains, for every comparison and every key.

``normalize_address`` checks an address a user gives (``init``, ``keys
generate``, the configuration) and returns it with its domain in ASCII,
lower case. ``address_key`` and ``domain_key`` give the form in which two
addresses or domains compare equal (RFC 5280 §7.5), used to store and look
up certificates, policies and logins; ``recipient_key`` the form in which
two recipients of one message are one delivery.

Domains are converted by IDNA 2008 with the UTS #46 mapping, non-transitional
(the ``idna`` package), as browsers and current mail software do: ``straße.de``
is ``xn--strae-oqa.de``. Python's built-in ``idna`` codec is IDNA 2003, which
maps it to ``strasse.de``, a different domain with possibly another owner, so
it is never used. Every other module that compares or stores an address or a
domain goes through this one.

It sits in the lowest layer beside ``policy`` and ``errors`` and imports
nothing else of mailcrypt's. It does not check that a domain exists.
"""

from __future__ import annotations

import functools
import re

import idna

from mailcrypt import errors

__all__ = ["normalize_address", "address_key", "recipient_key", "domain_key"]

_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+)*")
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def normalize_address(address: str) -> str:
    """Check that ``address`` is a plain e-mail address and return it.

    The domain is converted to its ASCII (IDNA 2008) form and lowercased, since
    domains compare case-insensitively (RFC 5280 §7.5); the local part is
    kept as written. Raises ``errors.UsageError`` for anything that is not
    ``local@domain``. The address also becomes a file name, so '/' and a
    leading dot are refused.
    """
    if not isinstance(address, str):
        raise TypeError("address must be a str")
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise errors.UsageError(f"not an e-mail address: {address!r} (expected local@domain)")
    if not _LOCAL_RE.fullmatch(local) or len(local) > 64:
        raise errors.UsageError(f"unsupported local part in e-mail address {address!r}")
    try:
        ascii_domain = _a_label_form(domain)
    except UnicodeError:
        raise errors.UsageError(f"invalid domain in e-mail address {address!r}") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise errors.UsageError(f"invalid domain in e-mail address {address!r}")
    return f"{local}@{ascii_domain}"


def address_key(address: str) -> str:
    """The form in which two addresses compare equal.

    RFC 5280 §7.5: the local part compares exactly, the domain
    case-insensitively, an internationalised domain by its A-label (IDNA
    2008) form: ``bob@straße.de`` and ``bob@xn--strae-oqa.de`` give one key,
    ``bob@strasse.de`` another. ``Bob@Example.ORG`` and ``Bob@example.org`` give the same key,
    ``bob@example.org`` another one.
    """
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain_key(domain)}"


def recipient_key(address: str) -> str:
    """The form in which two recipients of one message are the same delivery.

    ``address_key`` with the local part lowercased too: mail systems treat
    ``Bob@example.org`` and ``bob@example.org`` as one mailbox in practice
    (RFC 5321 §2.4 leaves case to the receiving host), so a message lists,
    counts and hides such recipients once. Certificates and policies are
    never looked up by this form, only by ``address_key``.
    """
    return address_key(address).lower()


# The conversion is a pure function of the string, and it is asked for many
# times a message (every RCPT, header and login comparison): about 40 µs each
# through the idna package. Remembered, bounded, as clients choose the domains.
@functools.lru_cache(maxsize=4096)
def domain_key(domain: str) -> str:
    """A domain in the form it is compared in: ASCII (IDNA 2008 A-labels) and lower case.

    A domain that IDNA 2008 refuses (an underscore, a symbol) is kept as
    written, lowercased: it is still a key that equals only itself, and a
    lookup must not fail on a name the user or a message spelt oddly.
    """
    domain = domain.strip().rstrip(".")
    try:
        return _a_label_form(domain)
    except UnicodeError:
        return domain.lower()


def _a_label_form(domain: str) -> str:
    """``domain`` in lower-case A-labels (UTS #46 mapping, non-transitional); ``UnicodeError`` if invalid.

    The idna package raises ``idna.IDNAError``, a ``UnicodeError``, for a
    domain it refuses. Non-transitional processing keeps ß, ς, ZWJ and ZWNJ
    (UTS #46 §4), as IDNA 2008 requires.
    """
    return idna.encode(domain, uts46=True, transitional=False).decode("ascii").lower()

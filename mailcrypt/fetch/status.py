"""The words of ``X-Mailcrypt-Status``, in one place, and the rule that only the fetcher writes X-Mailcrypt-* fields.

A status value is a list of parts separated by ``"; "``, always in this
order (README, "Status fields"):

1. what was done with the content: ``decrypted``, ``not encrypted``, or
   ``plain`` (neither encrypted nor signed, followed by ``not encrypted;
   not signed``), or ``quarantined`` followed by a reason of
   ``process.REASON_EXIT_CODES`` (``replay``, ``stale``, ``no-key``, ...)
   and one line of detail;
2. the signature: ``signature valid``, ``signature uses SHA-1, not
   accepted as proof`` (a weak algorithm: the content is delivered, the
   signature proves nothing), or ``not signed``;
3. after a valid signature, its signer: ``signer trusted`` (the chain ends
   at a configured trust anchor), ``signer not trusted`` (it does not),
   ``signer revoked``, or ``signer not checked`` (no trust anchors are
   configured, so nothing was checked: not a verdict either way).

Names of certificate subjects are RFC 4514 strings with the attribute
names people know (``emailAddress=``, not ``1.2.840.113549.1.9.1=``).

An incoming message may carry X-Mailcrypt-* fields of its own, to pass for
mail the fetcher vouched for. ``disarm`` renames each of them to
``X-Mailcrypt-Original-…`` (a name the fetcher never writes), in delivered
and quarantined copies alike, and the fetcher's own fields go on top.

What it won't do: decide anything about a message (``process``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = [
    "DECRYPTED",
    "NOT_ENCRYPTED",
    "NOT_SIGNED",
    "PLAIN",
    "QUARANTINED",
    "SIGNATURE_VALID",
    "disarm",
    "quarantined",
    "rfc4514_name",
    "signer_status",
    "weak_signature",
]

DECRYPTED = "decrypted"
NOT_ENCRYPTED = "not encrypted"
PLAIN = "plain"
QUARANTINED = "quarantined"
SIGNATURE_VALID = "signature valid"
NOT_SIGNED = "not signed"
SIGNER_TRUSTED = "signer trusted"
SIGNER_NOT_TRUSTED = "signer not trusted"
SIGNER_REVOKED = "signer revoked"
SIGNER_NOT_CHECKED = "signer not checked"

# cryptography names only the attributes of RFC 4514 §3 itself; the others come out as OIDs.
_NAMES = {NameOID.EMAIL_ADDRESS: "emailAddress"}


def rfc4514_name(name: x509.Name) -> str:
    """``name`` as an RFC 4514 string, with ``emailAddress`` spelled out."""
    return name.rfc4514_string(_NAMES)


def weak_signature(description: str) -> str:
    """The signature part for a weak algorithm (``description``: "SHA-1", ...)."""
    return f"signature uses {description}, not accepted as proof"


def signer_status(chains: Iterable[tuple[str, bool]]) -> str:
    """The signer part for the valid signatures' chains, each ``(pki status, revoked)``.

    One revoked signer makes it ``signer revoked``; all ``valid`` make it
    trusted; all ``not-checked`` (no anchors configured) make it not
    checked; anything else is not trusted.
    """
    statuses = list(chains)
    if any(revoked for _status, revoked in statuses):
        return SIGNER_REVOKED
    if statuses and all(status == "valid" for status, _revoked in statuses):
        return SIGNER_TRUSTED
    if statuses and all(status == "not-checked" for status, _revoked in statuses):
        return SIGNER_NOT_CHECKED
    return SIGNER_NOT_TRUSTED


def quarantined(reason: str, detail: str) -> str:
    return f"{QUARANTINED}; {reason}; {detail}"


_HEADER_END = re.compile(rb"\r?\n\r?\n")
# A field name at the start of a line (continuation lines start with white space, RFC 5322 §2.2.3).
_OURS = re.compile(rb"(?im)^x-mailcrypt-(?!original-)")


def disarm(message: bytes) -> bytes:
    """``message`` with every X-Mailcrypt-* field of its header renamed ``X-Mailcrypt-Original-*``; body untouched.

    Works on the bytes, without parsing: a header too broken to parse (a
    message on its way to quarantine) is disarmed as well.
    """
    end = _HEADER_END.search(message)
    cut = end.start() if end is not None else len(message)
    header = message[:cut]
    if b"x-mailcrypt-" not in header.lower():
        return message
    return _OURS.sub(b"X-Mailcrypt-Original-", header) + message[cut:]

"""Harvesting: what verified signed mail teaches us about its sender.

A signed message carries the signer's certificate and, in SMIMECapabilities,
the algorithms the signer's client can decrypt (RFC 8551 §2.5.2). After a
signature has been verified, ``harvest`` files that certificate in the key
directory under the sender's address, so the next reply can be encrypted
with no manual import, and records the capabilities in the state store, so
``advertised`` can let ``KeyDirectory.recipients_for`` choose ``modern`` for
a correspondent who announced AES-GCM (DESIGN.md §1).

Rules that keep this from becoming a way in:
- only signatures over the content (inside the innermost envelope) count,
  and only when the message's From address is one of the certificate's
  (``pki.names_address``, the rule every other use of it follows);
- with trust anchors configured, only certificates that chain to one;
- the certificate must pass every check an imported one does;
- harvested certificates are filed with source ``harvested`` and never
  used for an address that has a certificate the administrator imported
  (``KeyDirectory.best`` prefers those: a pinned certificate is never
  replaced);
- our own identities are never filed as someone else's certificate.

It changes nothing when ``[keys] harvest = false``; the caller checks that.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

from cryptography import x509

from mailcrypt import errors
from mailcrypt.addresses import address_key
from mailcrypt.keydir import KeyDirectory
from mailcrypt.mime import Unwrapped
from mailcrypt.pki import fingerprint, names_address
from mailcrypt.state import Store

__all__ = ["HARVESTED", "harvest", "record_capabilities", "advertised"]

log = logging.getLogger(__name__)

#: The ``source`` of certificates filed from signed mail.
HARVESTED = "harvested"


def record_capabilities(
    store: Store, address: str, fingerprint: str, capabilities: tuple[str, ...], now: datetime
) -> None:
    """Remember what ``address`` (with the certificate ``fingerprint``) can decrypt; newest wins."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO capabilities (address, fingerprint, capabilities, seen_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (address, fingerprint) DO UPDATE SET capabilities = excluded.capabilities, "
            "seen_at = excluded.seen_at WHERE excluded.seen_at >= capabilities.seen_at",
            (address_key(address), fingerprint, json.dumps(list(capabilities)), int(now.timestamp())),
        )


def advertised(store: Store) -> Callable[[str, x509.Certificate], tuple[str, ...] | None]:
    """A lookup for ``KeyDirectory.recipients_for``: the capabilities seen with this address and certificate."""

    def lookup(address: str, certificate: x509.Certificate) -> tuple[str, ...] | None:
        rows = store.read(
            "SELECT capabilities FROM capabilities WHERE address = ? AND fingerprint = ?",
            (address_key(address), fingerprint(certificate)),
        )
        return tuple(json.loads(str(rows[0][0]))) if rows else None

    return lookup


def harvest(
    unwrapped: Unwrapped,
    *,
    sender: str | None,
    keys: KeyDirectory,
    store: Store,
    now: datetime,
    trusted_only: bool,
) -> list[str]:
    """File the content signer's certificate and capabilities; return one note per decision.

    ``sender`` is the message's From address; ``trusted_only`` is True when
    trust anchors are configured. Never raises for a certificate that cannot
    be used: it says why in the notes and files nothing.
    """
    notes = []
    for layer in unwrapped.content_signatures:
        signature, chain = layer.signature, layer.chain
        assert signature is not None and chain is not None
        certificate = signature.certificate
        fp = fingerprint(certificate)
        label = f"sha256:{fp[:16]}"
        if signature.weak:
            # A SHA-1 or MD5 signature proves nothing about who sent the certificate.
            notes.append(f"not harvested: the signature uses {signature.weak_description}, not accepted as proof")
            continue
        if sender is None or not names_address(certificate, sender):
            notes.append(f"not harvested: the signer's certificate {label} does not name the sender {sender}")
            continue
        if trusted_only and chain.status != "valid":
            notes.append(f"not harvested: {label} does not chain to a trust anchor ({chain.reason})")
            continue
        if any(e.kind == "identity" for e in keys.select(fp)):
            continue  # Our own certificate, on our own sent mail.
        try:
            result = keys.import_certificates([certificate], source=HARVESTED, address=sender, now=now)
        except errors.InvalidRecipient as exc:
            notes.append(f"not harvested: {exc}")
            continue
        if result.imported:
            notes.append(f"harvested the certificate {label} of {sender} from its signed mail")
            log.info("harvested certificate %s for %s", label, sender)
        if signature.capabilities:
            record_capabilities(store, sender, fp, signature.capabilities, now)
    return notes

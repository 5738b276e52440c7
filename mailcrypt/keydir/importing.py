"""Filing certificates into the key directory: check each, write the good ones, report the rest.

A file may hold several certificates: recipients, and CA certificates that
came along to complete a chain. Recipients are checked (``validate``) at the
moment of import; those that fail are refused with the reason, the others
are written and indexed in one index session. CA certificates are kept in
``chain/`` to build paths to the trust anchors later, but only when the
import is good for something: if every recipient in the file is refused,
nothing at all is kept and ``errors.InvalidRecipient`` says why.

It does not open files (``files`` does) or handle PKCS#12 identities
(``identities`` does).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from mailcrypt import errors
from mailcrypt.keydir.index import CertificateEntry, Index
from mailcrypt.keydir.storage import Layout, write_certificate
from mailcrypt.pki import ChainVerifier, describe, fingerprint, is_chain_certificate, recipient_problem

__all__ = ["ImportResult", "file_certificates"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportResult:
    """What one import did. ``refused`` pairs a certificate's description with the reason."""

    imported: tuple[CertificateEntry, ...] = ()
    unchanged: tuple[CertificateEntry, ...] = ()
    chain: tuple[CertificateEntry, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()


def file_certificates(
    layout: Layout,
    index: Index,
    certificates: Sequence[x509.Certificate],
    *,
    chain: ChainVerifier,
    stored_intermediates: Sequence[x509.Certificate],
    source: str,
    address: str | None,
    now: datetime.datetime,
) -> ImportResult:
    """Check and file ``certificates`` (see the module docstring)."""
    if not certificates:
        raise errors.ConfigError(f"{source}: no certificate to import")
    cas = [c for c in certificates if is_chain_certificate(c)]
    leaves = [c for c in certificates if not is_chain_certificate(c)]
    intermediates = [*cas, *stored_intermediates]
    unchanged: list[CertificateEntry] = []
    refused: list[tuple[str, str]] = []
    # One session: the files written here are recorded directly, not
    # rediscovered and parsed again by the next scan.
    with index.session() as db:
        present = {e.fingerprint: e for e in index.all(db)}
        to_write: dict[str, tuple[x509.Certificate, str]] = {}
        for certificate in leaves:
            fp = fingerprint(certificate)
            problem = recipient_problem(
                certificate, now=now, address=address, chain=chain, intermediates=intermediates
            )
            if problem is not None:
                label = describe(certificate)
                refused.append((label, f"{label} {problem}"))
                log.info("refused: %s %s", label, problem)
            elif fp in present and present[fp].kind != "chain":
                unchanged.append(present[fp])
            else:
                to_write[fp] = (certificate, "recipient")
        if refused and not (to_write or unchanged):
            reasons = [reason for _, reason in refused]
            message = (
                reasons[0]
                if len(reasons) == 1
                else (f"none of the {len(reasons)} certificates in {source} can be used: " + "; ".join(reasons))
            )
            raise errors.InvalidRecipient(message, subject=refused[0][0])
        for certificate in cas:
            fp = fingerprint(certificate)
            if fp not in present:
                to_write.setdefault(fp, (certificate, "chain"))
        written = []
        for fp, (certificate, kind) in to_write.items():
            write_certificate(layout.file_for(kind, fp), certificate, source=source, imported=now)
            written.append(CertificateEntry.from_certificate(certificate, kind=kind, source=source, imported=now))
        if written:
            index.add(db, written)
    return ImportResult(
        imported=tuple(e for e in written if e.kind == "recipient"),
        unchanged=tuple(unchanged),
        chain=tuple(e for e in written if e.kind == "chain"),
        refused=tuple(refused),
    )

"""The key directory: recipient certificates by address, and our own identities.

``KeyDirectory`` imports certificates (PEM, one or a bundle; DER; PKCS#7
certificate bundles) and PKCS#12 identities, lists, looks up, exports and
removes them, and answers the two questions the commands ask:

- ``recipients_for(addresses)``: which certificate, with which profile, to
  encrypt to for each address (gateway certificates first, then the newest
  valid certificate filed under the address), raising
  ``errors.NoRecipientCertificate`` naming the address that has none;
- ``identities(passphrase)``: every identity we hold, newest first, old ones
  after renewal included, to decrypt with.

A certificate is filed under every e-mail address it is for
(``pki.certificate_addresses``); addresses match in the one normal form of
``mailcrypt.addresses`` (local part exactly, domain in IDNA 2008 A-label
form, lower case). Certificates
are checked on import and again at use (``validate``): dates, key, usage,
address and, when trust anchors are configured, the chain and (``[keys]
revocation``) whether a certificate of it is revoked.

It does not read the configuration file (``from_settings`` takes the loaded
settings), prompt for anything itself (a ``PassphraseSource`` does), or
decide plaintext fallbacks (the proxy reads ``PolicyTable.decide``).

Longer than 400 lines: ``KeyDirectory`` is the one facade the commands, the proxy
and the fetcher use; each method is a few lines over the module it delegates to,
and splitting the class would scatter that API.
"""

from __future__ import annotations

import builtins
import datetime
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailcrypt import errors
from mailcrypt.envelope import Identity, announces_key_agreement, supports_profile, uses_key_agreement
from mailcrypt.keydir import identities as own
from mailcrypt.keydir import keyfiles
from mailcrypt.keydir.import_file import read_import_file
from mailcrypt.keydir.importing import ImportResult, file_certificates
from mailcrypt.keydir.index import CertificateEntry, Index
from mailcrypt.keydir.passphrase import PassphraseSource
from mailcrypt.keydir.storage import Layout, fingerprint_prefix, read_certificate
from mailcrypt.pki import (
    ChainVerifier,
    OnlineRevocationChecker,
    RevocationChecker,
    date_problem,
    fingerprint,
    recipient_problem,
    usage_problem,
)
from mailcrypt.policy import MODERN, PolicyTable, Profile

if TYPE_CHECKING:
    from mailcrypt.config import Settings

__all__ = ["KeyDirectory", "RecipientChoice", "ImportResult"]

log = logging.getLogger(__name__)

_LISTED = ("recipient", "identity")


class RecipientChoice(NamedTuple):
    """The certificate to encrypt to for one address, and the profile for it.

    ``key_agreement`` is True for an EC certificate (a KeyAgreeRecipientInfo);
    ``reads_key_agreement`` says whether the address's client is known to
    read an envelope that holds one (``mailcrypt.policy.readable_together``).
    """

    address: str
    certificate: x509.Certificate
    profile: Profile
    key_agreement: bool = False
    reads_key_agreement: bool = False


def _now(now: datetime.datetime | None) -> datetime.datetime:
    if now is None:
        return datetime.datetime.now(datetime.UTC)
    if now.tzinfo is None:
        raise TypeError("now must be timezone-aware")
    return now


class KeyDirectory:
    """One key directory on disk (layout in ``storage``), with its trust anchors and policy table."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        trust_anchors: Sequence[x509.Certificate] = (),
        policy: PolicyTable | None = None,
        revocation: RevocationChecker | None = None,
    ) -> None:
        self.layout = Layout(Path(os.path.abspath(path)))
        self.chain = ChainVerifier(trust_anchors, revocation=revocation if trust_anchors else None)
        self.policy = policy if policy is not None else PolicyTable()
        self._index = Index(self.layout)
        self._gateways: dict[Path, x509.Certificate] = {}
        self.layout.ensure()

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyDirectory:
        """The key directory of a loaded ``mailcrypt.config.Settings``.

        The ``[keys] trust_anchors`` files are read here and nowhere else;
        everyone else asks ``trust_anchors``.
        """
        anchors = [c for p in settings.keys.trust_anchors for c in keyfiles.load_certificates(p)]
        revocation = None
        # Revocation is asked about paths to an anchor: without anchors there are none.
        if anchors and settings.keys.revocation != "off":
            revocation = OnlineRevocationChecker(
                settings.home / "revocation", mode=settings.keys.revocation, timeout=settings.keys.revocation_timeout
            )
        return cls(settings.keys.directory, trust_anchors=anchors, policy=settings.policy, revocation=revocation)

    @property
    def path(self) -> Path:
        return self.layout.root

    @property
    def revocation(self) -> RevocationChecker | None:
        """The revocation checker for chains to the trust anchors; None when off or without anchors."""
        return self.chain.revocation

    @property
    def trust_anchors(self) -> tuple[x509.Certificate, ...]:
        """The configured trust anchors, loaded once by ``from_settings``; empty when none are."""
        return self.chain.anchors

    # ------------------------------------------------------------------ reading

    def list(self, *, kinds: Iterable[str] = _LISTED) -> list[CertificateEntry]:
        """Every entry of these kinds, by address, newest first. Parses no certificate."""
        with self._index.session() as db:
            return self._index.all(db, kinds)

    def lookup(self, address: str, *, kinds: Iterable[str] = _LISTED) -> builtins.list[CertificateEntry]:
        """The entries filed under ``address``, newest first."""
        with self._index.session() as db:
            return self._index.by_address(db, address, kinds)

    def select(self, selector: str) -> builtins.list[CertificateEntry]:
        """Entries for an address, or the one entry for a fingerprint (or unique prefix of 8+ hex digits).

        Raises ``errors.UsageError`` for something that is neither, or a
        prefix that fits several certificates.
        """
        if "@" in selector:
            return self.lookup(selector)
        with self._index.session() as db:
            found = self._index.by_fingerprint(db, fingerprint_prefix(selector))
        if len(found) > 1:
            raise errors.UsageError(
                f"fingerprint {selector} fits {len(found)} certificates "
                f"({', '.join(e.fingerprint[:16] for e in found)}); give more digits"
            )
        return found

    def certificate(self, entry: CertificateEntry) -> x509.Certificate:
        """The certificate of an entry, read from its file."""
        path = self.layout.file_for(entry.kind, entry.fingerprint)
        try:
            return read_certificate(path)[0]
        except FileNotFoundError:
            raise errors.ConfigError(f"{path} was removed while in use; try again") from None
        except (OSError, errors.MalformedCertificate) as exc:
            raise errors.ConfigError(f"{path}: not a readable certificate ({exc})") from None

    def _intermediates(self) -> builtins.list[x509.Certificate]:
        if not self.chain:
            return []
        return [self.certificate(e) for e in self.list(kinds=("chain",))]

    # ------------------------------------------------------------------ choosing certificates

    def best(self, address: str, *, now: datetime.datetime | None = None) -> x509.Certificate:
        """The newest certificate for ``address`` that passes every check at ``now``.

        Raises ``errors.NoRecipientCertificate`` naming the address and,
        when it has certificates, why each was passed over.
        """
        now = _now(now)
        entries = self.lookup(address)
        # A certificate the administrator imported is never replaced by one
        # harvested from signed mail (mailcrypt.keydir.harvesting).
        entries = [e for e in entries if e.source != "harvested"] or entries
        if not entries:
            raise errors.NoRecipientCertificate(
                f"no certificate for {address} in the key directory {self.path}; "
                "import one with: mailcrypt keys import FILE",
                address=address,
            )
        intermediates = self._intermediates()
        reasons = []
        for entry in entries:
            certificate = self.certificate(entry)
            problem = recipient_problem(
                certificate, now=now, address=address, chain=self.chain, intermediates=intermediates
            )
            if problem is None:
                return certificate
            reasons.append(f"sha256:{entry.fingerprint[:16]} {problem}")
        raise errors.NoRecipientCertificate(
            f"no usable certificate for {address}: {'; '.join(reasons)}", address=address
        )

    def _gateway(self, path: Path, address: str, now: datetime.datetime) -> x509.Certificate:
        certificate = self._gateways.get(path)
        if certificate is None:
            certificate = keyfiles.load_certificates(path)[0]
            self._gateways[path] = certificate
        # A gateway certificate names the gateway (if anything), not each address behind it.
        problem = recipient_problem(
            certificate, now=now, require_address=False, chain=self.chain, intermediates=self._intermediates()
        )
        if problem is not None:
            raise errors.NoRecipientCertificate(
                f"the gateway certificate for {address} ({path}) {problem}", address=address
            )
        return certificate

    def recipients_for(
        self,
        addresses: Iterable[str],
        *,
        now: datetime.datetime | None = None,
        advertised: Callable[[str, x509.Certificate], Iterable[str] | None] | None = None,
    ) -> builtins.list[RecipientChoice]:
        """For each address: the certificate to encrypt to and its profile (``PolicyTable.decide``).

        A domain's gateway certificate comes before the address's own; the
        same certificate may be returned for several addresses. Where the
        profile is only the table's default, ``advertised(address,
        certificate)`` (``mailcrypt.keydir.harvesting.advertised``) may raise it to
        ``modern`` when the correspondent announced support for it in signed
        mail. Raises ``errors.NoRecipientCertificate`` for the first address
        without a usable certificate (exit code 3).
        """
        if isinstance(addresses, str):
            raise TypeError("addresses must be a list of addresses, not one string")
        now = _now(now)
        out = []
        for address in addresses:
            decision = self.policy.decide(address)
            if decision.gateway is not None:
                certificate = self._gateway(decision.gateway, address, now)
            else:
                certificate = self.best(address, now=now)
            profile, reason = decision.profile, decision.reason
            announced = tuple(advertised(address, certificate) or ()) if advertised is not None else ()
            agreement = uses_key_agreement(certificate)
            kind = "ec" if agreement else "rsa"
            if announced and not decision.profile_set and profile.name != MODERN.name:
                if supports_profile(announced, MODERN, key_type=kind):
                    profile, reason = MODERN, reason + "; modern: advertised in the correspondent's signed mail"
            reads = agreement or decision.mixed_recipient_infos
            if not reads and announces_key_agreement(announced):
                reads, reason = True, reason + "; reads key agreement: ECDH advertised in its signed mail"
            log.info("%s: certificate sha256:%s, %s", address, fingerprint(certificate)[:16], reason)
            out.append(RecipientChoice(address, certificate, profile, agreement, reads))
        return out

    def sender_certificate(self, address: str, *, now: datetime.datetime | None = None) -> x509.Certificate | None:
        """Our own newest valid certificate for ``address`` (to read our sent copy), or None."""
        now = _now(now)
        for entry in self.lookup(address, kinds=("identity",)):
            certificate = self.certificate(entry)
            if date_problem(certificate, now) is None and usage_problem(certificate) is None:
                return certificate
        return None

    # ------------------------------------------------------------------ identities

    def identity_entries(self) -> builtins.list[CertificateEntry]:
        """Our identities, newest first."""
        entries = self.list(kinds=("identity",))
        return sorted(entries, key=lambda e: (e.not_before, e.not_after), reverse=True)

    def identities(self, passphrase: PassphraseSource) -> builtins.list[Identity]:
        """Every identity, newest first, unlocked for decryption (old ones after renewal too).

        Raises ``errors.NoMatchingIdentity`` when there is none and
        ``errors.ConfigError`` for a key file others can read or a wrong
        passphrase.
        """
        loaded = []
        for entry in self.identity_entries():
            if not self.layout.identity_key(entry.fingerprint).exists():
                log.warning("identity sha256:%s has no private key file; skipped", entry.fingerprint[:16])
                continue
            loaded.append(self.unlock(entry, passphrase))
        if not loaded:
            raise errors.NoMatchingIdentity(
                f"no identity in the key directory {self.path}: create one with mailcrypt init ADDRESS "
                "or mailcrypt keys generate ADDRESS, or import a PKCS#12 file with mailcrypt keys import FILE"
            )
        return loaded

    def unlock(self, entry: CertificateEntry, passphrase: PassphraseSource) -> Identity:
        """One identity unlocked, for a caller that takes each on its own (the proxy: one locked key
        must not stop the others). Raises ``errors.ConfigError`` like ``identities``, and for a
        missing private key file."""
        if not self.layout.identity_key(entry.fingerprint).exists():
            raise errors.ConfigError(f"identity sha256:{entry.fingerprint[:16]} has no private key file")
        return own.load_identity(self.layout, entry.fingerprint, self.certificate(entry), passphrase).identity

    def add_identity(
        self,
        key: own.PrivateKey,
        certificate: x509.Certificate,
        *,
        passphrase: PassphraseSource,
        source: str = "generated",
        now: datetime.datetime | None = None,
    ) -> CertificateEntry:
        """Store a new identity (``keygen.generate_identity`` output, or a PKCS#12 file's)."""
        now = _now(now)
        with self._index.session() as db:
            fp = own.store_identity(self.layout, key, certificate, passphrase=passphrase, source=source, now=now)
            # One certificate is either ours or someone else's: our own wins.
            self.layout.recipient_file(fp).unlink(missing_ok=True)
            self.layout.chain_file(fp).unlink(missing_ok=True)
            entry = CertificateEntry.from_certificate(certificate, kind="identity", source=source, imported=now)
            self._index.add(db, [entry])
        return entry

    # ------------------------------------------------------------------ importing

    def import_file(
        self,
        path: str | os.PathLike[str],
        *,
        passphrase: PassphraseSource | None = None,
        password_file: str | os.PathLike[str] | None = None,
        address: str | None = None,
        now: datetime.datetime | None = None,
    ) -> ImportResult:
        """Import a certificate file (PEM, DER, PKCS#7) or a PKCS#12 identity.

        ``address``, when given, is the address the certificates must name.
        A PKCS#12 file needs ``passphrase`` (how to encrypt the stored key);
        its password comes from ``password_file`` or ``$MAILCRYPT_P12_PASSWORD``.
        Raises ``errors.ConfigError`` for an unreadable file and
        ``errors.InvalidRecipient`` when no certificate in it can be used.
        """
        name = os.fspath(path)
        kind, certificates = read_import_file(Path(name))
        if kind == "pkcs12":
            if passphrase is None:
                raise TypeError("importing a PKCS#12 identity needs a PassphraseSource")
            return self.import_pkcs12(Path(name), passphrase=passphrase, password_file=password_file, now=now)
        return self.import_certificates(certificates, source=os.path.abspath(name), address=address, now=now)

    def import_pkcs12(
        self,
        path: Path,
        *,
        passphrase: PassphraseSource,
        password_file: str | os.PathLike[str] | None = None,
        now: datetime.datetime | None = None,
    ) -> ImportResult:
        """Import the key and certificate of a PKCS#12 file as a new identity."""
        now = _now(now)
        pair = own.read_pkcs12(path, password_file=password_file)
        fp = fingerprint(pair.certificate)
        existing = self.select(fp)
        if existing and existing[0].kind == "identity":
            return ImportResult(unchanged=tuple(existing))
        entry = self.add_identity(
            pair.key, pair.certificate, passphrase=passphrase, source=os.path.abspath(path), now=now
        )
        return ImportResult(imported=(entry,), notes=own.identity_notes(pair.certificate, now))

    def import_certificates(
        self,
        certificates: Sequence[x509.Certificate],
        *,
        source: str,
        address: str | None = None,
        now: datetime.datetime | None = None,
    ) -> ImportResult:
        """Check and file recipient certificates; CA certificates among them go to ``chain/``.

        Certificates that fail a check are refused and reported; if none
        could be imported at all, ``errors.InvalidRecipient`` is raised with
        the reasons.
        """
        now = _now(now)
        return file_certificates(
            self.layout,
            self._index,
            certificates,
            chain=self.chain,
            stored_intermediates=self._intermediates(),
            source=source,
            address=address,
            now=now,
        )

    # ------------------------------------------------------------------ export and removal

    def export(
        self, selector: str, *, all: bool = False, der: bool = False, now: datetime.datetime | None = None
    ) -> bytes:
        """The certificate(s) for an address or fingerprint, as PEM (or DER for one).

        For an address: the newest valid certificate (the one mail would be
        encrypted to; the newest if none is valid), or with ``all`` every one,
        newest first. Raises ``errors.NoRecipientCertificate`` if nothing matches.
        """
        now = _now(now)
        entries = self.select(selector)
        if not entries:
            raise errors.NoRecipientCertificate(f"no certificate for {selector} in the key directory", address=selector)
        if not all:
            valid = [e for e in entries if e.status(now) == "valid"]
            entries = (valid or entries)[:1]
        certificates = [self.certificate(e) for e in entries]
        if der:
            if len(certificates) != 1:
                raise errors.UsageError("DER holds exactly one certificate; export several as PEM")
            return certificates[0].public_bytes(serialization.Encoding.DER)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)

    def remove(self, selector: str) -> builtins.list[CertificateEntry]:
        """Remove the recipient certificates of an address, or one entry by fingerprint.

        Our own identities are removed only by fingerprint: deleting one
        makes the mail encrypted to it unreadable. Raises
        ``errors.NoRecipientCertificate`` if nothing matches.
        """
        entries = self.select(selector)
        if "@" in selector:
            mine = [e for e in entries if e.kind == "identity"]
            entries = [e for e in entries if e.kind == "recipient"]
            if not entries and mine:
                raise errors.UsageError(
                    f"{selector} has only your own identities ({', '.join(e.fingerprint[:16] for e in mine)}); "
                    "they are kept so old mail stays readable; to delete one, give its fingerprint"
                )
        if not entries:
            raise errors.NoRecipientCertificate(f"no certificate for {selector} in the key directory", address=selector)
        for entry in entries:
            if entry.kind == "identity":
                # The secret goes first: a crash in between leaves a public file, never a stray key.
                self.layout.identity_key(entry.fingerprint).unlink(missing_ok=True)
            self.layout.file_for(entry.kind, entry.fingerprint).unlink(missing_ok=True)
            log.info("removed %s sha256:%s (%s)", entry.kind, entry.fingerprint[:16], ", ".join(entry.addresses))
        with self._index.session() as db:
            self._index.remove(db, [e.fingerprint for e in entries])
        return entries

    def rebuild_index(self) -> int:
        """Rebuild the index from the files; return the number of entries."""
        return self._index.rebuild()

"""The index of the key directory: one SQLite file for listing and lookup.

``keys list`` on ten thousand certificates must answer in well under a
second, so nothing on that path parses a certificate: the index holds, per
certificate, its fingerprint, kind (recipient, identity, chain), addresses,
subject, issuer, serial, validity, key type, source and import time, and a
table from address (in its comparison form, ``addresses.address_key``) to
fingerprints.

The files are the truth and the index is a cache. Before every use it is
brought in line with them: the modification times of the three
certificate directories are compared with those seen at the last scan, and
only when they differ (or are too recent to trust) are the directories
listed, new files parsed and vanished ones dropped. A missing, damaged or
older-format index is rebuilt from the files.

It does not judge certificates (``validate`` does) and writes no
certificate files (``storage`` does).
"""

from __future__ import annotations

import datetime
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from mailcrypt import errors
from mailcrypt.addresses import address_key
from mailcrypt.keydir.storage import FINGERPRINT_RE, Layout, read_certificate
from mailcrypt.pki import certificate_addresses, fingerprint, key_type
from mailcrypt.state import open_database, transaction

__all__ = ["CertificateEntry", "Index", "KINDS"]

log = logging.getLogger(__name__)

KINDS = ("recipient", "identity", "chain")
# 2: addresses by the one rule of ``pki.certificate_addresses`` (no subject
# emailAddress beside a subjectAltName) and match keys in IDNA 2008 form; an
# index of version 1 holds addresses that rule no longer gives, so it is rebuilt.
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    fingerprint TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    addresses TEXT NOT NULL,
    subject TEXT NOT NULL,
    issuer TEXT NOT NULL,
    serial TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    key_type TEXT NOT NULL,
    source TEXT NOT NULL,
    imported INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS addresses (
    match_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (match_key, fingerprint)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS addresses_by_fingerprint ON addresses (fingerprint);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "fingerprint, kind, addresses, subject, issuer, serial, not_before, not_after, key_type, source, imported"
# A directory modified this recently may change again within the same
# timestamp tick, so its modification time does not prove the index current.
_SETTLE_NS = 2_000_000_000
# Where the files of each kind live, and their suffix; identities win over
# recipients when one certificate is both.
_DIRS = (("chain", ".pem"), ("recipient", ".pem"), ("identity", ".crt"))


def _utc(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


@dataclass(frozen=True)
class CertificateEntry:
    """What the index knows about one certificate (no parsing needed)."""

    fingerprint: str
    kind: str
    addresses: tuple[str, ...]
    subject: str
    issuer: str
    serial: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    key_type: str
    source: str
    imported: datetime.datetime

    @classmethod
    def from_certificate(
        cls, certificate: x509.Certificate, *, kind: str, source: str, imported: datetime.datetime
    ) -> CertificateEntry:
        return cls(
            fingerprint(certificate),
            kind,
            tuple(certificate_addresses(certificate)),
            certificate.subject.rfc4514_string(),
            certificate.issuer.rfc4514_string(),
            format(certificate.serial_number, "x"),
            certificate.not_valid_before_utc,
            certificate.not_valid_after_utc,
            key_type(certificate),
            source,
            imported.replace(microsecond=0),
        )

    def status(self, now: datetime.datetime | None = None) -> str:
        """``valid``, ``expired`` or ``not yet valid`` at ``now`` (dates only)."""
        now = now or datetime.datetime.now(datetime.UTC)
        if now < self.not_before:
            return "not yet valid"
        if now > self.not_after:
            return "expired"
        return "valid"

    def as_dict(self, now: datetime.datetime | None = None) -> dict[str, object]:
        """A JSON-ready description (for ``keys list --json``)."""
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        return {
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "addresses": list(self.addresses),
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": self.not_before.strftime(stamp),
            "not_after": self.not_after.strftime(stamp),
            "status": self.status(now),
            "key_type": self.key_type,
            "source": self.source,
            "imported": self.imported.strftime(stamp),
        }

    def _row(self) -> tuple[object, ...]:
        return (
            self.fingerprint,
            self.kind,
            "\n".join(self.addresses),
            self.subject,
            self.issuer,
            self.serial,
            int(self.not_before.timestamp()),
            int(self.not_after.timestamp()),
            self.key_type,
            self.source,
            int(self.imported.timestamp()),
        )

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> CertificateEntry:
        fp, kind, addresses, subject, issuer, serial, nb, na, kt, source, imported = row
        return cls(
            fp,
            kind,
            tuple(addresses.split("\n")) if addresses else (),
            subject,
            issuer,
            serial,
            _utc(nb),
            _utc(na),
            kt,
            source,
            _utc(imported),
        )


class Index:
    """The SQLite index of one key directory (see the module docstring)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    # ------------------------------------------------------------------ connection

    def _open(self) -> sqlite3.Connection:
        # A cache rebuilt from the files, opened per session: the default
        # rollback journal is enough, and leaves no -wal/-shm files in keys/.
        return open_database(self.layout.index, what="the key index", wal=False)

    def _prepare(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != _SCHEMA_VERSION:
            db.executescript(
                "DROP TABLE IF EXISTS certificates; DROP TABLE IF EXISTS addresses; DROP TABLE IF EXISTS meta;"
            )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _open_synced(self) -> sqlite3.Connection:
        for attempt in (1, 2):
            db = self._open()
            try:
                self._prepare(db)
                self._sync(db)
                return db
            except sqlite3.DatabaseError as exc:
                db.close()
                if attempt == 2 or isinstance(exc, sqlite3.OperationalError):
                    raise errors.ConfigError(f"key index {self.layout.index}: {exc}") from None
                # Not a database, or a damaged one: it is only a cache of the files.
                log.warning("key index %s is damaged (%s); rebuilding it", self.layout.index, exc)
                self.layout.index.unlink(missing_ok=True)
            except BaseException:
                db.close()
                raise
        raise AssertionError("unreachable")

    @contextmanager
    def session(self) -> Iterator[sqlite3.Connection]:
        """A connection to an index that matches the files, for reading and writing.

        A damaged index file is removed and rebuilt once.
        """
        db = self._open_synced()
        try:
            yield db
        finally:
            db.close()

    def rebuild(self) -> int:
        """Drop the index and build it again from the files; return the number of entries."""
        self.layout.index.unlink(missing_ok=True)
        with self.session() as db:
            return int(db.execute("SELECT count(*) FROM certificates").fetchone()[0])

    # ------------------------------------------------------------------ sync with the files

    def _mtimes(self) -> str:
        parts = []
        for path in (self.layout.certs, self.layout.chain, self.layout.identities):
            try:
                parts.append(str(os.stat(path).st_mtime_ns))
            except FileNotFoundError:
                parts.append("-")
        return " ".join(parts)

    def _settled(self, mtimes: str) -> bool:
        now = time.time_ns()
        return all(p == "-" or now - int(p) > _SETTLE_NS for p in mtimes.split())

    def _sync(self, db: sqlite3.Connection) -> None:
        mtimes = self._mtimes()
        row = db.execute("SELECT value FROM meta WHERE name = 'mtimes'").fetchone()
        if row is not None and row[0] == mtimes and self._settled(mtimes):
            return
        on_disk = self._scan()
        indexed = dict(db.execute("SELECT fingerprint, kind FROM certificates").fetchall())
        stale = [fp for fp, kind in indexed.items() if on_disk.get(fp) != kind]
        fresh = [(fp, kind) for fp, kind in on_disk.items() if indexed.get(fp) != kind]
        entries = [e for e in (self._parse(fp, kind) for fp, kind in fresh) if e is not None]
        with transaction(db):
            self._delete(db, stale)
            self._insert(db, entries)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('mtimes', ?)", (mtimes,))
        if stale or entries:
            log.debug("key index: %d entries added, %d dropped", len(entries), len(stale))

    def _scan(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for kind, suffix in _DIRS:
            directory = self.layout.file_for(kind, "0").parent
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise errors.ConfigError(f"{directory}: {exc.strerror or exc}") from None
            for name in names:
                stem = name[: -len(suffix)]
                if name.endswith(suffix) and FINGERPRINT_RE.fullmatch(stem):
                    found[stem] = kind
        return found

    def _parse(self, fp: str, kind: str) -> CertificateEntry | None:
        path = self.layout.file_for(kind, fp)
        try:
            certificate, source, imported = read_certificate(path)
        except (OSError, errors.MalformedCertificate) as exc:
            log.warning("skipping %s: not a readable certificate (%s)", path, exc)
            return None
        if fingerprint(certificate) != fp:
            log.warning("skipping %s: its name is not the fingerprint of the certificate in it", path)
            return None
        if imported is None:
            imported = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
        return CertificateEntry.from_certificate(certificate, kind=kind, source=source, imported=imported)

    # ------------------------------------------------------------------ changes

    @staticmethod
    def _delete(db: sqlite3.Connection, fingerprints: Iterable[str]) -> None:
        rows = [(fp,) for fp in fingerprints]
        db.executemany("DELETE FROM certificates WHERE fingerprint = ?", rows)
        db.executemany("DELETE FROM addresses WHERE fingerprint = ?", rows)

    @staticmethod
    def _insert(db: sqlite3.Connection, entries: Iterable[CertificateEntry]) -> None:
        entries = list(entries)
        Index._delete(db, (e.fingerprint for e in entries))
        db.executemany(
            f"INSERT INTO certificates ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", [e._row() for e in entries]
        )
        db.executemany(
            "INSERT OR IGNORE INTO addresses VALUES (?, ?)",
            [(address_key(a), e.fingerprint) for e in entries for a in e.addresses],
        )

    def add(self, db: sqlite3.Connection, entries: Iterable[CertificateEntry]) -> None:
        """Record entries whose files have just been written (one transaction)."""
        with transaction(db):
            self._insert(db, entries)

    def remove(self, db: sqlite3.Connection, fingerprints: Iterable[str]) -> None:
        """Forget entries whose files have just been removed (one transaction)."""
        with transaction(db):
            self._delete(db, fingerprints)

    # ------------------------------------------------------------------ queries

    @staticmethod
    def all(db: sqlite3.Connection, kinds: Iterable[str] = KINDS) -> list[CertificateEntry]:
        """Entries of these kinds, by first address then newest first."""
        kinds = tuple(kinds)
        marks = ",".join("?" * len(kinds))
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM certificates WHERE kind IN ({marks}) "
            "ORDER BY addresses, not_before DESC, fingerprint",
            kinds,
        ).fetchall()
        return [CertificateEntry._from_row(r) for r in rows]

    @staticmethod
    def by_address(db: sqlite3.Connection, address: str, kinds: Iterable[str] = KINDS) -> list[CertificateEntry]:
        """Entries naming ``address`` (RFC 5280 comparison), newest first."""
        kinds = tuple(kinds)
        marks = ",".join("?" * len(kinds))
        rows = db.execute(
            f"SELECT {', '.join('c.' + c.strip() for c in _COLUMNS.split(','))} FROM addresses a "
            f"JOIN certificates c ON c.fingerprint = a.fingerprint WHERE a.match_key = ? AND c.kind IN ({marks}) "
            "ORDER BY c.not_before DESC, c.not_after DESC, c.fingerprint",
            (address_key(address), *kinds),
        ).fetchall()
        return [CertificateEntry._from_row(r) for r in rows]

    @staticmethod
    def by_fingerprint(db: sqlite3.Connection, prefix: str) -> list[CertificateEntry]:
        """Entries whose fingerprint starts with ``prefix`` (lower-case hex)."""
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM certificates WHERE fingerprint >= ? AND fingerprint < ? ORDER BY fingerprint",
            (prefix, prefix + "g"),
        ).fetchall()
        return [CertificateEntry._from_row(r) for r in rows]

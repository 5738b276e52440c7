"""Our own identities: private keys with their certificates, kept encrypted at rest.

An identity is two files in ``keys/identities/``, named by the certificate's
SHA-256 fingerprint: ``<fp>.crt`` (the certificate) and ``<fp>.key`` (the
private key as PKCS#8 PEM, mode 0600 from the moment it exists). The key is
encrypted with the best scheme cryptography offers for PKCS#8
(``BestAvailableEncryption``: PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC;
the library fixes the iteration count at 2048 for this format) under the
home's passphrase, unless the administrator chose ``--no-passphrase``.
A key file that group or others can read is refused, never loaded.

Identities are never replaced: a renewal adds a new one and the old ones
stay, so mail encrypted to an old key still opens.

PKCS#12 files are read by ``mailcrypt.keydir.keyfiles.load_pkcs12`` (password from a
file, ``$MAILCRYPT_P12_PASSWORD`` or a prompt). cryptography reads both the
modern files (PBES2, AES-256-CBC, PBKDF2-SHA256, as ``openssl pkcs12
-export`` writes by default) and the legacy ones (pbeWithSHA1And3-KeyTripleDES-
CBC keys and pbeWithSHA1And40BitRC2-CBC certificates, as ``-legacy``, Windows
and older Thunderbird write) with no extra provider and no warning. The key
taken from it is re-encrypted under the home's passphrase; the PKCS#12
password is not kept.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailcrypt import errors
from mailcrypt.config import read_private
from mailcrypt.envelope import Identity, identity_from_key
from mailcrypt.keydir import keyfiles, keygen
from mailcrypt.keydir.passphrase import PassphraseSource
from mailcrypt.keydir.storage import Layout, write_certificate
from mailcrypt.pki import certificate_addresses, check_identity, date_problem, describe, fingerprint

__all__ = ["LoadedIdentity", "store_identity", "load_identity", "read_pkcs12", "identity_notes"]

log = logging.getLogger(__name__)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class LoadedIdentity:
    """An unlocked identity: the envelope ``Identity`` plus what the key directory knows."""

    fingerprint: str
    certificate: x509.Certificate
    identity: Identity
    key_path: Path


def _is_encrypted(key_pem: bytes) -> bool:
    """True when the PEM key is an encrypted PKCS#8 key (or a legacy encrypted PEM)."""
    return b"ENCRYPTED" in key_pem[:4096]


def _read_key(path: Path) -> bytes:
    """The key file, read once through the one private-file reader (which refuses it if others can read it)."""
    try:
        return read_private(path, what="private key", limit=keyfiles.KEY_FILE_LIMIT)
    except errors.MissingSecretFile:
        raise errors.ConfigError(f"private key {path} is missing (its certificate is in the key directory)") from None


def store_identity(
    layout: Layout,
    key: PrivateKey,
    certificate: x509.Certificate,
    *,
    passphrase: PassphraseSource,
    source: str,
    now: datetime.datetime,
) -> str:
    """Write the key (0600, encrypted unless ``passphrase.stores_unencrypted``) and certificate.

    Returns the fingerprint. Raises ``errors.ConfigError`` when the identity
    is already stored or the key does not belong to the certificate,
    ``errors.InvalidRecipient`` when the key cannot decrypt mail.
    """
    if not keyfiles.same_key(key, certificate):
        raise errors.ConfigError(f"the private key does not belong to the {describe(certificate)}")
    check_identity(certificate)
    fp = fingerprint(certificate)
    layout.ensure()
    key_path, cert_path = layout.identity_key(fp), layout.identity_cert(fp)
    if key_path.exists():
        raise errors.ConfigError(f"the identity {describe(certificate)} is already in {layout.identities}")
    secret = passphrase.get_new(
        f"the new private key of {', '.join(certificate_addresses(certificate)) or fp[:16]}"
    )
    # The key first: an identity is listed when its certificate appears, and
    # by then its key must be there.
    keygen.write_private_key(key_path, key, passphrase=secret)
    try:
        write_certificate(cert_path, certificate, source=source, imported=now)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    if secret is None:
        log.warning("identity %s stored WITHOUT a passphrase (key file %s)", fp[:16], key_path)
    return fp


def load_identity(
    layout: Layout, fp: str, certificate: x509.Certificate, passphrase: PassphraseSource
) -> LoadedIdentity:
    """Unlock one stored identity.

    The passphrase is asked for only if the key is encrypted. Raises
    ``errors.ConfigError`` for a key file others can read, a wrong
    passphrase or a key that does not match its certificate.
    """
    key_path = layout.identity_key(fp)
    # One read: the bytes checked for privacy are the bytes parsed.
    data = _read_key(key_path)
    secret = None
    if _is_encrypted(data):
        who = ", ".join(certificate_addresses(certificate)) or fp[:16]
        secret = passphrase.get(f"the private key of {who} ({key_path.name})")
    key = keyfiles.private_key_from(data, name=str(key_path), passphrase=secret)
    if not keyfiles.same_key(key, certificate):
        raise errors.ConfigError(
            f"private key {key_path} does not belong to its certificate {layout.identity_cert(fp)}"
        )
    return LoadedIdentity(fp, certificate, identity_from_key(key, certificate), key_path)


def read_pkcs12(path: Path, *, password_file: str | os.PathLike[str] | None = None) -> keyfiles.KeyPair:
    """The key and certificate of a PKCS#12 file, checked for use as an identity.

    Raises ``errors.ConfigError`` when the file cannot be opened (the
    password never appears in the message) and ``errors.InvalidRecipient``
    when its key cannot decrypt mail.
    """
    pair = keyfiles.load_pkcs12(path, password_file=password_file)
    check_identity(pair.certificate)
    return pair


def identity_notes(certificate: x509.Certificate, now: datetime.datetime) -> tuple[str, ...]:
    """What the administrator should know about an identity that was accepted anyway."""
    notes = []
    problem = date_problem(certificate, now)
    if problem is not None:
        notes.append(f"{describe(certificate)} {problem}: kept to decrypt mail, not used for new mail")
    if not certificate_addresses(certificate):
        notes.append(f"{describe(certificate)} names no e-mail address: it decrypts, but cannot send")
    return tuple(notes)

"""Make new identities: a private key and a self-signed S/MIME certificate.

``generate_identity`` returns key objects and touches no files. The writers
put them on disk: the private key as PKCS#8 PEM (encrypted when a passphrase
is given) in a file that is 0600 from the moment it exists, the certificate as
PEM. Neither writer overwrites an existing file unless told to.

This module does not decide where keys live (the key directory does), does
not read passphrases (the command line does), and issues no certificates for
anyone but the key's own holder: no CA, no chains.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailcrypt import errors
from mailcrypt.addresses import normalize_address

__all__ = [
    "KEY_TYPES",
    "DEFAULT_KEY_TYPE",
    "PrivateKey",
    "normalize_address",
    "generate_identity",
    "write_private_key",
    "write_certificate",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

#: Key types by command-line name: ("rsa", modulus bits) or ("ec", curve).
KEY_TYPES: dict[str, tuple[str, int | ec.EllipticCurve]] = {
    "rsa2048": ("rsa", 2048),
    "rsa3072": ("rsa", 3072),
    "rsa4096": ("rsa", 4096),
    "p256": ("ec", ec.SECP256R1()),
    "p384": ("ec", ec.SECP384R1()),
}
DEFAULT_KEY_TYPE = "rsa3072"

#: Longest validity accepted, about 100 years; a typo like --days 7300000
#: would otherwise overflow the certificate's GeneralizedTime.
MAX_DAYS = 36525

# An rfc822Name is an IA5String (RFC 5280 §4.2.1.6), so the local part must
# be ASCII; this is the dot-atom form of RFC 5322 §3.4.1, which is what mail
# clients put in certificates, less '/', because the address also names the
# key files. Quoted local parts are refused on purpose.


def _new_key(key_type: str) -> PrivateKey:
    kind, param = KEY_TYPES[key_type]
    if kind == "rsa":
        assert isinstance(param, int)
        return rsa.generate_private_key(public_exponent=65537, key_size=param)
    assert isinstance(param, ec.EllipticCurve)
    return ec.generate_private_key(param)


def generate_identity(
    address: str,
    *,
    key_type: str = DEFAULT_KEY_TYPE,
    days: int = 730,
    now: datetime.datetime | None = None,
) -> tuple[PrivateKey, x509.Certificate]:
    """Generate a key pair and a self-signed S/MIME certificate for ``address``.

    The certificate names the address as CN and, which is what S/MIME agents
    match on, as an rfc822Name in the subjectAltName (RFC 8550 §3). Its key
    usage follows RFC 8550 §4.4.2: an RSA key may sign and encipher keys, an
    EC key may sign and agree keys (ECDH, RFC 5753) but never encipher them
    (RFC 8813). It is valid from one
    hour before ``now`` (clock skew between sender and recipient) for
    ``days`` days.

    Raises ``errors.UsageError`` for a bad address, key type or day count.
    """
    address = normalize_address(address)
    if key_type not in KEY_TYPES:
        raise errors.UsageError(f"unknown key type {key_type!r} (choose from {', '.join(KEY_TYPES)})")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise errors.UsageError(f"--days must be a whole number from 1 to {MAX_DAYS}")
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    elif now.tzinfo is None:
        raise TypeError("now must be timezone-aware")

    key = _new_key(key_type)
    kind = KEY_TYPES[key_type][0]
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=kind == "rsa",
        data_encipherment=False,
        key_agreement=kind == "ec",
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    certificate = self_signed_certificate(
        key,
        address,
        now=now,
        days=days,
        extensions=[
            (usage, True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False),
            (x509.SubjectAlternativeName([x509.RFC822Name(address)]), False),
        ],
    )
    return key, certificate


def self_signed_certificate(
    key: PrivateKey,
    common_name: str,
    *,
    now: datetime.datetime,
    days: int,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """A self-signed end-entity certificate for ``key``: CN ``common_name``, valid from an hour ago.

    basicConstraints cA=false (critical) and the key identifiers are always
    set; ``extensions`` adds (extension, critical) pairs. Signed with SHA-256
    and the key's own algorithm: RSA PKCS#1 v1.5 or ECDSA (RFC 8551 §2.2).
    Used for S/MIME identities here and for the proxy's TLS certificate.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    every = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        *extensions,
        (ski, False),
        (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
    ]
    return x509.CertificateBuilder(
        issuer_name=name,
        subject_name=name,
        public_key=key.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=now - datetime.timedelta(hours=1),
        not_valid_after=now + datetime.timedelta(days=days),
        extensions=[x509.Extension(value.oid, critical, value) for value, critical in every],
    ).sign(key, hashes.SHA256())


_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _write_fd(fd: int, data: bytes, mode: int) -> None:
    with os.fdopen(fd, "wb") as f:
        if mode != 0o600:
            os.fchmod(f.fileno(), mode)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_new_file(path: Path, data: bytes, *, force: bool, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that it appears complete or not at all.

    The bytes go to a temporary file in the same directory, created with
    O_EXCL and mode 0600 so no other user can ever open it, and fsynced. Then
    it is linked into place, which fails if ``path`` exists, or, with
    ``force``, renamed over it. ``mode`` is applied before any byte is
    written; only the public certificate asks for more than 0600.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, _OPEN_FLAGS, 0o600)
    try:
        _write_fd(fd, data, mode)
        if force:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise errors.ConfigError(f"{path} already exists (use --force to overwrite it)") from None
        except OSError:
            # No hard links on this file system: fall back to creating the
            # file itself with O_EXCL, which still never overwrites.
            _write_direct(path, data, mode)
    finally:
        tmp.unlink(missing_ok=True)


def _write_direct(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o600)
    except FileExistsError:
        raise errors.ConfigError(f"{path} already exists (use --force to overwrite it)") from None
    try:
        _write_fd(fd, data, mode)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_private_key(
    path: str | os.PathLike[str], key: PrivateKey, *, passphrase: bytes | None, force: bool = False
) -> None:
    """Write ``key`` as PKCS#8 PEM to a new 0600 file at ``path``.

    With a passphrase the key is encrypted (PBES2, the strongest scheme the
    library offers); ``None`` writes it in the clear. Raises
    ``errors.ConfigError`` if the file exists and ``force`` is false,
    ``OSError`` if it cannot be written.
    """
    if passphrase is not None and (not isinstance(passphrase, bytes) or not passphrase):
        raise TypeError("passphrase must be non-empty bytes or None")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    _write_new_file(Path(path), pem, force=force)


def write_certificate(path: str | os.PathLike[str], certificate: x509.Certificate, *, force: bool = False) -> None:
    """Write ``certificate`` as PEM to a new file at ``path``.

    The certificate is public, but it is written the same careful way so a
    crash never leaves half a file. Raises ``errors.ConfigError`` if the file
    exists and ``force`` is false. The file is 0644: a certificate is public.
    """
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    _write_new_file(Path(path), pem, force=force, mode=0o644)

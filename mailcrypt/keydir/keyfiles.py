"""Read certificates, private keys and PKCS#12 bundles from files named by the user.

Every failure becomes one ``errors.ConfigError`` line that names the file and
says what to do; no library traceback and no passphrase ever reaches the
user. Passphrases come from a file, an environment variable or, only when
standard input is a terminal, a prompt: never from the command line.

It also picks, among the certificates the command line was given, those for
an address (by the one rule of ``mailcrypt.pki``). It does not search for
keys (the key directory will), does not check that a certificate is valid
today or fit for e-mail (the envelope core and the key directory do), and
writes nothing.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from mailcrypt import errors
from mailcrypt.config import read_private, read_secret_line
from mailcrypt.envelope import algorithm_name
from mailcrypt.keydir.certfiles import certificates_in
from mailcrypt.pki import load_certificate as parse_certificate
from mailcrypt.pki import names_address

__all__ = [
    "PASSPHRASE_ENV",
    "P12_PASSWORD_ENV",
    "KeyPair",
    "passphrase_from",
    "read_file",
    "load_certificates",
    "KEY_FILE_LIMIT",
    "load_private_key",
    "private_key_from",
    "load_key_pair",
    "load_pkcs12",
    "certificates_for",
]

#: Passphrase of an encrypted private key file.
PASSPHRASE_ENV = "MAILCRYPT_PASSPHRASE"
#: Password of a PKCS#12 file.
P12_PASSWORD_ENV = "MAILCRYPT_P12_PASSWORD"
#: The largest private key file read; the largest RSA key in PEM is a few kilobytes.
KEY_FILE_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class KeyPair:
    """A private key with its certificate, and where they came from (for messages)."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    source: str


def read_file(path: str | os.PathLike[str], label: str, *, too_large: tuple[int, str] | None = None) -> bytes:
    """The bytes of the file at ``path``, the one way the key directory reads a file the user names.

    Every failure is a ``ConfigError`` starting with ``label`` (the file as
    the user should see it named). With ``too_large = (limit, what)``, a
    file over ``limit`` bytes is refused as too large for ``what`` before it is read.
    """
    try:
        if too_large is not None and (size := Path(path).stat().st_size) > too_large[0]:
            raise errors.ConfigError(f"{label}: too large for {too_large[1]} ({size} bytes)")
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise errors.ConfigError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise errors.ConfigError(f"{label}: is a directory") from None
    except OSError as exc:
        raise errors.ConfigError(f"{label}: {exc.strerror or exc}") from None


def passphrase_from(
    password_file: str | os.PathLike[str] | None, env_var: str, *, prompt: str | None = None
) -> bytes | None:
    """Find a passphrase: the file if given, else ``env_var``, else a prompt.

    The prompt (no echo) is shown only when ``prompt`` is given and standard
    input is a terminal, so scripts never hang. Returns None if there is no
    source at all.
    """
    if password_file is not None:
        # Like a key file, a password file must be private to its owner.
        return read_secret_line(password_file, what="password file")
    value = os.environ.get(env_var)
    if value:
        return value.encode("utf-8")
    if prompt is not None and sys.stdin is not None and sys.stdin.isatty():
        import getpass

        entered = getpass.getpass(prompt)
        return entered.encode("utf-8") if entered else None
    return None


def load_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """All certificates in a certificate file: PEM (one or more), DER, or a PKCS#7 bundle (``certfiles``).

    Raises ``errors.ConfigError`` if the file cannot be read, holds no
    certificate or one that the certificate parser refuses.
    """
    label = f"certificate file {os.fspath(path)}"
    return certificates_in(label, read_file(path, label))


def load_private_key(
    path: str | os.PathLike[str],
    *,
    passphrase: bytes | None = None,
    password_file: str | os.PathLike[str] | None = None,
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """An RSA or EC private key from a PEM or DER file, encrypted or not.

    The file must be readable by its owner only. The passphrase is looked
    for only if the key is encrypted: ``passphrase`` if given, else
    ``password_file``, else ``MAILCRYPT_PASSPHRASE``, else a prompt when
    standard input is a terminal. Raises ``errors.ConfigError`` for every
    failure.
    """
    data = read_private(path, what="key file", limit=KEY_FILE_LIMIT)
    return private_key_from(data, name=os.fspath(path), passphrase=passphrase, password_file=password_file)


def _required_secret(
    password_file: str | os.PathLike[str] | None, env_var: str, *, prompt: str, missing: str
) -> bytes:
    """The secret ``passphrase_from`` finds; with none, a ``ConfigError`` that says ``missing`` and where to give it."""
    secret = passphrase_from(password_file, env_var, prompt=prompt)
    if secret is None:
        raise errors.ConfigError(f"{missing} with --password-file FILE or the {env_var} environment variable") from None
    return secret


def private_key_from(
    data: bytes,
    *,
    name: str,
    passphrase: bytes | None = None,
    password_file: str | os.PathLike[str] | None = None,
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """The private key in ``data``, read from the file ``name`` by ``read_private``.

    The passphrase is found as ``load_private_key`` finds it. Raises
    ``errors.ConfigError`` for every failure, naming the file.
    """
    is_pem = b"-----BEGIN" in data
    parse = serialization.load_pem_private_key if is_pem else serialization.load_der_private_key

    def load(data: bytes, password: bytes | None) -> PrivateKeyTypes:
        # OpenSSL's RSA_check_key tests p and q for primality: about 60 ms a
        # load, most of what ``decrypt`` of a small message costs. This is
        # the user's own key file (openssl cms and gpgsm do not check it
        # either); ``_check_rsa`` below catches a damaged or altered one at
        # the cost of a few multiplications, and the callers then match the
        # key against its certificate.
        return parse(data, password, unsafe_skip_rsa_key_validation=True)

    try:
        key = load(data, None)
    except TypeError:
        # Encrypted: cryptography says so with a TypeError when no password is given.
        if passphrase is None:
            passphrase = _required_secret(
                password_file,
                PASSPHRASE_ENV,
                prompt=f"Passphrase for {name}: ",
                missing=f"key file {name} is encrypted: give its passphrase",
            )
        try:
            key = load(data, passphrase)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise errors.ConfigError(f"key file {name}: wrong passphrase, or the key is damaged") from None
    except ValueError:
        raise errors.ConfigError(f"key file {name}: no readable private key (expected PEM or DER)") from None
    except UnsupportedAlgorithm:
        raise errors.ConfigError(f"key file {name}: unsupported key type or encryption scheme") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise errors.ConfigError(f"key file {name}: only RSA and EC keys can be used for S/MIME")
    if isinstance(key, rsa.RSAPrivateKey) and not _consistent_rsa(key.private_numbers()):
        raise errors.ConfigError(f"key file {name}: the RSA key is damaged (its numbers do not agree)")
    return key


def _consistent_rsa(numbers: rsa.RSAPrivateNumbers) -> bool:
    """Whether an RSA key's numbers agree (RFC 8017 §3.2), short of testing p and q for primality.

    n = p·q with p and q odd and greater than 1, e·d ≡ 1 (mod λ(n)), and the
    CRT values d mod (p−1), d mod (q−1) and q⁻¹ mod p as stored. A key that
    passes computes correct results; one that does not would make OpenSSL
    misbehave, which is why cryptography checks by default.
    """
    p, q, d = numbers.p, numbers.q, numbers.d
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    if p <= 2 or q <= 2 or p % 2 == 0 or q % 2 == 0 or p * q != n or not 1 < e < n:
        return False
    return (
        e * d % math.lcm(p - 1, q - 1) == 1
        and numbers.dmp1 == d % (p - 1)
        and numbers.dmq1 == d % (q - 1)
        and numbers.iqmp * q % p == 1
    )


def same_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> bool:
    """Whether ``certificate`` is for ``key``; False for a certificate key that cannot be read.

    The certificate's key object is built only for RSA and EC (judged by its
    OID, ``envelope.algorithm_name``): building a DSA key warns, and an
    unknown or malformed key raises, none of which may escape from here.
    """
    if algorithm_name(certificate) not in ("rsa", "ec"):
        return False
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    try:
        theirs = certificate.public_key().public_bytes(enc, fmt)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return key.public_key().public_bytes(enc, fmt) == theirs


def load_key_pair(
    key_path: str | os.PathLike[str],
    cert_path: str | os.PathLike[str],
    *,
    password_file: str | os.PathLike[str] | None = None,
) -> KeyPair:
    """A private key and the certificate for it, from two files.

    The passphrase, if the key needs one, is found as ``load_private_key``
    does. If the certificate file holds several certificates, the one whose
    public key matches is taken. Raises ``errors.ConfigError`` if none does.
    """
    key = load_private_key(key_path, password_file=password_file)
    for certificate in load_certificates(cert_path):
        if same_key(key, certificate):
            return KeyPair(key, certificate, os.fspath(key_path))
    raise errors.ConfigError(
        f"certificate file {os.fspath(cert_path)} has no certificate for the key in {os.fspath(key_path)}"
    )


def load_pkcs12(
    path: str | os.PathLike[str], *, password_file: str | os.PathLike[str] | None = None
) -> KeyPair:
    """The private key and its certificate from a PKCS#12 (.p12/.pfx) file.

    The password comes from ``password_file``, else ``MAILCRYPT_P12_PASSWORD``;
    without either an unprotected bundle is tried, then the user is prompted
    if standard input is a terminal. Raises ``errors.ConfigError`` for every
    failure, naming the file and never the password.
    """
    name = os.fspath(path)
    data = _pkcs12_der(read_file(path, f"PKCS#12 file {os.fspath(path)}"))
    password = passphrase_from(password_file, P12_PASSWORD_ENV)
    if password is not None:
        bundle = _open_pkcs12(data, password)
    else:
        # Bundles exported "without a password" use either no or an empty one.
        bundle = _open_pkcs12(data, None) or _open_pkcs12(data, b"")
        if bundle is None:
            password = _required_secret(
                None,
                P12_PASSWORD_ENV,
                prompt=f"Password for {name}: ",
                missing=f"PKCS#12 file {name} needs a password: give it",
            )
            bundle = _open_pkcs12(data, password)
    if bundle is None:
        raise errors.ConfigError(f"PKCS#12 file {name}: wrong password, or not a PKCS#12 file")
    key = bundle.key
    if key is None:
        raise errors.ConfigError(f"PKCS#12 file {name} holds no private key")
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise errors.ConfigError(f"PKCS#12 file {name}: only RSA and EC keys can be used for S/MIME")
    candidates = ([bundle.cert] if bundle.cert is not None else []) + list(bundle.additional_certs)
    for entry in candidates:
        if same_key(key, entry.certificate):
            # The certificate goes through the one parser like every other one.
            try:
                certificate = parse_certificate(entry.certificate.public_bytes(serialization.Encoding.DER))
            except errors.MalformedCertificate as exc:
                raise errors.ConfigError(f"PKCS#12 file {name}: its certificate is refused ({exc.reason})") from None
            return KeyPair(key, certificate, name)
    raise errors.ConfigError(f"PKCS#12 file {name} has no certificate for its private key")


def _pkcs12_der(data: bytes) -> bytes:
    """The PFX re-encoded as DER, for the BER that NSS (every Thunderbird export) writes.

    cryptography reads BER only through a fallback that warns today and may
    become an error (RFC 7292 §4 asks for BER tolerance; the library does not
    promise it). Only the outer layers change: the authSafe octets the MAC
    covers (RFC 7292 §5.1) keep their value, so the MAC still verifies. Data
    that does not parse is passed on unchanged, and fails where it is opened.
    """
    try:
        return asn1_pkcs12.Pfx.load(data).dump(force=True)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):  # asn1crypto's parse failures
        return data


def _open_pkcs12(data: bytes, password: bytes | None) -> pkcs12.PKCS12KeyAndCertificates | None:
    try:
        return pkcs12.load_pkcs12(data, password)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # A wrong password, damaged data and an encryption scheme the library
        # does not implement all mean the same to the user: cannot open it.
        return None


def certificates_for(address: str, certificates: list[x509.Certificate]) -> list[x509.Certificate]:
    """The certificates among ``certificates`` that are for ``address`` (``pki.names_address``), in their order."""
    return [c for c in certificates if names_address(c, address)]

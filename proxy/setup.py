"""What ``mailcrypt init`` sets up for the proxy: its TLS certificate and a first user.

``make_certificate`` writes a self-signed certificate for the proxy's
listener, valid for ``localhost``, ``127.0.0.1`` and ``::1`` (all in the
subjectAltName, so a client that connects by name or by address accepts
it once trusted), with the key beside it, mode 0600. ``setup_home`` makes
the certificate when the home has none and, when the user file is empty,
one user named after the identity's address with a random password,
returned once so that the caller can show it; that user is assigned the
identity's address, the one address it may send as.

What it won't do: overwrite an existing certificate, key or user.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mailcrypt.config import Settings
from mailcrypt.keydir import self_signed_certificate
from proxy.auth import UserStore, new_password

__all__ = ["make_certificate", "setup_home"]


def make_certificate(cert_path: Path, key_path: Path, *, days: int = 825) -> x509.Certificate:
    """A self-signed P-256 certificate for localhost, 127.0.0.1 and ::1; key written 0600."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    # 825 days (the default): the longest lifetime clients such as Apple's accept for a TLS server certificate.
    certificate = self_signed_certificate(
        key,
        "localhost (mailcrypt proxy)",
        now=now,
        days=days,
        extensions=[(san, False), (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)],
    )
    for path in (cert_path, key_path):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate


def setup_home(settings: Settings) -> tuple[Path | None, tuple[str, str] | None]:
    """Make what is missing: (the new certificate file or None, (user, password) or None)."""
    proxy = settings.proxy
    made_cert = None
    if not proxy.tls_cert.exists() and not proxy.tls_key.exists():
        make_certificate(proxy.tls_cert, proxy.tls_key)
        made_cert = proxy.tls_cert
    user = None
    users = UserStore(proxy.users_file or settings.home / "proxy" / "users")
    if settings.upstream is None or settings.upstream.login != "client":
        if not users.names():
            name = settings.identity.address or "mailcrypt"
            password = new_password()
            # The login sends as the identity's address, and only as it (DESIGN.md §6).
            addresses = [settings.identity.address] if settings.identity.address else []
            users.add(name, password.encode(), addresses=addresses)
            user = (name, password)
    return made_cert, user

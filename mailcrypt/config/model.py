"""The typed settings of ``config.toml``: one frozen dataclass per section (DESIGN.md §5).

These are plain values: every path is absolute, every address normalised,
every choice checked by ``mailcrypt.config.parse`` before one is built.
Only ``SecretRef.read`` touches anything outside, to read a password when
asked; nothing here logs or prints a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mailcrypt import errors
from mailcrypt.config.location import Below
from mailcrypt.config.secrets import read_secret_line
from mailcrypt.policy import PolicyTable

__all__ = [
    "SecretRef",
    "IdentitySettings",
    "KeySettings",
    "ProxySettings",
    "UpstreamSettings",
    "ReplaySettings",
    "Target",
    "AccountSettings",
    "Settings",
]


@dataclass(frozen=True)
class SecretRef:
    """Where a password comes from: an environment variable or a 0600 file.

    ``setting`` names the configuration key, for error messages. The
    password itself is read only by ``read``.
    """

    setting: str
    env: str | None = None
    file: Path | None = None

    def read(self, *, environ: Mapping[str, str] | None = None) -> bytes:
        """The password. Raises ``errors.ConfigError`` naming the setting, never the password."""
        env = os.environ if environ is None else environ
        if self.env is not None:
            value = env.get(self.env)
            if not value:
                raise errors.ConfigError(f"{self.setting}: environment variable {self.env} is not set")
            return value.encode("utf-8")
        assert self.file is not None
        return read_secret_line(self.file, what=f"{self.setting}: password file")


@dataclass(frozen=True)
class IdentitySettings:
    """``[identity]``: the default sender address (normalised), if set."""

    address: str | None = None


@dataclass(frozen=True)
class KeySettings:
    """``[keys]``: where the key directory is and how certificates are trusted."""

    directory: Path
    trust_anchors: tuple[Path, ...] = ()
    harvest: bool = True
    #: A 0600 file holding the passphrase of the private keys (added to DESIGN §5).
    passphrase_file: Path | None = None
    #: Revocation checking of certificates that chain to the anchors (DESIGN §3a, §5):
    #: "soft-fail" (an unreachable source is reported, not blocking), "hard-fail" or "off".
    revocation: str = "soft-fail"
    #: Seconds one OCSP responder or CRL server may take, connection and answer together.
    revocation_timeout: float = 3.0


@dataclass(frozen=True)
class ProxySettings:
    """``[proxy]``: the local SMTP proxy."""

    listen_host: str
    listen_port: int
    auth: str
    max_message_size: int
    tls_cert: Path
    tls_key: Path
    #: "starttls": plain connection, STARTTLS offered; "implicit": TLS from the first byte.
    tls: str = "starttls"
    #: The proxy's AUTH users (``mailcrypt users``): names and scrypt hashes, mode 0600.
    users_file: Path | None = None
    #: Failed logins from one client address within 15 minutes before AUTH is refused there.
    max_auth_failures: int = 5
    #: Seconds a stop (SIGTERM) waits for transactions in flight before it answers 421 to them.
    shutdown_grace: int = 30
    #: Recipients one message may have; the next RCPT gets 452 4.5.3 (RFC 5321 §4.5.3.1.10).
    max_recipients: int = 100
    #: Bytes the client messages being received and encrypted may take at once (at least max_message_size);
    #: a message that does not fit waits, then gets 452 4.3.1 (``proxy.budget``).
    message_memory: int = 268435456

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


@dataclass(frozen=True)
class UpstreamSettings:
    """``[upstream]``: the real submission server. Absent: deliver into ``outbox/``."""

    host: str
    port: int
    security: str
    username: str | None = None
    password: SecretRef | None = None
    #: Check the server's certificate (chain and host name); off only for a test server.
    tls_verify: bool = True
    #: PEM file of the certificate authorities to trust instead of the system's.
    ca_file: Path | None = None
    #: Seconds to wait for the server at any step before treating it as down.
    timeout: int = 60
    #: Ask the server about each recipient while the client names it (RCPT time).
    check_recipients: bool = True
    #: How long a message in the retry spool is retried before the sender gets a bounce.
    retry_hours: int = 120
    #: "configured": log in with username/password above (or not at all);
    #: "client": log in with the login the mail client gave the proxy.
    login: str = "configured"
    #: Seconds to wait for the server's reply to the end of a message (RFC 5321 §4.5.3.2.6: 10 minutes).
    data_timeout: int = 600


@dataclass(frozen=True)
class ReplaySettings:
    """``[replay]``: the freshness window of DESIGN.md §2."""

    max_age_days: int = 30
    future_skew_seconds: int = 300


@dataclass(frozen=True)
class Target:
    """Where fetched mail goes: a Maildir (``maildir:PATH``) or an IMAP folder (``imap:FOLDER``)."""

    kind: str
    path: Path | None = None
    folder: str | None = None


@dataclass(frozen=True)
class AccountSettings:
    """One ``[[accounts]]`` table: an IMAP account to fetch from."""

    name: str
    host: str
    port: int
    security: str
    username: str
    #: None: neither password_env nor password_file is set, and ``mailcrypt fetch``
    #: asks for the password on a terminal (DESIGN.md §5: environment, file or prompt).
    password: SecretRef | None
    folders: tuple[str, ...]
    target: Target
    #: PEM file of the authority (or the self-signed certificate) the server's TLS
    #: certificate must chain to; None: the system's authorities.
    ca_file: Path | None = None
    #: The folder quarantined mail goes to (a Maildir++ subfolder, or a subfolder of imap:FOLDER).
    quarantine: str = "Quarantine"
    #: The user's explicit consent to ``target = "imap:FOLDER"``, which stores decrypted mail on the server.
    plaintext_on_server: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything in ``config.toml``, checked, with paths made absolute."""

    home: Path
    config_file: Path
    identity: IdentitySettings
    keys: KeySettings
    policy: PolicyTable
    proxy: ProxySettings
    upstream: UpstreamSettings | None
    replay: ReplaySettings
    accounts: tuple[AccountSettings, ...]

    #: The one SQLite state store (``mailcrypt.state``).
    state_db = Below("state.db", root="home")
    #: The Maildir standing in for an upstream server when ``[upstream]`` is absent.
    outbox = Below("outbox", root="home")
    #: The durable retry spool of the proxy: encrypted messages that wait for the upstream server.
    spool = Below("spool", root="home")
    #: The default fetch target Maildir.
    mail = Below("mail", root="home")

    def account(self, name: str) -> AccountSettings:
        """The account called ``name``; ``errors.ConfigError`` if there is none."""
        for account in self.accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in self.accounts) or "none"
        raise errors.ConfigError(f"{self.config_file}: no [[accounts]] entry named {name!r} (configured: {known})")

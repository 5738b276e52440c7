"""The one exception hierarchy of mailcrypt.

Every error a user can provoke is a ``MailcryptError``. Each class carries the
exit code the command line turns it into (DESIGN.md §6) and structured fields
(what was tried, which address) next to its one-line message. Messages never
contain plaintext, key material or passphrases.

This module holds no logic beyond that; translating errors into SMTP replies
or exit codes happens at the edges (cli, proxy, fetch).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

__all__ = [
    "MailcryptError",
    "UsageError",
    "ConfigError",
    "MissingSecretFile",
    "NoKeyError",
    "NoMatchingIdentity",
    "NoRecipientCertificate",
    "NotForThisIdentity",
    "MessageError",
    "CMSParseError",
    "MalformedCertificate",
    "NotEncryptedError",
    "NotSignedError",
    "DecryptionFailed",
    "UnsupportedAlgorithm",
    "PolicyViolation",
    "InvalidRecipient",
    "RevocationUnavailable",
    "SignatureError",
    "BadSignature",
    "UnknownSigner",
    "UntrustedSigner",
    "WeakSignature",
    "ReplayError",
    "ReplayedMessage",
    "StaleMessage",
    "FetchError",
    "FetchConnectionError",
    "UIDValidityChanged",
    "FolderUnavailable",
    "FetchIncomplete",
]


class MailcryptError(Exception):
    """Base class of every error mailcrypt raises on purpose."""

    exit_code = 1


class UsageError(MailcryptError):
    """The command line or an argument is wrong."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration or a key file named in it is unusable."""


class MissingSecretFile(ConfigError):
    """A file that should hold a secret (key, passphrase, password, user list) does not exist.

    ``path`` is the file. Callers for whom no file means "none yet" (the
    proxy's user file) catch this one and let every other ``ConfigError`` through.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


class NoKeyError(MailcryptError):
    """No key is available for this message (exit code 3)."""

    exit_code = 3


class NoMatchingIdentity(NoKeyError):
    """None of the identities given can open the envelope.

    ``tried`` names the identities tried (by certificate subject and key type);
    ``recipients`` describes the RecipientInfos found in the message.
    """

    def __init__(self, message: str, *, tried: Sequence[str] = (), recipients: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.tried = tuple(tried)
        self.recipients = tuple(recipients)


class NoRecipientCertificate(NoKeyError):
    """An address has no usable certificate to encrypt to."""

    def __init__(self, message: str, *, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class NotForThisIdentity(MailcryptError):
    """A RecipientInfo is not addressed to this identity.

    Raised by an Identity while it looks at one RecipientInfo; the envelope
    core catches it and moves on. It is distinct from ``DecryptionFailed``,
    which means "addressed to me, but broken".
    """


class MessageError(MailcryptError):
    """The message is malformed, tampered with or not what it claims (exit 4)."""

    exit_code = 4


class CMSParseError(MessageError):
    """The CMS structure cannot be parsed (truncated, bad lengths, wrong types)."""


class MalformedCertificate(CMSParseError):
    """A certificate cannot be parsed, or is one mailcrypt refuses to parse.

    Raised by the one certificate parser (``mailcrypt.pki.load_certificate``)
    for bytes that are not an X.509 certificate, an unknown version, fields
    that do not decode, and a non-positive serial number (RFC 5280 §4.1.2.2).
    For a certificate in a message it means exit 4; callers reading a file
    turn it into ``ConfigError``. ``reason`` says what is wrong.
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class NotEncryptedError(MessageError):
    """The input is not an S/MIME encrypted message."""


class NotSignedError(MessageError):
    """The input is not an S/MIME signed message (``mailcrypt verify``)."""


class DecryptionFailed(MessageError):
    """The envelope is addressed to us but does not decrypt.

    Bad authentication tag, bad padding, a key unwrap that fails its integrity
    check. No plaintext is released when this is raised.
    """


class UnsupportedAlgorithm(MessageError):
    """The message uses an algorithm mailcrypt does not implement."""

    def __init__(self, message: str, *, oid: str = "") -> None:
        super().__init__(message)
        self.oid = oid


class PolicyViolation(UnsupportedAlgorithm):
    """The algorithm or key is known, but the Policy in force does not allow it."""


class InvalidRecipient(MailcryptError):
    """A recipient certificate cannot be encrypted to (key type, size, usage)."""

    exit_code = 3

    def __init__(self, message: str, *, subject: str = "") -> None:
        super().__init__(message)
        self.subject = subject


class RevocationUnavailable(MailcryptError):
    """A CRL or OCSP answer could not be had or cannot be trusted.

    Raised inside ``mailcrypt.pki``'s revocation checker for one source
    (``source``: the URL) and turned there into an ``unavailable`` status;
    it does not reach the command line.
    """

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(message)
        self.source = source


class SignatureError(MailcryptError):
    """A signature does not verify (exit 5)."""

    exit_code = 5


class BadSignature(SignatureError):
    """A signature is present but does not hold (exit 5).

    The content or a signed attribute does not match what was signed, the
    signature does not verify with the signer's key, or the structure lies
    about itself (contentType attribute versus encapsulated content type).
    """


class UnknownSigner(SignatureError):
    """The signer's certificate is neither in the message nor among those given (exit 5)."""

    def __init__(self, message: str, *, signer: str = "") -> None:
        super().__init__(message)
        self.signer = signer


class UntrustedSigner(SignatureError):
    """The signature holds, but the signer's certificate does not chain to a trust anchor (exit 5).

    ``status`` is the chain status (``invalid``, ``unsupported``, ``not-checked``)
    and ``reason`` says why, for the one-line message and the log.
    """

    def __init__(self, message: str, *, status: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class WeakSignature(SignatureError):
    """The signature holds but uses a hash that is not accepted as proof, SHA-1 or MD5 (exit 5).

    Only ``verify`` raises it: reading such mail delivers its content and
    says the signature is no proof (DESIGN.md §2). ``hashes`` names them.
    """

    def __init__(self, message: str, *, hashes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.hashes = tuple(hashes)


class ReplayError(SignatureError):
    """The message was seen before, or is outside the freshness window (exit 5)."""


class ReplayedMessage(ReplayError):
    """This message (same signature or envelope digest) was accepted before.

    ``first_seen`` is when it was first accepted (aware UTC datetime);
    ``digest`` is the hex replay key, which names no content.
    """

    def __init__(self, message: str, *, first_seen: datetime, digest: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.first_seen = first_seen
        self.digest = digest
        self.kind = kind


class StaleMessage(ReplayError):
    """The signing time lies outside the freshness window, or is missing.

    ``signing_time`` is None when the signature carries no signingTime;
    ``window`` is (earliest, latest) accepted signing times at the check.
    """

    def __init__(
        self, message: str, *, signing_time: datetime | None, window: tuple[datetime, datetime]
    ) -> None:
        super().__init__(message)
        self.signing_time = signing_time
        self.window = window


class FetchError(MailcryptError):
    """``mailcrypt fetch`` could not do its work (exit 1 unless a subclass says otherwise)."""


class FetchConnectionError(FetchError):
    """The IMAP server cannot be reached, or the connection or protocol failed (exit 1).

    Transient by nature: ``fetch --watch`` reconnects with backoff.
    """


class UIDValidityChanged(FetchError):
    """A folder's UIDVALIDITY differs from the one in the state store (exit 2).

    The server renumbered the folder, so the UIDs recorded no longer name the
    same messages; the fetcher stops that folder rather than fetch everything
    again silently (STYLE.md §5), and goes on with the others. The message
    says how to go on.
    """

    exit_code = 2

    def __init__(self, message: str, *, account: str, folder: str, stored: int, found: int) -> None:
        super().__init__(message)
        self.account = account
        self.folder = folder
        self.stored = stored
        self.found = found


class FolderUnavailable(FetchError):
    """The server refused to open a folder: it does not exist, or the user may not read it (exit 2).

    The answer to SELECT was NO (or BAD), not a broken connection (RFC 3501
    §6.3.1): the fetcher reports the folder and goes on with the others.
    """

    exit_code = 2

    def __init__(self, message: str, *, folder: str) -> None:
        super().__init__(message)
        self.folder = folder


class FetchIncomplete(FetchError):
    """A fetch run finished, but not every message could be delivered as readable mail.

    Quarantined or failed messages and folders that were not fetched decide
    ``exit_code`` (DESIGN.md §6: 3 no key, 4 malformed, 5 bad signature or
    replay, 2 a folder not fetched, 1 failed); ``counts`` maps each quarantine
    reason to how many messages had it.
    """

    def __init__(self, message: str, *, exit_code: int, counts: dict[str, int]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.counts = dict(counts)

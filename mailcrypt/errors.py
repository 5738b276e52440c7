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

__all__ = [
    "MailcryptError",
    "UsageError",
    "ConfigError",
    "NoKeyError",
    "NoMatchingIdentity",
    "NoRecipientCertificate",
    "NotForThisIdentity",
    "MessageError",
    "CMSParseError",
    "NotEncryptedError",
    "DecryptionFailed",
    "UnsupportedAlgorithm",
    "PolicyViolation",
    "InvalidRecipient",
    "SignatureError",
    "ReplayError",
]


class MailcryptError(Exception):
    """Base class of every error mailcrypt raises on purpose."""

    exit_code = 1


class UsageError(MailcryptError):
    """The command line or an argument is wrong."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration or a key file named in it is unusable."""


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


class NotEncryptedError(MessageError):
    """The input is not an S/MIME encrypted message."""


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


class SignatureError(MailcryptError):
    """A signature does not verify (exit 5)."""

    exit_code = 5


class ReplayError(SignatureError):
    """The message was seen before, or is outside the freshness window (exit 5)."""

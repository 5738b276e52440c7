"""Where the passphrase that protects the private keys in the home comes from.

In this order (DESIGN.md §5): the environment variable
``MAILCRYPT_PASSPHRASE``; the file named by ``[keys] passphrase_file`` in the
configuration, which must be private to its owner (``config.read_private``); a prompt
without echo, and only when standard input is a terminal, so that scripts
and services never hang. The value is read once, kept in memory for the
life of the ``PassphraseSource`` and never shown: not in ``repr``, not in
log records (which name only the source) and not in error text.

This module does not say which keys are encrypted (the key directory does)
and never takes a passphrase from the command line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

from mailcrypt import errors
from mailcrypt.config import read_secret_line

if TYPE_CHECKING:
    from mailcrypt.config import Settings

__all__ = ["PASSPHRASE_ENV", "PassphraseSource"]

#: The environment variable holding the passphrase of the keys in the home.
PASSPHRASE_ENV = "MAILCRYPT_PASSPHRASE"

log = logging.getLogger(__name__)

Prompt = Callable[[str], str]


class _Options(TypedDict, total=False):
    """What ``PassphraseSource.from_settings`` passes on to the constructor."""

    environ: Mapping[str, str] | None
    interactive: bool | None
    prompt: Prompt


def _getpass(prompt: str) -> str:
    import getpass

    return getpass.getpass(prompt)


class PassphraseSource:
    """Finds the passphrase once, when a key first needs it.

    ``file`` is the passphrase file from the configuration and ``setting``
    the name of the setting it came from, for error messages.
    ``interactive`` forces the prompt on (a test's fake terminal) or off;
    by default a prompt is shown only when standard input is a terminal.
    ``PassphraseSource.unencrypted()`` stands for the deliberate choice of
    storing new keys without a passphrase (``--no-passphrase``).
    """

    def __init__(
        self,
        *,
        file: Path | None = None,
        setting: str = "keys.passphrase_file",
        environ: Mapping[str, str] | None = None,
        interactive: bool | None = None,
        prompt: Prompt = _getpass,
    ) -> None:
        if file is not None and not isinstance(file, Path):
            raise TypeError("file must be a pathlib.Path")
        self._file = file
        self._setting = setting
        self._environ = os.environ if environ is None else environ
        self._interactive = interactive
        self._prompt = prompt
        self._value: bytes | None = None
        self._unencrypted = False

    @classmethod
    def unencrypted(cls) -> PassphraseSource:
        """A source that stores new keys unencrypted and can unlock no encrypted key."""
        source = cls(environ={}, interactive=False)
        source._unencrypted = True
        return source

    @classmethod
    def from_settings(cls, settings: Settings, **options: Unpack[_Options]) -> PassphraseSource:
        """The source for a loaded ``mailcrypt.config.Settings``."""
        setting = f"{settings.config_file}: keys.passphrase_file"
        return cls(file=settings.keys.passphrase_file, setting=setting, **options)

    @property
    def stores_unencrypted(self) -> bool:
        """True for ``unencrypted()``: new keys are written without encryption."""
        return self._unencrypted

    def __repr__(self) -> str:
        return f"<PassphraseSource {self.describe()}{' (read)' if self._value is not None else ''}>"

    def describe(self) -> str:
        """Where a passphrase would come from, without the passphrase."""
        if self._unencrypted:
            return "none (keys stored unencrypted)"
        places = [f"${PASSPHRASE_ENV}"]
        if self._file is not None:
            places.append(f"file {self._file}")
        places.append("a prompt on a terminal")
        return " or ".join(places)

    def _is_interactive(self) -> bool:
        if self._interactive is not None:
            return self._interactive
        return sys.stdin is not None and sys.stdin.isatty()

    def _from_file(self, path: Path) -> bytes:
        # The file must be as private as a key file: a passphrase others can
        # read protects nothing.
        return read_secret_line(path, what=f"{self._setting}: passphrase file")

    def _find(self) -> tuple[bytes | None, str]:
        value = self._environ.get(PASSPHRASE_ENV)
        if value:
            return value.encode("utf-8"), f"${PASSPHRASE_ENV}"
        if self._file is not None:
            return self._from_file(self._file), f"file {self._file}"
        return None, ""

    def get(self, purpose: str) -> bytes:
        """The passphrase to unlock a key; ``purpose`` says which (for the prompt).

        Raises ``errors.ConfigError`` when there is no source, naming the
        ways to give one.
        """
        if self._value is not None:
            return self._value
        if self._unencrypted:
            raise errors.ConfigError(f"{purpose} is encrypted, but no passphrase is available (--no-passphrase)")
        value, where = self._find()
        if value is None and self._is_interactive():
            entered = self._prompt(f"Passphrase for {purpose}: ")
            value, where = (entered.encode("utf-8") if entered else None), "prompt"
        if value is None:
            raise errors.ConfigError(f"{purpose} is encrypted and needs a passphrase: {self._how()}")
        log.debug("passphrase for %s taken from %s", purpose, where)
        self._value = value
        return value

    def get_new(self, purpose: str) -> bytes | None:
        """The passphrase to encrypt a new key with; None only for ``unencrypted()``.

        At a prompt the passphrase is asked twice. Raises
        ``errors.ConfigError`` when there is no source and
        ``errors.UsageError`` when the two entries differ.
        """
        if self._unencrypted:
            return None
        if self._value is not None:
            return self._value
        value, where = self._find()
        if value is None and self._is_interactive():
            first = self._prompt(f"New passphrase for {purpose}: ")
            if first and self._prompt("Same passphrase again: ") != first:
                raise errors.UsageError("the two passphrases differ")
            value, where = (first.encode("utf-8") if first else None), "prompt"
        if value is None:
            raise errors.ConfigError(
                f"{purpose} needs a passphrase to be stored encrypted: {self._how()}, "
                "or choose --no-passphrase to store it unencrypted"
            )
        log.debug("passphrase for %s taken from %s", purpose, where)
        self._value = value
        return value

    def _how(self) -> str:
        ways = f"set {PASSPHRASE_ENV}"
        if self._file is None:
            ways += ", name a 0600 file in [keys] passphrase_file"
        return ways + ", or run on a terminal to be asked"

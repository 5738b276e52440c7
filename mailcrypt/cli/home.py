"""The home a command works in: its settings, key directory and passphrase source.

Commands that name key files explicitly never get here; the others load the
home lazily, so ``mailcrypt encrypt --cert FILE`` works with no home at all.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailcrypt import config

if TYPE_CHECKING:
    from mailcrypt.config import Settings
    from mailcrypt.keydir import KeyDirectory, PassphraseSource

__all__ = ["Home", "open_home", "home_if_any"]


@dataclass(frozen=True)
class Home:
    settings: Settings
    keys: KeyDirectory
    passphrase: PassphraseSource


def open_home(args: argparse.Namespace) -> Home:
    """Load the home named by --home / $MAILCRYPT_HOME / the default.

    Raises ``errors.ConfigError`` (exit 2) when there is none, saying how to
    create one.
    """
    # The key directory is imported only here: commands given key files and no
    # home (the large-message path) do not pay for it at start-up.
    from mailcrypt.keydir import KeyDirectory, PassphraseSource

    settings = config.load_settings(config.resolve_home(getattr(args, "home", None)))
    return Home(settings, KeyDirectory.from_settings(settings), PassphraseSource.from_settings(settings))


def home_if_any(args: argparse.Namespace) -> Home | None:
    """The home, or None when there is none (commands given key files work without one)."""
    home = config.resolve_home(getattr(args, "home", None))
    if not (home / config.CONFIG_NAME).exists():
        return None
    # A home that exists but is broken is an error, not "no home".
    return open_home(args)

"""The home a command works in: its settings, key directory and passphrase source.

Commands that name key files explicitly never get here; the others load the
home lazily, so ``mailcrypt encrypt --cert FILE`` works with no home at all.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from mailcrypt import config
from mailcrypt.config_model import Settings
from mailcrypt.keydir import KeyDirectory
from mailcrypt.passphrase import PassphraseSource

__all__ = ["Home", "open_home"]


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
    settings = config.load_settings(config.resolve_home(getattr(args, "home", None)))
    return Home(settings, KeyDirectory.from_settings(settings), PassphraseSource.from_settings(settings))

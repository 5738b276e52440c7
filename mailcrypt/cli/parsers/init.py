"""``mailcrypt init ADDRESS``: its description and arguments; the handler is ``mailcrypt.cli.keys.init``."""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers.common import add_new_key_arguments

__all__ = ["DESCRIPTION", "arguments"]

#: The description of ``mailcrypt init`` in its help.
DESCRIPTION = (
    "Create the mailcrypt home (--home, $MAILCRYPT_HOME or the user config directory) with "
    "config.toml, a key directory and a new identity for ADDRESS. The private key is encrypted with "
    "the passphrase from $MAILCRYPT_PASSPHRASE or a prompt."
)


def arguments(init: argparse.ArgumentParser) -> None:
    """Add the arguments of ``init``."""
    add_new_key_arguments(init, "your e-mail address")
    init.add_argument(
        "--no-passphrase", action="store_true", help="store the private key UNENCRYPTED (unattended setups only)"
    )

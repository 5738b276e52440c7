"""``mailcrypt init ADDRESS``: its arguments; the handler is ``mailcrypt.cli.keys.init``."""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers.common import add_command, add_new_key_arguments

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``init`` to the ``mailcrypt`` command."""
    init = add_command(
        commands,
        "init",
        "keys:init",
        "create a home with a configuration and an identity",
        "Create the mailcrypt home (--home, $MAILCRYPT_HOME or the user config directory) with "
        "config.toml, a key directory and a new identity for ADDRESS. The private key is encrypted with "
        "the passphrase from $MAILCRYPT_PASSPHRASE or a prompt.",
    )
    add_new_key_arguments(init, "your e-mail address")
    init.add_argument(
        "--no-passphrase", action="store_true", help="store the private key UNENCRYPTED (unattended setups only)"
    )

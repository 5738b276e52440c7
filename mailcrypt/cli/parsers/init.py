"""``mailcrypt init ADDRESS``: its arguments; the handler is ``mailcrypt.cli.keys.init``."""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers.common import KEY_TYPES, add_command

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
    init.add_argument("address", metavar="ADDRESS", help="your e-mail address")
    init.add_argument("--key-type", choices=KEY_TYPES, default="rsa3072", help="key type (default: rsa3072)")
    init.add_argument("--days", type=int, default=730, metavar="N", help="validity in days (default: 730)")
    init.add_argument(
        "--no-passphrase", action="store_true", help="store the private key UNENCRYPTED (unattended setups only)"
    )

"""The ``mailcrypt`` subcommands, added in one place, ``add_commands``, and their arguments (DESIGN.md §6).

``add_commands`` names each subcommand, its handler as ``"module:function"``
inside ``mailcrypt.cli``, its line of help in ``mailcrypt --help``, and the
function that adds its arguments and its longer description, which live one
module per subcommand or group (``keys``, ``users``, ``quarantine``). What
they share (adding a command or a group, the common options, the exit
status, the help layout) is in ``common``. ``mailcrypt.cli`` only builds
the parser.

What these modules won't do: import a handler, or anything beyond argparse,
so that ``mailcrypt --help`` starts fast; the handler module is imported
only when its command runs.
"""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers import decrypt, encrypt, fetch, init, keys, proxy, quarantine, users, verify
from mailcrypt.cli.parsers.common import add_command, add_group

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add every subcommand to ``commands``, in the order of the command list in ``mailcrypt --help``.

    This is here, not in ``mailcrypt.cli``, because there the names ``keys``,
    ``proxy`` and ``fetch`` are rebound to the handler modules of the same
    names as soon as one of them is imported.
    """
    add_command(
        commands,
        "init",
        "keys:init",
        "create a home with a configuration and an identity",
        init.arguments,
        init.DESCRIPTION,
    )
    add_command(
        commands,
        "encrypt",
        "crypt:encrypt",
        "encrypt an RFC 5322 message into an S/MIME message",
        encrypt.arguments,
        encrypt.DESCRIPTION,
    )
    add_command(
        commands,
        "decrypt",
        "read:decrypt",
        "decrypt an S/MIME message, verify its signatures",
        decrypt.arguments,
        decrypt.DESCRIPTION,
    )
    add_command(
        commands,
        "verify",
        "read:verify",
        "verify the signatures of an S/MIME message",
        verify.arguments,
        verify.DESCRIPTION,
    )
    keys_commands = add_group(commands, "keys", "manage keys and certificates")
    add_command(
        keys_commands,
        "generate",
        "keys:generate",
        "new identity: private key + self-signed S/MIME certificate",
        keys.generate,
        keys.GENERATE,
    )
    add_command(
        keys_commands, "import", "keys:import_", "add certificates or a PKCS#12 identity", keys.import_, keys.IMPORT
    )
    add_command(keys_commands, "list", "keys:list_", "list certificates and identities", keys.list_)
    add_command(keys_commands, "show", "keys:show", "show the certificates of an address or fingerprint", keys.selector)
    add_command(
        keys_commands, "export", "keys:export", "write the certificate of an address or fingerprint", keys.export
    )
    add_command(
        keys_commands,
        "remove",
        "keys:remove",
        "remove recipient certificates, or one entry by fingerprint",
        keys.selector,
    )
    add_command(
        commands,
        "proxy",
        "proxy:run",
        "run the SMTP proxy (foreground; SIGTERM stops it cleanly)",
        proxy.arguments,
        proxy.DESCRIPTION,
    )
    users_commands = add_group(commands, "users", "manage the proxy's AUTH users")
    add_command(users_commands, "add", "proxy:users_add", "add a proxy user", users.add, users.ADD)
    add_command(users_commands, "remove", "proxy:users_remove", "remove a proxy user", users.remove)
    add_command(users_commands, "list", "proxy:users_list", "list the proxy users")
    add_command(
        commands,
        "fetch",
        "fetch:run",
        "fetch mail over IMAP, decrypt and verify it, deliver it into a Maildir",
        fetch.arguments,
        fetch.DESCRIPTION,
    )
    quarantine_commands = add_group(commands, "quarantine", "work on the Quarantine folder of fetched mail")
    add_command(
        quarantine_commands,
        "reprocess",
        "quarantine:reprocess",
        "deliver quarantined mail that the current keys and settings can read",
        quarantine.reprocess,
        quarantine.REPROCESS,
    )

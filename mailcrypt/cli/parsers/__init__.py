"""The ``mailcrypt`` subcommands as one table, ``COMMANDS``, and their arguments (DESIGN.md §6).

Each entry of the table names a subcommand, its line of help in
``mailcrypt --help``, its handler as ``"module:function"`` inside
``mailcrypt.cli``, the function that adds its arguments and its longer
description; a group (``keys``, ``users``, ``quarantine``) holds a table of
its own. The argument functions live one module per subcommand or group;
what they share (the table's entry and its builder, the common options, the
exit status, the help layout) is in ``common``. ``mailcrypt.cli`` only
builds the parser from the table.

What these modules won't do: import a handler, or anything beyond argparse,
so that ``mailcrypt --help`` starts fast; the handler module is imported
only when its command runs.
"""

from __future__ import annotations

from mailcrypt.cli.parsers import decrypt, encrypt, fetch, init, keys, proxy, quarantine, users, verify
from mailcrypt.cli.parsers.common import Command

__all__ = ["COMMANDS"]

# Every subcommand, in the order of the command list in ``mailcrypt --help``.
# The table is here, not in ``mailcrypt.cli``, because there the names
# ``keys``, ``proxy`` and ``fetch`` are rebound to the handler modules of the
# same names as soon as one of them is imported.
COMMANDS: tuple[Command, ...] = (
    Command(
        "init", "create a home with a configuration and an identity", "keys:init", init.arguments, init.DESCRIPTION
    ),
    Command(
        "encrypt",
        "encrypt an RFC 5322 message into an S/MIME message",
        "crypt:encrypt",
        encrypt.arguments,
        encrypt.DESCRIPTION,
    ),
    Command(
        "decrypt",
        "decrypt an S/MIME message, verify its signatures",
        "read:decrypt",
        decrypt.arguments,
        decrypt.DESCRIPTION,
    ),
    Command(
        "verify", "verify the signatures of an S/MIME message", "read:verify", verify.arguments, verify.DESCRIPTION
    ),
    Command(
        "keys",
        "manage keys and certificates",
        subcommands=(
            Command(
                "generate",
                "new identity: private key + self-signed S/MIME certificate",
                "keys:generate",
                keys.generate,
                keys.GENERATE,
            ),
            Command("import", "add certificates or a PKCS#12 identity", "keys:import_", keys.import_, keys.IMPORT),
            Command("list", "list certificates and identities", "keys:list_", keys.list_),
            Command("show", "show the certificates of an address or fingerprint", "keys:show", keys.selector),
            Command("export", "write the certificate of an address or fingerprint", "keys:export", keys.export),
            Command(
                "remove", "remove recipient certificates, or one entry by fingerprint", "keys:remove", keys.selector
            ),
        ),
    ),
    Command(
        "proxy",
        "run the SMTP proxy (foreground; SIGTERM stops it cleanly)",
        "proxy:run",
        proxy.arguments,
        proxy.DESCRIPTION,
    ),
    Command(
        "users",
        "manage the proxy's AUTH users",
        subcommands=(
            Command("add", "add a proxy user", "proxy:users_add", users.add, users.ADD),
            Command("remove", "remove a proxy user", "proxy:users_remove", users.remove),
            Command("list", "list the proxy users", "proxy:users_list"),
        ),
    ),
    Command(
        "fetch",
        "fetch mail over IMAP, decrypt and verify it, deliver it into a Maildir",
        "fetch:run",
        fetch.arguments,
        fetch.DESCRIPTION,
    ),
    Command(
        "quarantine",
        "work on the Quarantine folder of fetched mail",
        subcommands=(
            Command(
                "reprocess",
                "deliver quarantined mail that the current keys and settings can read",
                "quarantine:reprocess",
                quarantine.reprocess,
                quarantine.REPROCESS,
            ),
        ),
    ),
)

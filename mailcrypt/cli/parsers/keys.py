"""``mailcrypt keys ...`` (generate, import, list, show, export, remove): their arguments.

The handlers are the functions of ``mailcrypt.cli.keys``.
"""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers.common import add_command, add_group, add_new_key_arguments

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys`` and its subcommands to the ``mailcrypt`` command."""
    keys_commands = add_group(commands, "keys", "manage keys and certificates")
    gen = add_command(
        keys_commands,
        "generate",
        "keys:generate",
        "new identity: private key + self-signed S/MIME certificate",
        "Generate a private key and a self-signed S/MIME certificate for ADDRESS and add "
        "them to the home's key directory, the key encrypted with the passphrase from "
        "$MAILCRYPT_PASSPHRASE, the configured passphrase file or a prompt. With -o DIR, write them "
        "instead as the files ADDRESS.key (PKCS#8 PEM, mode 0600) and ADDRESS.crt (PEM) in DIR; existing "
        "files are not overwritten without --force.",
    )
    add_new_key_arguments(gen, "the e-mail address the certificate is for")
    gen.add_argument("-o", "--out-dir", metavar="DIR", help="write two files into DIR instead of the key directory")
    secret = gen.add_mutually_exclusive_group()
    secret.add_argument(
        "--passphrase-file",
        "--password-file",
        metavar="F",
        dest="passphrase_file",
        help="with -o: file whose first line is the passphrase for the new key (mode 0600)",
    )
    secret.add_argument("--no-passphrase", action="store_true", help="store the private key unencrypted")
    gen.add_argument("--force", action="store_true", help="with -o: overwrite existing files")

    imp = add_command(
        keys_commands,
        "import",
        "keys:import_",
        "add certificates or a PKCS#12 identity",
        "Import recipient certificates (PEM, several in one file, DER, or a PKCS#7 bundle), each filed "
        "under every e-mail address it names after validation; or a PKCS#12 file as your own identity "
        "(password from --password-file, $MAILCRYPT_P12_PASSWORD or a prompt).",
    )
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--password-file", metavar="F", help="file whose first line is the PKCS#12 password (mode 0600)")

    lst = add_command(keys_commands, "list", "keys:list_", "list certificates and identities")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    shw = add_command(keys_commands, "show", "keys:show", "show the certificates of an address or fingerprint")
    shw.add_argument("selector", metavar="ADDRESS|FINGERPRINT")
    exp = add_command(keys_commands, "export", "keys:export", "write the certificate of an address or fingerprint")
    exp.add_argument("selector", metavar="ADDRESS|FINGERPRINT")
    exp.add_argument("-o", "--output", metavar="FILE", help="output file (default: stdout)")
    exp.add_argument("--all", action="store_true", help="every certificate of the address, not just the one in use")
    exp.add_argument("--der", action="store_true", help="DER instead of PEM (one certificate)")
    rem = add_command(
        keys_commands, "remove", "keys:remove", "remove recipient certificates, or one entry by fingerprint"
    )
    rem.add_argument("selector", metavar="ADDRESS|FINGERPRINT")

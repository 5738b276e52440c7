"""``mailcrypt keys ...`` (generate, import, list, show, export, remove): their descriptions and arguments.

The handlers are the functions of ``mailcrypt.cli.keys``.
"""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers.common import add_new_key_arguments

__all__ = ["GENERATE", "IMPORT", "export", "generate", "import_", "list_", "selector"]

#: The description of ``mailcrypt keys generate`` in its help.
GENERATE = (
    "Generate a private key and a self-signed S/MIME certificate for ADDRESS and add "
    "them to the home's key directory, the key encrypted with the passphrase from "
    "$MAILCRYPT_PASSPHRASE, the configured passphrase file or a prompt. With -o DIR, write them "
    "instead as the files ADDRESS.key (PKCS#8 PEM, mode 0600) and ADDRESS.crt (PEM) in DIR; existing "
    "files are not overwritten without --force."
)


def generate(gen: argparse.ArgumentParser) -> None:
    """Add the arguments of ``keys generate``."""
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


#: The description of ``mailcrypt keys import`` in its help.
IMPORT = (
    "Import recipient certificates (PEM, several in one file, DER, or a PKCS#7 bundle), each filed "
    "under every e-mail address it names after validation; or a PKCS#12 file as your own identity "
    "(password from --password-file, $MAILCRYPT_P12_PASSWORD or a prompt)."
)


def import_(imp: argparse.ArgumentParser) -> None:
    """Add the arguments of ``keys import``."""
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--password-file", metavar="F", help="file whose first line is the PKCS#12 password (mode 0600)")


def list_(lst: argparse.ArgumentParser) -> None:
    """The arguments of ``keys list``."""
    lst.add_argument("--json", action="store_true", help="machine-readable output")


def selector(parser: argparse.ArgumentParser) -> None:
    """The one argument of ``keys show`` and ``keys remove``: the address or fingerprint to act on."""
    parser.add_argument("selector", metavar="ADDRESS|FINGERPRINT")


def export(exp: argparse.ArgumentParser) -> None:
    """The arguments of ``keys export``."""
    selector(exp)
    exp.add_argument("-o", "--output", metavar="FILE", help="output file (default: stdout)")
    exp.add_argument("--all", action="store_true", help="every certificate of the address, not just the one in use")
    exp.add_argument("--der", action="store_true", help="DER instead of PEM (one certificate)")

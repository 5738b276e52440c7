"""``mailcrypt decrypt``: its description and arguments; the handler is ``mailcrypt.cli.read.decrypt``."""

from __future__ import annotations

import argparse

# Not typing.TYPE_CHECKING: importing typing would cost every start (see mailcrypt.cli).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DESCRIPTION", "arguments"]

#: The description of ``mailcrypt decrypt`` in its help.
DESCRIPTION = (
    "Decrypt an S/MIME message with the identities named, tried in the order given; without any, "
    "with every identity in the home's key directory (old ones after renewal too). Signatures inside "
    "are verified; with a home, each message is accepted once and only inside the freshness window "
    "(replay protection), and signers' certificates are harvested into the key directory."
)


def _tagged(option: str) -> Callable[[str], tuple[str, str]]:
    """Each value of ``option`` as ``(option, value)``.

    ``--p12``, ``--key`` and ``--cert`` append to one list, ``sources``, so
    that ``decrypt`` tries identities in the order the user named them.
    """

    def tag(value: str) -> tuple[str, str]:
        return option, value

    return tag


def arguments(dec: argparse.ArgumentParser) -> None:
    """Add the arguments of ``decrypt``."""
    identities = (
        (
            "--p12",
            "FILE",
            "identity from a PKCS#12 file (repeatable); password from --password-file, "
            "$MAILCRYPT_P12_PASSWORD or a prompt",
        ),
        (
            "--key",
            "KEY",
            "private key file, PEM or DER, mode 0600 (repeatable, each with a --cert); passphrase from "
            "--password-file, $MAILCRYPT_PASSPHRASE or a prompt",
        ),
        ("--cert", "CERT", "certificate file for a --key (the n-th --cert belongs to the n-th --key)"),
    )
    for option, metavar, text in identities:
        dec.add_argument(option, metavar=metavar, dest="sources", action="append", type=_tagged(option), help=text)
    dec.add_argument(
        "--password-file",
        metavar="F",
        help="file whose first line is the password of the --p12 files and encrypted --key files (mode 0600)",
    )
    dec.add_argument(
        "--no-replay-check",
        action="store_true",
        help="read an old or already seen message on "
        "purpose: skip the replay and freshness check (signatures are still verified)",
    )
    dec.add_argument("input", nargs="?", metavar="IN", help="S/MIME message file (default: stdin)")
    dec.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout); written only on success")
    dec.set_defaults(sources=[])

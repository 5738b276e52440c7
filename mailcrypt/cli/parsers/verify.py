"""``mailcrypt verify``: its arguments; the handler is ``mailcrypt.cli.read.verify``."""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers.common import add_command

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``verify`` to the ``mailcrypt`` command."""
    ver = add_command(
        commands,
        "verify",
        "read:verify",
        "verify the signatures of an S/MIME message",
        "Verify the S/MIME signatures of a message (detached or opaque, nested too) and say who signed, "
        "when, with what, and whether the certificate chains to a configured trust anchor: with "
        "[keys] trust_anchors set, a chain that does not is exit 5; without, the chain is 'not checked'. "
        "Does not decrypt and does not check for replays.",
    )
    ver.add_argument("input", nargs="?", metavar="IN", help="message file (default: stdin)")

"""``mailcrypt verify``: its description and arguments; the handler is ``mailcrypt.cli.read.verify``."""

from __future__ import annotations

import argparse

__all__ = ["DESCRIPTION", "arguments"]

#: The description of ``mailcrypt verify`` in its help.
DESCRIPTION = (
    "Verify the S/MIME signatures of a message (detached or opaque, nested too) and say who signed, "
    "when, with what, and whether the certificate chains to a configured trust anchor: with "
    "[keys] trust_anchors set, a chain that does not is exit 5; without, the chain is 'not checked'. "
    "Does not decrypt and does not check for replays."
)


def arguments(ver: argparse.ArgumentParser) -> None:
    """Add the arguments of ``verify``."""
    ver.add_argument("input", nargs="?", metavar="IN", help="message file (default: stdin)")

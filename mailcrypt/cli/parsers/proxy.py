"""``mailcrypt proxy``: its description and arguments; the handler is ``mailcrypt.cli.proxy.run``."""

from __future__ import annotations

import argparse

__all__ = ["DESCRIPTION", "arguments"]

#: The description of ``mailcrypt proxy`` in its help.
DESCRIPTION = (
    "Run the SMTP proxy: mail clients send through it, and every message leaves encrypted for each "
    "recipient and the sender, to the [upstream] server or, without one, into the outbox Maildir."
)


def arguments(prx: argparse.ArgumentParser) -> None:
    """Add the arguments of ``proxy``."""
    prx.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default: proxy.listen)")

"""``mailcrypt proxy``: its arguments; the handler is ``mailcrypt.cli.proxy.run``."""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers.common import add_command

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``proxy`` to the ``mailcrypt`` command."""
    prx = add_command(
        commands,
        "proxy",
        "proxy:run",
        "run the SMTP proxy (foreground; SIGTERM stops it cleanly)",
        "Run the SMTP proxy: mail clients send through it, and every message leaves encrypted for each "
        "recipient and the sender, to the [upstream] server or, without one, into the outbox Maildir.",
    )
    prx.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default: proxy.listen)")

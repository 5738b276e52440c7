"""``mailcrypt quarantine reprocess``: its arguments; the handler is ``mailcrypt.cli.quarantine.reprocess``."""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers.common import add_command, add_group

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``quarantine`` and its subcommand to the ``mailcrypt`` command."""
    quarantine_commands = add_group(commands, "quarantine", "work on the Quarantine folder of fetched mail")
    reprocess = add_command(
        quarantine_commands,
        "reprocess",
        "quarantine:reprocess",
        "deliver quarantined mail that the current keys and settings can read",
        "Take every message in the Quarantine folder of the accounts' Maildir targets (as fetch put it "
        "there), decrypt, verify and check it again with the home's identities and configuration as they "
        "are now (after importing a missing key, after changing a setting), and deliver each readable one "
        "into the folder it came from, exactly once: it leaves the Quarantine. The rest stays, with its "
        "X-Mailcrypt-Status field brought up to date. The server is not contacted. Freshness is judged "
        "against the arrival recorded when the message was quarantined; a copy made before arrivals were "
        "recorded is judged against the time of this run. Exit status: 0 nothing left in the Quarantine; "
        "3, 4 or 5 some mail still there (the most serious reason, as for fetch); 2 configuration error.",
    )
    reprocess.add_argument(
        "--account", metavar="NAME", help="only this [[accounts]] entry's quarantined mail (default: all)"
    )

"""``mailcrypt quarantine reprocess``: its description and arguments.

The handler is ``mailcrypt.cli.quarantine.reprocess``.
"""

from __future__ import annotations

import argparse

__all__ = ["REPROCESS", "reprocess"]

#: The description of ``mailcrypt quarantine reprocess`` in its help.
REPROCESS = (
    "Take every message in the Quarantine folder of the accounts' Maildir targets (as fetch put it "
    "there), decrypt, verify and check it again with the home's identities and configuration as they "
    "are now (after importing a missing key, after changing a setting), and deliver each readable one "
    "into the folder it came from, exactly once: it leaves the Quarantine. The rest stays, with its "
    "X-Mailcrypt-Status field brought up to date. The server is not contacted. Freshness is judged "
    "against the arrival recorded when the message was quarantined; a copy made before arrivals were "
    "recorded is judged against the time of this run. Exit status: 0 nothing left in the Quarantine; "
    "3, 4 or 5 some mail still there (the most serious reason, as for fetch); 2 configuration error."
)


def reprocess(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``quarantine reprocess``."""
    parser.add_argument(
        "--account", metavar="NAME", help="only this [[accounts]] entry's quarantined mail (default: all)"
    )

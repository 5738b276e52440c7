"""``mailcrypt fetch``: its description and arguments; the handler is ``mailcrypt.cli.fetch.run``."""

from __future__ import annotations

import argparse

__all__ = ["DESCRIPTION", "arguments"]

#: The description of ``mailcrypt fetch`` in its help.
DESCRIPTION = (
    "Read the folders of the configured [[accounts]] over IMAP, only what is new since the last run, "
    "decrypt and verify S/MIME mail with the home's identities, check it for replays, and deliver it "
    "as readable mail into a Maildir (default: mail/ in the home) that any mail client or mutt -f can "
    "open. Mail that cannot be delivered readable (no key, broken, bad signature, replay) goes to the "
    "Quarantine folder unchanged. The server's messages and flags are left as they are unless "
    "--mark-seen is given. Exit status: 0 all delivered; 3, 4 or 5 some quarantined (the most "
    "serious reason: 5 signature/replay, 4 malformed, 3 no key); 1 failures; 2 configuration, login "
    "or UIDVALIDITY change."
)


def arguments(fetch: argparse.ArgumentParser) -> None:
    """Add the arguments of ``fetch``."""
    fetch.add_argument("--account", metavar="NAME", help="fetch only this [[accounts]] entry (default: all)")
    fetch.add_argument(
        "--folder",
        metavar="NAME",
        action="append",
        default=[],
        help="server folder to fetch (repeatable; default: the account's folders)",
    )
    fetch.add_argument(
        "--to",
        metavar="maildir:PATH|imap:FOLDER",
        help="deliver there instead of the account's target (imap:FOLDER stores the decrypted mail on the server)",
    )
    fetch.add_argument("--watch", action="store_true", help="keep running: wait for new mail with IMAP IDLE")
    fetch.add_argument(
        "--since",
        metavar="DATE",
        help="on a folder's first sync, only mail since DATE (YYYY-MM-DD); an earlier DATE on a later run "
        "also fetches the older mail left out before",
    )
    fetch.add_argument("--mark-seen", action="store_true", help="set \\Seen on the server for mail fetched")
    fetch.add_argument(
        "--accept-uidvalidity",
        action="store_true",
        help="after the server renumbered a folder (UIDVALIDITY changed), fetch it again from the start",
    )

"""``mailcrypt quarantine reprocess``: deliver quarantined mail the current keys and settings can read.

For each account chosen (``--account``, default all) whose target is a
Maildir, ``mailcrypt.fetch.Requeue`` goes through its Quarantine folder
holding the account's fetch lock, with the same identities, trust anchors
and replay settings as ``mailcrypt fetch``. One line per account on stdout
says what happened.

Exit status (DESIGN.md §6), as for fetch: 0 when none of the account's
mail is left in the Quarantine; else the code of the most serious reason
among what is left (5 bad signature, replay or stale; 4 malformed,
integrity or unsupported; 3 no key; 1 processing failed); 2 for a
configuration error or an account named that has an ``imap:`` target.
Files left alone (not written by the fetcher, or of a folder whose
Maildir++ name cannot be made yet) are named in a warning each.

What it won't do: contact the server, or re-process an ``imap:`` target.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from mailcrypt import errors
from mailcrypt.cli.fetch import exit_status, processor_for
from mailcrypt.cli.home import open_home
from mailcrypt.cli.report import warn
from mailcrypt.config import AccountSettings
from mailcrypt.fetch import FetchState, Requeue, RequeueCounts, account_lock
from mailcrypt.state import Store

__all__ = ["reprocess"]


def _line(name: str, counts: RequeueCounts) -> str:
    left = sum(counts.remaining.values())
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.remaining.items()))
    parts = [f"{counts.delivered} delivered", f"{left} still quarantined" + (f" ({detail})" if detail else "")]
    if counts.updated:
        parts.append(f"{counts.updated} status updated")
    if counts.finished:
        parts.append(f"{counts.finished} finished (delivered by an interrupted run)")
    if counts.skipped:
        parts.append(f"{counts.skipped} left alone")
    return f"{name}: {counts.examined} quarantined message(s) examined: " + ", ".join(parts) + "\n"


def reprocess(args: argparse.Namespace) -> None:
    home = open_home(args)
    settings = home.settings
    accounts: tuple[AccountSettings, ...]
    accounts = (settings.account(args.account),) if args.account else settings.accounts
    if not accounts:
        raise errors.ConfigError(f"{settings.config_file}: no [[accounts]] whose quarantine could be re-processed")
    chosen = []
    for account in accounts:
        if account.target.kind != "maildir":
            message = (
                f"account {account.name}: its target is imap:{account.target.folder}; "
                "only a Maildir's Quarantine can be re-processed"
            )
            if args.account:
                raise errors.UsageError(message)
            warn(message)
            continue
        chosen.append(account)
    reasons: Counter[str] = Counter()
    with Store.open(settings.state_db) as store:
        requeue = Requeue(state=FetchState(store), processor=processor_for(args, home, store))
        for account in chosen:
            root = account.target.path or settings.mail
            with account_lock(settings.home, account.name):
                counts = requeue.run(account.name, root, account.quarantine)
            sys.stdout.write(_line(account.name, counts))
            for line in counts.notes:
                warn(line)
            reasons.update(counts.remaining)
    sys.stdout.flush()
    code = exit_status(reasons)
    if code:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        raise errors.FetchIncomplete(
            f"some mail is still unreadable ({detail}); it stays in the quarantine folder",
            exit_code=code,
            counts=dict(reasons),
        )

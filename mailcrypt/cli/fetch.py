"""``mailcrypt fetch``: read IMAP mailboxes, decrypt and verify, deliver into a Maildir.

The accounts come from ``[[accounts]]`` in the configuration (``--account``
picks one); ``--folder`` and ``--to`` override an account's folders and
target for this run. Folders may be LIST patterns (``"*"``, ``"Archive/*"``;
``mailcrypt.fetch.folders`` says which folders a pattern leaves out). The
identities of the home's key directory decrypt, the replay guard and the
fetch progress live in the home's ``state.db``.

Exit status (DESIGN.md §6), after the summary table is printed:

- 0: every message fetched was delivered as readable mail (also when there
  was nothing new);
- 3, 4 or 5: some messages were quarantined, and the code is that of the
  most serious reason among them: 5 bad signature, replay or stale message;
  4 malformed or tampered (integrity) or unsupported; 3 no key. The other
  messages were delivered and the run went on; the stderr line and the
  summary say how many had each reason;
- 2: a folder was not fetched (the server refused to open it: missing, or
  no permission; or its UIDVALIDITY changed), while every other folder was:
  the summary names it and says how to go on. It is 2 because only the user
  can change that (correct ``folders``, or accept the new UIDVALIDITY): a
  rerun alone fetches the folder no better, unlike the transient failures of
  1. Quarantined messages (3, 4, 5) take precedence, as they did reach the
  Maildir and say something about the mail itself;
- 1: some messages could not be processed at all (they are quarantined
  too), or the server could not be reached;
- 2 also: usage or configuration error, or a refused login, when nothing
  was fetched.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import signal
import sys
import threading
from collections import Counter
from pathlib import Path

from mailcrypt import errors
from mailcrypt.cli.home import Home, open_home
from mailcrypt.cli.report import note
from mailcrypt.config import AccountSettings, Target
from mailcrypt.fetch import (
    REASON_EXIT_CODES,
    Counts,
    Fetcher,
    FetchState,
    MessageProcessor,
    Plan,
    Progress,
    SyncOptions,
    summary_table,
)
from mailcrypt.state import ReplayGuard, Store

__all__ = ["run", "parse_target", "parse_since", "exit_status", "processor_for"]

# The order in which quarantine reasons and folders not fetched (2) decide the exit status (most serious first).
_PRECEDENCE = (5, 4, 3, 2, 1)
_FOLDER_NOT_FETCHED = 2


def parse_target(value: str) -> Target:
    """``maildir:PATH`` (relative to the current directory) or ``imap:FOLDER``."""
    kind, sep, rest = value.partition(":")
    if sep and rest and kind == "maildir":
        return Target("maildir", path=Path(rest).expanduser().absolute())
    if sep and rest and kind == "imap":
        return Target("imap", folder=rest)
    raise errors.UsageError(f'--to: expected "maildir:PATH" or "imap:FOLDER", got {value!r}')


def parse_since(value: str | None) -> datetime.date | None:
    if value is None:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise errors.UsageError(f"--since: expected a date such as 2025-01-31, got {value!r}") from None


def _password(account: AccountSettings) -> bytes:
    if account.password is not None:
        return account.password.read()
    if sys.stdin is not None and sys.stdin.isatty():
        entered = getpass.getpass(f"IMAP password for {account.username}@{account.host} ({account.name}): ")
        if entered:
            return entered.encode("utf-8")
    raise errors.ConfigError(
        f"account {account.name}: no password: set password_env or password_file in its [[accounts]] entry, "
        "or run on a terminal to be asked"
    )


def exit_status(reasons: Counter[str], *, folders_not_fetched: int = 0) -> int:
    """The exit status for a run whose quarantined messages had these reasons (module docstring)."""
    codes = {REASON_EXIT_CODES.get(reason, 1) for reason, n in reasons.items() if n}
    if folders_not_fetched:
        codes.add(_FOLDER_NOT_FETCHED)
    return next((code for code in _PRECEDENCE if code in codes), 0)


def _plans(args: argparse.Namespace, accounts: tuple[AccountSettings, ...], default_home_mail: Path) -> list[Plan]:
    target = parse_target(args.to) if args.to else None
    plans = []
    for account in accounts:
        folders = tuple(args.folder) if args.folder else account.folders
        chosen = target or account.target
        if chosen.kind == "maildir" and chosen.path is None:
            chosen = Target("maildir", path=default_home_mail)
        if chosen.kind == "imap" and chosen.folder in folders:
            raise errors.UsageError(f"--to imap:{chosen.folder}: that folder is also fetched")
        plans.append(Plan(account, folders, chosen))
    return plans


def processor_for(args: argparse.Namespace, home: Home, store: Store) -> MessageProcessor:
    """The message processor of the home's identities and settings, with its replay guard (fetch, reprocess)."""
    settings = home.settings
    try:
        identities = home.keys.identities(home.passphrase)
    except errors.NoMatchingIdentity:
        # Plain and signed mail can still be fetched; encrypted mail goes to quarantine (no key).
        print(
            "mailcrypt: warning: no identity in the key directory: encrypted mail will be quarantined", file=sys.stderr
        )
        identities = []
    note(args, f"decrypting with {len(identities)} identit{'y' if len(identities) == 1 else 'ies'}")
    guard = ReplayGuard(
        store,
        max_age=datetime.timedelta(days=settings.replay.max_age_days),
        future_skew=datetime.timedelta(seconds=settings.replay.future_skew_seconds),
    )
    return MessageProcessor(
        identities, guard=guard, trust_anchors=home.keys.trust_anchors, revocation=home.keys.revocation
    )


def run(args: argparse.Namespace) -> None:
    home = open_home(args)
    settings = home.settings
    if args.account:
        accounts: tuple[AccountSettings, ...] = (settings.account(args.account),)
    else:
        accounts = settings.accounts
    if not accounts:
        raise errors.ConfigError(
            f"{settings.config_file}: no [[accounts]] to fetch from; add one (see config/mailcrypt.example.toml)"
        )
    plans = _plans(args, accounts, settings.mail)
    options = SyncOptions(
        mark_seen=args.mark_seen, since=parse_since(args.since), accept_uidvalidity=args.accept_uidvalidity
    )
    with Store.open(settings.state_db) as store:
        fetcher = Fetcher(
            settings,
            plans,
            state=FetchState(store),
            processor=processor_for(args, home, store),
            password=_password,
            options=options,
            progress=Progress(enabled=None if not args.watch else False),
        )
        if args.watch:
            rows = _watch(args, fetcher)
        else:
            rows = fetcher.run_once()
    sys.stdout.write(summary_table(rows))
    sys.stdout.flush()
    _finish(rows)


def _watch(args: argparse.Namespace, fetcher: Fetcher) -> list[tuple[str, Counts]]:
    stop = threading.Event()
    totals: dict[str, Counts] = {}

    def on_rows(rows: list[tuple[str, Counts]]) -> None:
        for label, counts in rows:
            total = totals.setdefault(label, Counts())
            total.add(counts)
            if counts.problem and counts.problem != total.problem:
                # Said once, not at every pass; the summary at the end says it again.
                print(f"mailcrypt: warning: not fetched: {counts.problem}", file=sys.stderr, flush=True)
            total.problem = counts.problem
            if counts.fetched:
                print(
                    f"mailcrypt: {label}: {counts.fetched} fetched, {counts.decrypted} decrypted, "
                    f"{counts.verified} verified, {counts.quarantined} quarantined, {counts.failed} failed",
                    file=sys.stderr,
                    flush=True,
                )

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        note(args, "watching for new mail (IMAP IDLE); stop with Ctrl-C or SIGTERM")
        fetcher.watch(stop, on_rows=on_rows)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return list(totals.items())


def _finish(rows: list[tuple[str, Counts]]) -> None:
    reasons: Counter[str] = Counter()
    for _label, counts in rows:
        reasons.update(counts.reasons)
    missed = [label for label, counts in rows if counts.problem]
    code = exit_status(reasons, folders_not_fetched=len(missed))
    if not code:
        return
    said = []
    if reasons:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        said.append(
            f"not every message could be delivered as readable mail ({detail}); they are in the quarantine "
            "folder, unchanged under an X-Mailcrypt-Status field"
        )
    if missed:
        said.append(
            f"{len(missed)} folder(s) not fetched ({', '.join(missed)}; the summary says why and what to do), "
            "the others were"
        )
    raise errors.FetchIncomplete("; ".join(said), exit_code=code, counts=dict(reasons))

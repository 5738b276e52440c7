"""A whole ``mailcrypt fetch`` run: accounts, connections, one pass or ``--watch``.

``Fetcher`` is built from the loaded settings, the identities to decrypt
with and the open state store. ``run_once`` syncs every folder of every
account chosen and returns the counts per folder; an account's ``folders``
are resolved on each pass (``folders``: names as written, patterns such as
``*`` through LIST). A folder the server refuses to open, or whose
UIDVALIDITY changed, is not fetched: its row carries the reason
(``Counts.problem``) and the other folders go on; ``watch`` does that and
then keeps going: it waits in IMAP IDLE on the first folder of each account
(polling every ``poll_seconds`` when the server has no IDLE), syncs again as
soon as the server announces mail, and reconnects after a failure with
exponential backoff (1 s doubling up to 5 minutes), until ``stop`` is set.
Each account runs in its own thread in ``watch``; they share the store,
whose lock serialises them.

A lock file per account in the home (``fetch-NAME.lock``, flock) keeps two
fetchers from syncing the same account at once, which would deliver twice.

What it won't do: parse the command line or print (``cli.fetch``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mailcrypt import errors
from mailcrypt.config import AccountSettings, Settings, Target
from mailcrypt.fetch.folders import resolve_folders
from mailcrypt.fetch.imap import IMAPConnection
from mailcrypt.fetch.process import MessageProcessor
from mailcrypt.fetch.progress import Counts, Progress
from mailcrypt.fetch.sink import IMAPSink, MaildirSink, Sink
from mailcrypt.fetch.state import FetchState
from mailcrypt.fetch.sync import FolderSync, SyncOptions

__all__ = ["Fetcher", "Password", "Plan", "account_lock"]

_DEFAULT_OPTIONS = SyncOptions()

log = logging.getLogger(__name__)

#: How the password of an account is obtained (environment, file or a prompt).
Password = Callable[[AccountSettings], bytes]

_BACKOFF_START = 1.0
_BACKOFF_MAX = 300.0
# RFC 2177 §3: re-issue IDLE at least every 29 minutes.
_IDLE_SECONDS = 25 * 60


@dataclass(frozen=True)
class Plan:
    """One account and what to do with it."""

    account: AccountSettings
    folders: tuple[str, ...]
    target: Target


@contextmanager
def account_lock(home: Path, name: str) -> Iterator[None]:
    """Hold the account's lock file in ``home``; ``errors.FetchError`` when another fetcher holds it."""
    path = home / f"fetch-{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise errors.FetchError(f"account {name}: another mailcrypt fetch is running for it") from None
        yield
    finally:
        os.close(fd)


@dataclass(eq=False)
class Fetcher:
    """Runs the sync for a list of plans with shared state and processor (and the processor's replay guard)."""

    settings: Settings
    plans: Sequence[Plan]
    _: KW_ONLY
    state: FetchState
    processor: MessageProcessor
    password: Password
    options: SyncOptions = _DEFAULT_OPTIONS
    progress: Progress = field(default_factory=lambda: Progress(enabled=False))
    timeout: float = 60.0
    # Each account's password, asked for once a run (never printed).
    _passwords: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)

    # ------------------------------------------------------------------ pieces

    def _connect(self, account: AccountSettings) -> IMAPConnection:
        if account.name not in self._passwords:
            self._passwords[account.name] = self.password(account)
        return IMAPConnection.connect(
            host=account.host,
            port=account.port,
            security=account.security,
            username=account.username,
            password=self._passwords[account.name],
            ca_file=account.ca_file,
            timeout=self.timeout,
            label=f"account {account.name} ({account.host}:{account.port})",
        )

    def _sink(self, plan: Plan) -> Sink:
        if plan.target.kind == "imap":
            assert plan.target.folder is not None
            return IMAPSink(lambda: self._connect(plan.account), plan.target.folder, quarantine=plan.account.quarantine)
        assert plan.target.path is not None
        return MaildirSink(plan.target.path, quarantine=plan.account.quarantine)

    def _folders(self, plan: Plan, conn: IMAPConnection) -> list[str]:
        """The account's folders on the server now; an IMAP target's own folders are never fetched by a pattern."""
        skip = [plan.target.folder] if plan.target.kind == "imap" and plan.target.folder is not None else []
        return resolve_folders(conn, plan.folders, skip=skip)

    def _sync_account(self, plan: Plan, conn: IMAPConnection, sink: Sink) -> list[tuple[str, Counts]]:
        syncer = FolderSync(
            account=plan.account.name,
            connection=conn,
            state=self.state,
            processor=self.processor,
            sink=sink,
            options=self.options,
            progress=self.progress,
        )
        rows = []
        for folder in self._folders(plan, conn):
            label = f"{plan.account.name}/{folder}"
            try:
                counts = syncer.run(folder)
            except errors.FolderUnavailable as exc:
                # A folder that is missing or forbidden says nothing about the others.
                log.warning("%s: %s", label, exc)
                counts = Counts(problem=f"{label}: {exc}")
            except errors.UIDValidityChanged as exc:
                # Only this folder's UIDs lost their meaning (README: it "stops the folder").
                log.warning("%s", exc)
                counts = Counts(problem=str(exc))
            rows.append((label, counts))
        return rows

    # ------------------------------------------------------------------ one pass

    def run_once(self) -> list[tuple[str, Counts]]:
        """Sync every planned folder once; return (account/folder, counts) rows."""
        rows: list[tuple[str, Counts]] = []
        # Forget replay keys that left the freshness window, once a pass.
        self.processor.guard.prune(datetime.now(UTC))
        for plan in self.plans:
            with account_lock(self.settings.home, plan.account.name):
                sink = self._sink(plan)
                try:
                    with self._connect(plan.account) as conn:
                        rows += self._sync_account(plan, conn, sink)
                finally:
                    if isinstance(sink, IMAPSink):
                        sink.close()
        return rows

    # ------------------------------------------------------------------ --watch

    def watch(
        self,
        stop: threading.Event,
        *,
        poll_seconds: float = 60.0,
        on_rows: Callable[[list[tuple[str, Counts]]], None] | None = None,
    ) -> None:
        """Sync, then wait for new mail and sync again, until ``stop`` is set (one thread per account).

        Raises the first error that ends an account for good (a refused
        login); connection failures are retried, and a folder that cannot be
        fetched (``Counts.problem``) is reported in the rows of every pass.
        """
        failures: list[BaseException] = []
        # Accounts run in threads here, and forking worker processes from a threaded
        # process can deadlock them: decrypt in this process (new mail comes a little at a time).
        self.options = dataclasses.replace(self.options, workers=1)

        def account_loop(plan: Plan) -> None:
            try:
                with account_lock(self.settings.home, plan.account.name):
                    self._watch_account(plan, stop, poll_seconds, on_rows)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread below.
                failures.append(exc)
                stop.set()

        threads = [
            threading.Thread(target=account_loop, args=(p,), name=f"fetch-{p.account.name}", daemon=True)
            for p in self.plans
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
        if failures:
            raise failures[0]

    def _watch_account(
        self,
        plan: Plan,
        stop: threading.Event,
        poll_seconds: float,
        on_rows: Callable[[list[tuple[str, Counts]]], None] | None,
    ) -> None:
        delay = _BACKOFF_START
        while not stop.is_set():
            sink = self._sink(plan)
            try:
                with self._connect(plan.account) as conn:
                    delay = _BACKOFF_START
                    while not stop.is_set():
                        rows = self._sync_account(plan, conn, sink)
                        if on_rows is not None:
                            on_rows(rows)
                        # IDLE watches one folder: the first one that could be fetched.
                        fetched = [label.split("/", 1)[1] for label, counts in rows if not counts.problem]
                        self._wait_for_mail(conn, fetched[0] if fetched else None, stop, poll_seconds)
            except errors.FetchConnectionError as exc:
                log.warning("account %s: %s; reconnecting in %.0f s", plan.account.name, exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
            finally:
                if isinstance(sink, IMAPSink):
                    sink.close()

    def _wait_for_mail(
        self, conn: IMAPConnection, folder: str | None, stop: threading.Event, poll_seconds: float
    ) -> None:
        # The last folder synced is selected; IDLE reports on the selected folder only.
        if folder is not None:
            try:
                conn.select(folder, readonly=not self.options.mark_seen)
            except errors.FolderUnavailable:
                # Removed since it was fetched: the next pass reports it; poll until then.
                folder = None
        if folder is not None and conn.can_idle:
            conn.idle(min(poll_seconds, _IDLE_SECONDS), stop=stop)
        else:
            stop.wait(poll_seconds)
            conn.noop()

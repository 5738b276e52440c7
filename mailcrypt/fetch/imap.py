"""A thin wrapper around imapclient: the few IMAP commands the fetcher uses, by UID only.

``IMAPConnection.connect`` opens a connection (implicit TLS, STARTTLS, or
plain IMAP, which the configuration allows only to a loopback host),
verifies the server's certificate against the system's authorities or a
configured CA file, and logs in. After that, only UIDs are used
(``use_uid=True``, STYLE.md §5): ``new_uids`` asks the server which UIDs are
above the last one delivered, ``sizes`` gets their sizes in one command per
thousand (``sizes_above`` only those of the large ones), and ``messages``
fetches ``BODY.PEEK[]`` (which never sets ``\\Seen``), the message's ``FLAGS``
and its INTERNALDATE (when the message reached the server, RFC 3501 §2.3.3:
the replay guard's freshness window lies around it) for a whole batch of UIDs
in one ``UID FETCH``. The caller bounds a batch in
count and bytes, so that only one batch of bodies is in memory at a time.
``idle`` waits for new mail with IMAP IDLE (RFC 2177). ``list_folders``
answers LIST with each folder's attributes (``\\Noselect``, and the
special-use ones of RFC 6154 such as ``\\Junk``).

Every failure of the connection or the protocol becomes an
``errors.FetchConnectionError`` (the ``--watch`` loop reconnects on it); a
refused login is an ``errors.ConfigError``; a folder the server refuses to
open (SELECT answered NO) is an ``errors.FolderUnavailable``, which stops
that folder only. Passwords are never logged.

What it won't do: decide what to fetch or keep any state of its own.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import imapclient
from imapclient import exceptions as imap_errors

from mailcrypt import errors

__all__ = ["IMAPConnection", "FolderInfo", "ListedFolder", "ServerMessage", "ranges"]

log = logging.getLogger(__name__)

# What a broken connection or a confused server raises through imapclient.
_NETWORK = (OSError, socket.timeout, ssl.SSLError, imap_errors.IMAPClientError, EOFError)
_SIZE_CHUNK = 1000


@dataclass(frozen=True)
class FolderInfo:
    """What SELECT/EXAMINE says about a folder."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True)
class ListedFolder:
    """One LIST answer: the folder's name, its hierarchy delimiter and its attributes, lower-cased."""

    name: str
    delimiter: str | None
    attributes: frozenset[str]


@dataclass(frozen=True)
class ServerMessage:
    """One fetched message: its bytes as the server holds them, its flags (``\\Seen``, ...) as sent,
    and when it arrived there (INTERNALDATE; None if the server sent none)."""

    body: bytes
    flags: frozenset[str] = frozenset()
    arrival: datetime | None = None


def ranges(uids: Iterable[int]) -> str:
    """A compact UID set ("1:5,8,10:12") for logs and messages."""
    out: list[str] = []
    run: list[int] = []
    for uid in sorted(uids):
        if run and uid == run[-1] + 1:
            run.append(uid)
            continue
        if run:
            out.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [uid]
    if run:
        out.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


@contextmanager
def _network(what: str) -> Iterator[None]:
    try:
        yield
    except imap_errors.LoginError:
        raise
    except _NETWORK as exc:
        detail = str(exc) or type(exc).__name__
        raise errors.FetchConnectionError(f"{what}: {' '.join(detail.split())}") from None


class IMAPConnection:
    """One logged-in IMAP connection. Close it with ``close`` (or ``with``)."""

    def __init__(self, client: imapclient.IMAPClient, *, label: str) -> None:
        self._client = client
        # INTERNALDATE as the server sent it, with its zone: imapclient would otherwise
        # convert it to a naive local time.
        client.normalise_times = False
        self.label = label
        self._selected: str | None = None
        self._readonly = True

    @classmethod
    def connect(
        cls,
        *,
        host: str,
        port: int,
        security: str,
        username: str,
        password: bytes,
        ca_file: Path | None = None,
        timeout: float = 60.0,
        label: str = "",
    ) -> IMAPConnection:
        """Connect and log in. ``security`` is ``tls``, ``starttls`` or ``none``."""
        label = label or f"{username}@{host}:{port}"
        context = None
        if security in ("tls", "starttls"):
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
        with _network(f"{label}: cannot connect"):
            client = imapclient.IMAPClient(
                host, port=port, use_uid=True, ssl=security == "tls", ssl_context=context, timeout=timeout
            )
        _quiet_imaplib(client)
        try:
            if security == "starttls":
                with _network(f"{label}: STARTTLS failed"):
                    if not client.has_capability("STARTTLS"):
                        raise errors.FetchConnectionError(f"{label}: the server does not offer STARTTLS")
                    client.starttls(context)
            with _network(f"{label}: login failed"):
                try:
                    client.login(username, password.decode("utf-8"))
                except imap_errors.LoginError as exc:
                    raise errors.ConfigError(
                        f"{label}: the server refused the login for {username} ({_text(exc)}); "
                        "check the account's username and password"
                    ) from None
        except BaseException:
            _shutdown(client)
            raise
        log.debug("%s: logged in (%s)", label, security)
        return cls(client, label=label)

    def __enter__(self) -> IMAPConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out; a connection that is already broken is just closed."""
        try:
            self._client.logout()
        except Exception:  # noqa: BLE001 - logging out of a dead connection may fail in any way.
            _shutdown(self._client)

    # ------------------------------------------------------------------ folders

    def delimiter(self) -> str | None:
        """The hierarchy delimiter of the personal namespace (None for a flat server)."""
        with _network(f"{self.label}: LIST failed"):
            listed = self._client.list_folders("", "INBOX")
        for _flags, delimiter, _name in listed:
            if delimiter:
                return delimiter.decode("ascii") if isinstance(delimiter, bytes) else str(delimiter)
        return None

    def list_folders(self, pattern: str) -> list[ListedFolder]:
        """``LIST "" pattern`` (RFC 3501 §6.3.8: ``*`` matches any characters, ``%`` any but the delimiter)."""
        with _network(f"{self.label}: LIST {pattern!r} failed"):
            listed = self._client.list_folders("", pattern)
        out = []
        for flags, delimiter, name in listed:
            sep = delimiter.decode("ascii") if isinstance(delimiter, bytes) else delimiter
            attributes = frozenset(
                (f.decode("ascii", "replace") if isinstance(f, bytes) else str(f)).lower() for f in flags
            )
            out.append(ListedFolder(str(name), sep or None, attributes))
        return out

    def select(self, folder: str, *, readonly: bool = True) -> FolderInfo:
        """SELECT (or EXAMINE when ``readonly``) ``folder``.

        Raises ``errors.FolderUnavailable`` when the server refuses the folder
        (missing, no permission) and ``errors.FetchConnectionError`` when the
        connection fails.
        """
        with _network(f"{self.label}: cannot open folder {folder!r}"):
            try:
                response = self._client.select_folder(folder, readonly=readonly)
            except (imap_errors.IMAPClientAbortError, imap_errors.IMAPClientReadOnlyError):
                raise
            except imap_errors.IMAPClientError as exc:
                # imaplib raises its plain error for a tagged NO or BAD, and its "abort" for a
                # broken connection: a refusal leaves the session usable for the other folders
                # (RFC 3501 §6.3.1: in the authenticated state).
                self._selected = None
                raise errors.FolderUnavailable(
                    f"the server refused to open {folder!r} ({_text(exc)})", folder=folder
                ) from None
        self._selected, self._readonly = folder, readonly
        uidvalidity = response.get(b"UIDVALIDITY")
        if uidvalidity is None:
            raise errors.FetchConnectionError(f"{self.label}: the server sent no UIDVALIDITY for {folder!r}")
        uidnext = response.get(b"UIDNEXT")
        return FolderInfo(
            folder, int(uidvalidity), int(uidnext) if uidnext is not None else None, int(response.get(b"EXISTS", 0))
        )

    def ensure_folder(self, folder: str) -> None:
        """Create ``folder`` unless it exists."""
        with _network(f"{self.label}: cannot create folder {folder!r}"):
            if not self._client.folder_exists(folder):
                self._client.create_folder(folder)

    # ------------------------------------------------------------------ messages

    def new_uids(self, after: int, *, since: date | None = None) -> list[int]:
        """UIDs above ``after`` in the selected folder, ascending (with ``since``: arrived on or after it)."""
        criteria: list[object] = ["UID", f"{after + 1}:*"]
        if since is not None:
            criteria += ["SINCE", since]
        with _network(f"{self.label}: UID SEARCH failed in {self._selected!r}"):
            found = self._client.search(criteria)
        # "n:*" always includes the highest UID, even when it is below n (RFC 3501 §6.4.8).
        return sorted(uid for uid in found if uid > after)

    def uids_before(self, upto: int, *, since: date, before: date) -> list[int]:
        """UIDs up to ``upto`` that arrived on or after ``since`` and before ``before``, ascending.

        RFC 3501 §6.4.4: SINCE and BEFORE compare the INTERNALDATE's date.
        """
        if upto < 1:
            return []
        criteria: list[object] = ["UID", f"1:{upto}", "SINCE", since, "BEFORE", before]
        with _network(f"{self.label}: UID SEARCH failed in {self._selected!r}"):
            found = self._client.search(criteria)
        return sorted(uid for uid in found if uid <= upto)

    def sizes(self, uids: list[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID still present, one command per thousand UIDs."""
        out: dict[int, int] = {}
        for i in range(0, len(uids), _SIZE_CHUNK):
            chunk = uids[i : i + _SIZE_CHUNK]
            with _network(f"{self.label}: UID FETCH RFC822.SIZE failed"):
                data = self._client.fetch(chunk, ["RFC822.SIZE"])
            out.update((uid, int(d.get(b"RFC822.SIZE", 0))) for uid, d in data.items())
        return out

    def sizes_above(self, uids: list[int], threshold: int) -> dict[int, int]:
        """RFC822.SIZE of those of ``uids`` (ascending) larger than ``threshold`` bytes; the others are not listed.

        One ``UID SEARCH UID first:last LARGER threshold`` (RFC 3501 §6.4.4:
        the same RFC 2822 size as RFC822.SIZE) and a FETCH of the few it
        finds: answering a FETCH of every size cost the fetcher more than a
        batch of bodies (1,000 of them parsed by imapclient).
        """
        if not uids:
            return {}
        with _network(f"{self.label}: UID SEARCH LARGER failed in {self._selected!r}"):
            found = self._client.search(["UID", f"{uids[0]}:{uids[-1]}", "LARGER", max(0, threshold)])
        wanted = set(uids)
        large = sorted(uid for uid in found if uid in wanted)
        return self.sizes(large) if large else {}

    def messages(self, uids: list[int]) -> dict[int, ServerMessage]:
        """Each UID's message, flags and INTERNALDATE in one ``UID FETCH uids (BODY.PEEK[] FLAGS INTERNALDATE)``.

        Expunged UIDs are missing. The flags come with the body, in the same
        response, so they are the ones the message had when it was read
        (RFC 3501 §6.4.5).
        """
        with _network(f"{self.label}: UID FETCH BODY.PEEK[] FLAGS INTERNALDATE failed"):
            data = self._client.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
        out = {}
        for uid, item in data.items():
            body = item.get(b"BODY[]")
            if body is not None:
                flags = frozenset(
                    f.decode("ascii", "replace") if isinstance(f, bytes) else str(f) for f in item.get(b"FLAGS", ())
                )
                out[uid] = ServerMessage(bytes(body), flags, _arrival(item.get(b"INTERNALDATE")))
        return out

    def mark_seen(self, uids: list[int]) -> None:
        """Set ``\\Seen`` on ``uids`` (only when the user asked for it: --mark-seen)."""
        if not uids:
            return
        if self._readonly and self._selected is not None:
            self.select(self._selected, readonly=False)
        with _network(f"{self.label}: UID STORE +FLAGS failed"):
            self._client.add_flags(uids, [imapclient.SEEN], silent=True)

    def append(self, folder: str, message: bytes, *, flags: tuple[bytes, ...] = ()) -> None:
        """APPEND ``message`` to ``folder``."""
        with _network(f"{self.label}: APPEND to {folder!r} failed"):
            self._client.append(folder, message, flags=flags)

    def search_header(self, name: str, value: str) -> list[int]:
        """UIDs in the selected folder whose header ``name`` contains ``value``."""
        with _network(f"{self.label}: UID SEARCH HEADER failed"):
            return list(self._client.search(["HEADER", name, value]))

    # ------------------------------------------------------------------ waiting

    @property
    def can_idle(self) -> bool:
        with _network(f"{self.label}: CAPABILITY failed"):
            return bool(self._client.has_capability("IDLE"))

    def idle(self, timeout: float, *, stop: threading.Event | None = None) -> bool:
        """Wait in IDLE up to ``timeout`` seconds; True when the server announced new mail.

        The wait is cut into one-second slices so that ``stop`` ends it promptly.
        """
        deadline = time.monotonic() + timeout
        announced = False
        with _network(f"{self.label}: IDLE failed"):
            self._client.idle()
            try:
                while not announced and time.monotonic() < deadline and not (stop is not None and stop.is_set()):
                    slice_ = min(1.0, max(0.0, deadline - time.monotonic()))
                    started = time.monotonic()
                    responses = self._client.idle_check(timeout=slice_)
                    announced = any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses)
                    if not responses and time.monotonic() - started < slice_ / 2:
                        # Readable but no line: imapclient swallows EOF here. Leave IDLE;
                        # DONE (or the next command) tells whether the connection is gone.
                        break
            finally:
                self._client.idle_done()
        return announced

    def noop(self) -> None:
        """NOOP: keeps the connection alive and lets the server report new mail."""
        with _network(f"{self.label}: NOOP failed"):
            self._client.noop()


def _quiet_imaplib(client: imapclient.IMAPClient) -> None:
    """Turn imaplib's own debugging off unless imapclient's logger for it would print something.

    imapclient sets imaplib's debug level to 5 so that every protocol line
    reaches the ``imapclient.imaplib`` logger, and imaplib then formats every
    response, the repr of each message body included, before the logger
    drops it: a third of this process's CPU time in a fetch of 1,000
    messages. When logging is set up to show that logger's DEBUG lines,
    imaplib's debugging stays on.
    """
    imap = getattr(client, "_imap", None)
    if imap is not None and not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        imap.debug = 0


def _arrival(value: object) -> datetime | None:
    """An INTERNALDATE as an aware UTC datetime (RFC 3501 §2.3.3 gives it a zone); None when absent."""
    if not isinstance(value, datetime):
        return None
    # A zone-less value cannot come from a conforming server; take it as UTC rather than guess.
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _shutdown(client: imapclient.IMAPClient) -> None:
    try:
        client.shutdown()
    except Exception:  # noqa: BLE001 - the socket may be gone already.
        pass

"""Where fetched mail goes: a local Maildir++ (the default) or a folder on the same IMAP server.

A sink hands out one ``FolderSink`` per server folder. It answers two
questions for crash safety and does one thing:

- ``prepare(pending)``: clear what a crashed run left half done and learn
  which of the ``pending`` UIDs it did write;
- ``where(uid)``: is there already a copy of this message, and where
  (``"folder"`` or ``"quarantine"``), so that a rerun never writes a second;
- ``deliver(uid, data, quarantine=..., flags=...)``: store one message,
  with the server's flags (``\\Seen``, ``\\Answered``, ``\\Flagged``,
  ``\\Draft``; the others are not carried over);
- ``sync()``: make everything delivered so far durable.

``MaildirSink`` writes ``maildir.Maildir`` files whose names say where the
message came from, so ``where`` is a look at the directory and no pending
entries are needed; the flags become Maildir info, and the root is made a
mailbox as soon as any folder is opened. ``IMAPSink`` APPENDs to ``FOLDER`` (server folder
INBOX), ``FOLDER/<server folder>`` or ``FOLDER/Quarantine``; an APPEND
whose answer was lost cannot be seen afterwards by name, so it asks for
pending entries (``needs_pending``) and finds those messages again by their
``X-Mailcrypt-Source`` field. Storing plaintext on the server is the user's
explicit choice (``imap:FOLDER`` with ``plaintext_on_server``, or ``--to``).

What it won't do: decide what is delivered or quarantined.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mailcrypt.fetch.imap import IMAPConnection
from mailcrypt.fetch.maildir import Maildir, maildir_folder_name, maildir_info, message_stem, stem_prefix

__all__ = ["FolderSink", "Sink", "MaildirSink", "IMAPSink", "source_label", "source_labels"]

Fault = Callable[[str], None]

# The flags a copy takes over from the server's message (RFC 3501 §2.3.2 system flags).
# \Deleted stays behind: the copy is new mail, and a reader would purge it.
_KEPT_FLAGS = {"\\seen": b"\\Seen", "\\answered": b"\\Answered", "\\flagged": b"\\Flagged", "\\draft": b"\\Draft"}


def _no_fault(step: str) -> None:
    return None


def source_label(account: str, folder: str, uidvalidity: int, uid: int) -> str:
    """The ``X-Mailcrypt-Source`` value: where a message came from, ending in a unique token."""
    return source_labels(account, folder, uidvalidity)(uid)


def source_labels(account: str, folder: str, uidvalidity: int) -> Callable[[int], str]:
    """``source_label`` for one folder, by UID, with what the folder's labels share worked out once."""
    head = f"{account}/{folder} <{stem_prefix(account, folder, uidvalidity)}"
    return lambda uid: f"{head}{uid}>"


class FolderSink(Protocol):
    """Delivery for one server folder (see the module docstring)."""

    def prepare(self, pending: set[int]) -> None: ...

    def where(self, uid: int) -> str | None: ...

    def deliver(
        self, uid: int, data: bytes, *, quarantine: bool, flags: frozenset[str] = frozenset(), fault: Fault = _no_fault
    ) -> None: ...

    def sync(self) -> None: ...


class Sink(Protocol):
    """A target: ``open_folder`` for each server folder synced."""

    needs_pending: bool
    description: str

    def open_folder(self, account: str, folder: str, delimiter: str | None, uidvalidity: int) -> FolderSink: ...


class _MaildirFolderSink:
    def __init__(self, maildir: Maildir, name: str, quarantine: str, account: str, folder: str, uidvalidity: int):
        self._main = maildir.folder(name)
        self._quarantine = maildir.folder(quarantine)
        self._prefix = stem_prefix(account, folder, uidvalidity)

    def _stem(self, uid: int) -> str:
        return f"{self._prefix}{uid}"

    def prepare(self, pending: set[int]) -> None:
        # tmp/ files of this folder are what a crashed run left; the rerun writes them anew.
        self._main.clean_tmp(self._prefix)
        self._quarantine.clean_tmp(self._prefix)

    def where(self, uid: int) -> str | None:
        stem = self._stem(uid)
        if self._main.has(stem):
            return "folder"
        if self._quarantine.has(stem):
            return "quarantine"
        return None

    def deliver(
        self, uid: int, data: bytes, *, quarantine: bool, flags: frozenset[str] = frozenset(), fault: Fault = _no_fault
    ) -> None:
        target = self._quarantine if quarantine else self._main
        target.deliver(self._stem(uid), data, info=maildir_info(flags), fault=fault)

    def sync(self) -> None:
        self._main.sync()
        self._quarantine.sync()


class MaildirSink:
    """A local Maildir++: server folder INBOX is the root, others ``.Name``, quarantine ``.Quarantine``."""

    needs_pending = False

    def __init__(self, root: Path, *, quarantine: str = "Quarantine") -> None:
        self.root = Path(root)
        self.maildir = Maildir(self.root)
        self.quarantine = quarantine
        self.description = f"maildir:{self.root}"

    def open_folder(self, account: str, folder: str, delimiter: str | None, uidvalidity: int) -> FolderSink:
        name = maildir_folder_name(folder, delimiter)
        quarantine = maildir_folder_name(self.quarantine, None)
        # Readers open the root as a mailbox (mutt -f, s-nail -f), whichever folders are fetched.
        self.maildir.prepare_root()
        return _MaildirFolderSink(self.maildir, name, quarantine, account, folder, uidvalidity)

    def sync(self) -> None:
        self.maildir.sync()


class _IMAPFolderSink:
    def __init__(
        self, connection: IMAPConnection, target: str, quarantine: str, account: str, folder: str, uidvalidity: int
    ) -> None:
        self._conn = connection
        self._target, self._quarantine = target, quarantine
        self._account, self._folder, self._uidvalidity = account, folder, uidvalidity
        self._present: dict[int, str] = {}

    def prepare(self, pending: set[int]) -> None:
        self._conn.ensure_folder(self._target)
        self._conn.ensure_folder(self._quarantine)
        for where, name in (("folder", self._target), ("quarantine", self._quarantine)):
            if not pending:
                break
            self._conn.select(name, readonly=True)
            for uid in sorted(pending):
                token = f"<{message_stem(self._account, self._folder, self._uidvalidity, uid)}>"
                if self._conn.search_header("X-Mailcrypt-Source", token):
                    self._present[uid] = where
            pending = pending - set(self._present)

    def where(self, uid: int) -> str | None:
        return self._present.get(uid)

    def deliver(
        self, uid: int, data: bytes, *, quarantine: bool, flags: frozenset[str] = frozenset(), fault: Fault = _no_fault
    ) -> None:
        kept = tuple(sorted(_KEPT_FLAGS[f.lower()] for f in flags if f.lower() in _KEPT_FLAGS))
        self._conn.append(self._quarantine if quarantine else self._target, data, flags=kept)
        self._present[uid] = "quarantine" if quarantine else "folder"
        # The server has answered OK: the message is stored, as durable as the server makes it.
        fault("written")
        fault("fsynced")
        fault("renamed")

    def sync(self) -> None:
        return None


class IMAPSink:
    """Folders on the same IMAP server, written through a connection of their own."""

    needs_pending = True

    def __init__(self, connect: Callable[[], IMAPConnection], folder: str, *, quarantine: str = "Quarantine") -> None:
        self._connect = connect
        self._conn: IMAPConnection | None = None
        self.folder = folder
        self.quarantine = quarantine
        self.description = f"imap:{folder}"

    def open_folder(self, account: str, folder: str, delimiter: str | None, uidvalidity: int) -> FolderSink:
        if self._conn is None:
            self._conn = self._connect()
        sep = delimiter or "/"
        target = self.folder if folder.upper() == "INBOX" else f"{self.folder}{sep}{folder}"
        return _IMAPFolderSink(self._conn, target, f"{self.folder}{sep}{self.quarantine}", account, folder, uidvalidity)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

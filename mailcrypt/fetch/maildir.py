"""A Maildir++ writer that never leaves half a message and never writes one twice.

Delivery follows the Maildir protocol: the message is written to ``tmp/``,
flushed to disk (fsync), renamed into ``new/``, and the directory entry is
made durable by an fsync of ``new/`` (``sync``; the fetcher does it once per
batch, before it records progress). A reader never sees a partial file.

File names are derived from where the message came from, (account, server
folder, UIDVALIDITY, UID), like isync's ``,U=`` names, instead of from the
time and the process: after a crash the rerun computes the same name and
finds the copy it already made, in ``new/`` or, once a mail client has seen
it, in ``cur/`` with a ``:2,FLAGS`` suffix. Folders are Maildir++: the server
folder ``INBOX`` is the root, any other folder ``a/b`` is ``.a.b`` with a
``maildirfolder`` marker. Directories are made mode 0700 and messages 0600:
they hold decrypted mail.

What it won't do: decide what goes where (``sync``), parse messages, or
touch any file it did not name itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from imapclient import imap_utf7

from mailcrypt.state import fsync_dir

__all__ = ["Maildir", "MaildirFolder", "maildir_folder_name", "message_stem", "stem_prefix"]

_SUBDIRS = ("tmp", "new", "cur")

Fault = Callable[[str], None]


def _no_fault(step: str) -> None:
    return None


def maildir_folder_name(folder: str, delimiter: str | None) -> str:
    """The Maildir++ directory name of a server folder ("" for INBOX, the root).

    Each level is stored in modified UTF-7 (RFC 3501 §5.1.3), as Dovecot and
    Courier do; a "." or "/" inside one level, which Maildir++ would read as
    a level separator or a path, becomes "_".
    """
    if folder.upper() == "INBOX":
        return ""
    levels = folder.split(delimiter) if delimiter else [folder]
    encoded = [imap_utf7.encode(level).decode("ascii").replace(".", "_").replace("/", "_") for level in levels]
    return "." + ".".join(encoded)


def message_stem(account: str, folder: str, uidvalidity: int, uid: int) -> str:
    """The file name (before any ``:2,`` flags) of one server message.

    The folder appears as a short hash: names stay short and free of
    characters a file name cannot hold, and two folders never share names.
    """
    return stem_prefix(account, folder, uidvalidity) + str(uid)


def stem_prefix(account: str, folder: str, uidvalidity: int) -> str:
    """What ``message_stem`` puts before the UID; the same for a whole folder, so callers keep it."""
    key = hashlib.sha256(folder.encode("utf-8")).hexdigest()[:10]
    return f"mailcrypt.{account}.{key}.{uidvalidity},U="


class MaildirFolder:
    """One Maildir (``tmp``, ``new``, ``cur``), created on first use."""

    def __init__(self, path: Path, *, marker: bool) -> None:
        self.path = path
        # Plain strings for the per-message system calls: joining Paths for each message cost
        # about as much as writing it (a profile of 1,000 messages).
        self._tmp = os.path.join(path, "tmp")
        self._new = os.path.join(path, "new")
        self._marker = marker
        self._ready = False
        self._names: set[str] | None = None
        # The subdirectories (new/, cur/) renamed into since the last sync.
        self._dirty: set[str] = set()

    def _prepare(self) -> None:
        if self._ready:
            return
        created = False
        for sub in _SUBDIRS:
            target = self.path / sub
            if not target.is_dir():
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
                created = True
        if self._marker and not (self.path / "maildirfolder").exists():
            (self.path / "maildirfolder").touch(mode=0o600)
            created = True
        if created:
            # The new directories must survive a crash as surely as the mail in them.
            fsync_dir(self.path)
            fsync_dir(self.path.parent)
        self._ready = True

    def _known(self) -> set[str]:
        """Names (flags cut off) in new/ and cur/, read once and then kept current."""
        if self._names is None:
            self._prepare()
            names: set[str] = set()
            for sub in ("new", "cur"):
                with os.scandir(self.path / sub) as entries:
                    names.update(entry.name.split(":", 1)[0] for entry in entries)
            self._names = names
        return self._names

    def has(self, stem: str) -> bool:
        """True when a message of this name is in new/ or cur/ (with any flags)."""
        return stem in self._known()

    def deliver(self, stem: str, data: bytes, *, fault: Fault = _no_fault, info: str | None = None) -> str:
        """Write ``data`` as ``new/stem`` through ``tmp/``; return the new path.

        With ``info`` (the part after ``:`` of a name a mail client gave,
        such as ``2,S``) the message goes to ``cur/stem:info`` instead, as a
        message already seen. The file is complete and on disk before it
        appears; call ``sync`` before relying on the name itself surviving a
        crash. ``fault`` is called after each step (crash tests).
        """
        known = self._known()
        final = os.path.join(self._new, stem) if info is None else os.path.join(self.path, "cur", f"{stem}:{info}")
        self._write(stem, data, final, fault)
        known.add(stem)
        self._dirty.add(os.path.dirname(final))
        fault("renamed")
        return final

    def _write(self, stem: str, data: bytes, final: str, fault: Fault) -> None:
        """Write ``data`` to ``tmp/stem``, fsync it and rename it to ``final``."""
        tmp = os.path.join(self._tmp, stem)
        # O_TRUNC: a file left in tmp/ by a crash has the same name and is simply rewritten.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                fault("written")
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            # A failed write (disk full, an interrupt) leaves no partial message in tmp/
            # until the next run; only a crash can, and the next run removes that.
            os.unlink(tmp)
            raise
        fault("fsynced")
        os.rename(tmp, final)

    def sync(self) -> None:
        """Make the renames into new/ and cur/ durable (one fsync of each directory)."""
        for directory in sorted(self._dirty):
            fsync_dir(directory)
        self._dirty.clear()

    def find(self, stem: str) -> Path | None:
        """The file of the message named ``stem`` in new/ or cur/ (any flags), or None."""
        if not self.has(stem):
            return None
        for sub in ("new", "cur"):
            with os.scandir(self.path / sub) as entries:
                for entry in entries:
                    if entry.name.split(":", 1)[0] == stem:
                        return Path(entry.path)
        return None

    def messages(self) -> list[Path]:
        """Every message file in new/ and cur/, sorted by name."""
        self._prepare()
        found: list[Path] = []
        for sub in ("new", "cur"):
            with os.scandir(self.path / sub) as entries:
                found += [Path(entry.path) for entry in entries if entry.is_file() and not entry.name.startswith(".")]
        return sorted(found, key=lambda p: p.name)

    def replace(self, path: Path, data: bytes) -> None:
        """Replace the message file ``path`` (of this folder) by ``data`` atomically, through ``tmp/``."""
        self._write(path.name.split(":", 1)[0], data, str(path), _no_fault)
        fsync_dir(path.parent)

    def remove(self, path: Path) -> None:
        """Delete the message file ``path`` of this folder, durably."""
        os.unlink(path)
        if self._names is not None:
            self._names.discard(path.name.split(":", 1)[0])
        fsync_dir(path.parent)

    def clean_tmp(self, prefix: str) -> int:
        """Remove files in tmp/ whose names start with ``prefix``: leftovers of a crashed run."""
        self._prepare()
        removed = 0
        with os.scandir(self.path / "tmp") as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    os.unlink(entry.path)
                    removed += 1
        return removed


class Maildir:
    """A Maildir++ tree: the root (INBOX) and its ``.Sub.folders``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._folders: dict[str, MaildirFolder] = {}

    def folder(self, name: str) -> MaildirFolder:
        """The Maildir for a Maildir++ name from ``maildir_folder_name`` ("" is the root)."""
        if name not in self._folders:
            if name and (not name.startswith(".") or "/" in name or name in (".", "..")):
                raise ValueError(f"not a Maildir++ folder name: {name!r}")
            path = self.root / name if name else self.root
            self._folders[name] = MaildirFolder(path, marker=bool(name))
        return self._folders[name]

    def sync(self) -> None:
        """``sync`` every folder written to."""
        for folder in self._folders.values():
            folder.sync()

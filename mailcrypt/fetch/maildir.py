"""A Maildir++ writer that never leaves half a message and never writes one twice.

Delivery follows the Maildir protocol: the message is written to ``tmp/``,
flushed to disk (fsync), renamed into ``new/`` (or ``cur/``, see below), and
the directory entry is made durable by an fsync of that directory (``sync``; the fetcher does it once per
batch, before it records progress). A reader never sees a partial file.

File names are derived from where the message came from, (account, server
folder, UIDVALIDITY, UID), like isync's ``,U=`` names, instead of from the
time and the process: after a crash the rerun computes the same name and
finds the copy it already made, in ``new/`` or, once a mail client has seen
it, in ``cur/`` with a ``:2,FLAGS`` suffix. Folders are Maildir++: the server
folder ``INBOX`` is the root, any other folder ``a/b`` is ``.a.b`` with a
``maildirfolder`` marker. Directories are made mode 0700 and messages 0600:
they hold decrypted mail.

Files are written as local mail tools (Dovecot, mbsync, getmail, mutt)
write them, so that any of them can open the tree:

- Line ends are LF on disk: every CRLF becomes LF when the file is written
  (``to_lf``). Signatures are verified before (``process``), and a signed
  part kept whole stays verifiable: a reader that checks it converts LF back
  to CRLF (RFC 8551 §3.1.1 canonical form, as ``openssl smime -verify`` and
  mailcrypt's own ``verify`` do) and gets the bytes that were signed.
- Server flags become Maildir info (``maildir_info``): ``\\Seen`` S,
  ``\\Answered`` R, ``\\Flagged`` F, ``\\Draft`` D. A message with any of
  them goes to ``cur/`` as ``stem:2,FLAGS``, since only names in ``cur/``
  carry flags (so a flagged unread message is in ``cur/`` without S, which
  readers show as unread); a message with none goes to ``new/``.
  ``\\Deleted`` is not carried over: a reader would purge the local copy.
- The root is a mailbox (``tmp``, ``new``, ``cur``) even when only
  subfolders are written (``Maildir.prepare_root``); Maildir++ readers
  refuse a root without them.

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

__all__ = [
    "Maildir",
    "MaildirFolder",
    "maildir_folder_name",
    "maildir_info",
    "message_stem",
    "stem_prefix",
    "to_lf",
]

_SUBDIRS = ("tmp", "new", "cur")

Fault = Callable[[str], None]


def _no_fault(step: str) -> None:
    return None


# IMAP system flags (RFC 3501 §2.3.2), lower-cased, and their Maildir info letters
# (https://cr.yp.to/proto/maildir.html: "2," then the letters in ASCII order).
_FLAG_LETTERS = {"\\draft": "D", "\\flagged": "F", "\\answered": "R", "\\seen": "S"}


def maildir_info(flags: frozenset[str] | set[str] | tuple[str, ...]) -> str:
    """The Maildir info letters for IMAP flags ("" when none maps), in ASCII order as the format requires.

    IMAP flags are case-insensitive (RFC 3501 §2.3.2); keywords and
    ``\\Deleted``, ``\\Recent`` have no letter here.
    """
    return "".join(sorted({_FLAG_LETTERS[f.lower()] for f in flags if f.lower() in _FLAG_LETTERS}))


def to_lf(data: bytes) -> bytes:
    """``data`` with every CRLF turned into LF, the line end of files on a Unix system.

    Lone CR or LF bytes are left as they are. Converting back (LF to CRLF)
    gives the CRLF form again, which is what signatures are computed over.
    """
    return data.replace(b"\r\n", b"\n")


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
        self._cur = os.path.join(path, "cur")
        self._marker = marker
        self._ready = False
        self._names: set[str] | None = None
        # The subdirectories (new/, cur/) renamed into since the last sync.
        self._dirty: set[str] = set()

    def prepare(self) -> None:
        """Create ``tmp``, ``new`` and ``cur`` (and the Maildir++ marker) unless they exist."""
        self._prepare()

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

    def deliver(self, stem: str, data: bytes, *, info: str = "", fault: Fault = _no_fault) -> str:
        """Write ``data`` (CRLF as LF) to ``new/stem`` or ``cur/stem:2,INFO`` through ``tmp/``; return its path.

        ``info`` is Maildir info letters (``maildir_info``): with any, the
        message goes to ``cur/``. The file is complete and on disk before it
        appears there; call ``sync`` before relying on the name itself
        surviving a crash. ``fault`` is called after each step (crash tests).
        """
        known = self._known()
        directory = self._cur if info else self._new
        final = os.path.join(directory, f"{stem}:2,{info}" if info else stem)
        self._write(stem, to_lf(data), final, fault)
        known.add(stem)
        self._dirty.add(directory)
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
        self._write(path.name.split(":", 1)[0], to_lf(data), str(path), _no_fault)
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

    def prepare_root(self) -> None:
        """Make the root a mailbox (``tmp``, ``new``, ``cur``), as readers expect of a Maildir++ tree."""
        self.folder("").prepare()

    def sync(self) -> None:
        """``sync`` every folder written to."""
        for folder in self._folders.values():
            folder.sync()

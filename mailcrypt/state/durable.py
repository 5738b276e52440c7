"""Making a rename durable: fsync of the directory that holds it.

Writing a file through ``tmp/``, fsync and rename (STYLE.md §1.5) survives a
crash only once the directory entry itself is on disk; the Maildir writers
of the fetcher and the proxy, and the proxy's spool, share this one step.
"""

from __future__ import annotations

import os

__all__ = ["fsync_dir"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory ``path`` (its entries: files created or renamed in it)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

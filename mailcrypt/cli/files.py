"""Input and output for the commands: spooled input, output committed only on success.

Output is written to a 0600 temporary file and moved into place (or copied
to stdout) once the whole command has succeeded, so a failure never leaves
partial ciphertext or key material behind. Decrypted mail does not pass
through here: ``mailcrypt.mime.decrypt_file`` owns its file from the first
byte of plaintext. Nothing here knows about mail.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import IO

from mailcrypt import errors

__all__ = ["CHUNK", "check_output_directory", "open_input", "Output", "read_headers"]

CHUNK = 1 << 20


def open_input(path: str | None) -> IO[bytes]:
    """The input as a seekable binary file; standard input is spooled to a temporary file first.

    The MIME layer may need to know the length or read twice; a temporary
    file gives it that without holding the message in memory.
    """
    if path is not None and path != "-":
        return open(path, "rb")
    spool = tempfile.TemporaryFile()
    try:
        shutil.copyfileobj(sys.stdin.buffer, spool, CHUNK)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def read_headers(infile: IO[bytes], limit: int = 1 << 20) -> bytes:
    """The header block of the message (up to the first empty line, at most ``limit`` bytes); the file is rewound."""
    start = infile.tell()
    lines = []
    size = 0
    while size < limit:
        line = infile.readline(limit - size)
        if line in (b"", b"\n", b"\r\n"):
            break
        lines.append(line)
        size += len(line)
    infile.seek(start)
    return b"".join(lines)


def check_output_directory(path: str) -> None:
    """Raise ``ConfigError`` (exit 2) before any work when the directory that is to hold ``path`` does not exist."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise errors.ConfigError(f"output {path}: directory {directory} does not exist")


class Output:
    """Where a command writes: a 0600 temporary file, committed only on success.

    With a path, the temporary file lives in the same directory and is
    renamed over the path. Without one, it is anonymous and copied to stdout.
    Leaving the ``with`` block by an exception removes it and writes nothing.
    """

    def __init__(self, path: str | None) -> None:
        self.path = None if path in (None, "-") else path
        self.file: IO[bytes] | None = None
        self._tmp_name: str | None = None

    def __enter__(self) -> Output:
        if self.path is None:
            self.file = tempfile.TemporaryFile()
            return self
        check_output_directory(self.path)
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, self._tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(self.path)}.", suffix=".tmp")
        self.file = os.fdopen(fd, "w+b")
        return self

    def commit(self) -> None:
        """Publish the output: rename it into place, or copy it to stdout."""
        assert self.file is not None
        if self.path is None:
            self.file.seek(0)
            out = sys.stdout.buffer
            shutil.copyfileobj(self.file, out, CHUNK)
            out.flush()
        else:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            assert self._tmp_name is not None
            os.replace(self._tmp_name, self.path)
            self._tmp_name = None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.file is not None:
            self.file.close()
        if self._tmp_name is not None:
            try:
                os.unlink(self._tmp_name)
            except FileNotFoundError:
                pass

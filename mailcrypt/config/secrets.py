"""Reading files that hold secrets: private keys, passphrases, passwords, the proxy's user file.

``read_private`` is the one way mailcrypt reads such a file. It opens the
path first (refusing a symbolic link, ``O_NOFOLLOW``, and never waiting on a
FIFO, ``O_NONBLOCK``), then judges the open descriptor with ``fstat``: a
regular file, owned by the user running mailcrypt, with no permission bit
for group or others. It reads the bytes from that same descriptor, so the
file that was checked is the file that is read; a check by name followed by
a read by name would let the file be swapped in between. ``check_private``
makes the same checks without reading, for configuration that is validated
long before the secret is needed. ``read_secret_line`` is the first line of
such a file, for passphrases and passwords.

Every refusal is one ``errors.ConfigError`` line naming the file and what is
wrong with it; the content never appears in a message. A file that does not
exist raises ``errors.MissingSecretFile``, a ``ConfigError`` a caller may
treat as "none yet".

What it won't do: decide where secrets live, create or repair files (it
says which ``chmod`` to run), or run anywhere but on POSIX (like the rest of
mailcrypt).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from mailcrypt import errors

__all__ = ["read_private", "check_private", "read_secret_line", "SECRET_LINE_LIMIT"]

#: The largest passphrase or password file read (a passphrase is one line).
SECRET_LINE_LIMIT = 64 * 1024

# No symbolic link at the last component, no controlling terminal, no wait
# for a writer when the path is a FIFO, and no descriptor left to children.
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


def _open_checked(path: Path, what: str) -> int:
    """A descriptor for ``path`` that passed every check; the caller closes it."""
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        raise errors.MissingSecretFile(
            f"{what} {path} does not exist (expected a file, mode 0600)", path=path
        ) from None
    except PermissionError:
        raise errors.ConfigError(f"{what} {path} is not readable (permission denied)") from None
    except OSError as exc:
        # Linux says ELOOP for a symbolic link under O_NOFOLLOW; some systems say EMLINK.
        if exc.errno in (errno.ELOOP, errno.EMLINK) and path.is_symlink():
            raise errors.ConfigError(
                f"{what} {path} is a symbolic link; name the file itself (mode 0600)"
            ) from None
        raise errors.ConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    try:
        _check(os.fstat(fd), path, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check(st: os.stat_result, path: Path, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise errors.ConfigError(f"{what} {path} is not a regular file (expected a file, mode 0600)")
    if st.st_uid != os.geteuid():
        raise errors.ConfigError(
            f"{what} {path} belongs to another user (uid {st.st_uid}); expected a file of uid {os.geteuid()}"
        )
    # A secret that group or others may read (or replace) is already spent.
    if st.st_mode & 0o077:
        raise errors.ConfigError(
            f"{what} {path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"expected mode 0600: run chmod 600 {path}"
        )


def _path(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError("path must be a str or os.PathLike")
    return Path(path)


def read_private(path: str | os.PathLike[str], *, what: str, limit: int | None = None) -> bytes:
    """The content of a file only its owner can read.

    ``what`` names the file for messages ("private key", "FILE: keys.passphrase_file:
    passphrase file"); the message is ``WHAT PATH PROBLEM``. ``limit`` bounds
    the size read: a longer file is refused, not cut. Raises
    ``errors.MissingSecretFile`` when there is no such file and
    ``errors.ConfigError`` for a symbolic link, anything but a regular file,
    a file of another user, one with group or other permission bits, one
    over ``limit`` or one that cannot be read.
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    where = _path(path)
    fd = _open_checked(where, what)
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read() if limit is None else f.read(limit + 1)
        except OSError as exc:
            raise errors.ConfigError(f"{what} {where}: {exc.strerror or exc}") from None
    if limit is not None and len(data) > limit:
        raise errors.ConfigError(f"{what} {where} is larger than {limit} bytes; is it the right file?")
    return data


def check_private(path: str | os.PathLike[str], *, what: str) -> None:
    """Make the checks of ``read_private`` without reading the file.

    For settings checked when the configuration is loaded; the secret is
    read (and checked again) only when it is needed. Raises what
    ``read_private`` raises.
    """
    os.close(_open_checked(_path(path), what))


def read_secret_line(path: str | os.PathLike[str], *, what: str) -> bytes:
    """The first line of a private file, without its line ending: a passphrase or password.

    Raises what ``read_private`` raises, and ``errors.ConfigError`` when the
    first line is empty.
    """
    data = read_private(path, what=what, limit=SECRET_LINE_LIMIT)
    line = data.split(b"\n", 1)[0].removesuffix(b"\r")
    if not line:
        raise errors.ConfigError(f"{what} {os.fspath(path)} is empty (expected the secret on its first line)")
    return line

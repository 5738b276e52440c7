"""Who may send through the proxy: the user file and the guard against password guessing.

``UserStore`` keeps the proxy's AUTH users (``mailcrypt users add|remove|list``)
in one file, mode 0600, one ``name:hash`` line each. The hash is scrypt
(RFC 7914) with a random 16-byte salt and its parameters written beside it,
so that they can be raised later without breaking old entries. Passwords are
compared in constant time, and an unknown name costs as much as a wrong
password, so timing tells nobody which names exist. Every change is written
to a temporary file, synced and renamed over the old one.

``LoginGuard`` slows down and then stops guessing: each failed login from a
client address doubles the wait before the answer, and after
``max_failures`` failures within the window that address gets no further
AUTH until the window has passed.

What it won't do: speak SMTP (``handler`` does), or keep a password
anywhere but in the caller's memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailcrypt import errors
from mailcrypt.config import read_private

__all__ = ["UserStore", "LoginGuard", "new_password", "valid_name"]

# RFC 7914 §2 parameters: 16 MiB of memory and about 50 ms a check on a laptop.
_N, _R, _P = 2**14, 8, 1
_DKLEN = 32
_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
#: The largest user file read: some 150 bytes a user, so tens of thousands of users.
USER_FILE_LIMIT = 16 * 1024 * 1024


def valid_name(name: str) -> bool:
    """A user name: 1 to 64 letters, digits or ``. _ @ + -``."""
    return bool(_NAME.fullmatch(name))


def new_password() -> str:
    """A random password for a new user: 144 bits, URL-safe base64 (24 characters)."""
    return secrets.token_urlsafe(18)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _hash(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20), dklen=_DKLEN)


def hash_password(password: bytes) -> str:
    """The stored form of a password: ``scrypt$N$r$p$salt$hash`` (base64 salt and hash)."""
    salt = os.urandom(16)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(_hash(password, salt, _N, _R, _P))}"


# An entry to check unknown names against, so that they take as long as known ones.
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def check_password(password: bytes, stored: str) -> bool:
    """True when ``password`` matches the stored form; False for a wrong or unreadable one."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _hash(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


class UserStore:
    """The user file (see the module docstring). Reads it afresh on every check, so changes apply at once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, str]:
        try:
            data = read_private(self.path, what="the proxy's user file", limit=USER_FILE_LIMIT)
        except errors.MissingSecretFile:
            # No file yet: no users (``mailcrypt users add`` creates it).
            return {}
        users = {}
        for line in data.decode("utf-8").splitlines():
            name, sep, stored = line.partition(":")
            if sep and valid_name(name):
                users[name] = stored
        return users

    def _write(self, users: dict[str, str]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(f"{name}:{stored}\n" for name, stored in sorted(users.items())))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
        os.chmod(self.path, 0o600)

    def names(self) -> list[str]:
        """The user names, sorted."""
        return sorted(self._read())

    def add(self, name: str, password: bytes, *, replace: bool = False) -> None:
        """Add a user (or with ``replace`` set a new password). Raises ``UsageError`` for a bad or taken name."""
        if not valid_name(name):
            raise errors.UsageError(f"user name {name!r}: use 1 to 64 letters, digits or . _ @ + -")
        if len(password) < 8:
            raise errors.UsageError("the password must be at least 8 characters long")
        users = self._read()
        if name in users and not replace:
            raise errors.UsageError(f"user {name} exists already; remove it first to set a new password")
        users[name] = hash_password(password)
        self._write(users)

    def remove(self, name: str) -> None:
        """Remove a user. Raises ``UsageError`` when there is none of that name."""
        users = self._read()
        if name not in users:
            raise errors.UsageError(f"no proxy user named {name!r}")
        del users[name]
        self._write(users)

    def verify(self, name: str, password: bytes) -> bool:
        """True for a known user with this password. CPU-bound (scrypt): call it off the event loop."""
        stored = self._read().get(name)
        ok = check_password(password, stored if stored is not None else _DUMMY)
        return ok and stored is not None


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)


class LoginGuard:
    """Failed logins per client address (see the module docstring).

    ``base_delay`` is the wait after the first failure; it doubles with each
    further one up to ``max_delay``. ``clock`` is ``time.monotonic`` unless
    a test gives another.
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 900.0,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def _recent(self, client: str) -> list[float]:
        record = self._records.get(client)
        if record is None:
            return []
        cutoff = self._clock() - self.window
        record.failures = [t for t in record.failures if t > cutoff]
        if not record.failures:
            del self._records[client]
            return []
        return record.failures

    def locked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        recent = self._recent(client)
        if len(recent) < self.max_failures:
            return 0.0
        return max(0.0, recent[0] + self.window - self._clock())

    def failed(self, client: str) -> float:
        """Record a failure; return how long to wait before answering it."""
        self._recent(client)
        record = self._records.setdefault(client, _Record())
        record.failures.append(self._clock())
        return min(self.max_delay, self.base_delay * 2 ** (len(record.failures) - 1))

    def succeeded(self, client: str) -> None:
        """Forget the failures of ``client``."""
        self._records.pop(client, None)

"""Who may send through the proxy, and as whom: the user file.

``UserStore`` keeps the proxy's AUTH users (``mailcrypt users add|remove|list``)
in one file, mode 0600, one ``name:hash:addresses`` line each. The hash is scrypt
(RFC 7914) with a random 16-byte salt and its parameters written beside it,
so that they can be raised later without breaking old entries. Passwords are
compared in constant time, and an unknown name costs as much as a wrong
password, so timing tells nobody which names exist. Every change is written
to a temporary file, synced and renamed over the old one.

The addresses are the sender addresses an administrator assigned to the
login (``users add NAME --address A``, DESIGN.md §6): the login may send
only as them and sign only with their identities. They are written
comma-separated, each percent-encoded, in their ``normalize_address`` form.
A line of an older file has no third field: that login has no address and
may send as nobody until one is assigned (the safe choice: an old file
cannot tell which address a login was meant to have, and guessing "the
login's name" or "the home's address" could let one user sign as another).

The file is read again whenever its inode, size or modification time
changes (one ``stat`` a check), so ``users add`` and ``users remove``
apply to the running proxy at once.

What it won't do: speak SMTP (``handler`` does), slow down guessing
(``guard`` does), or keep a password anywhere but in the caller's memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from mailcrypt import errors
from mailcrypt.addresses import address_key, normalize_address
from mailcrypt.config import read_private

__all__ = ["User", "UserStore", "new_password", "valid_name"]

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


@dataclass(frozen=True)
class User:
    """One line of the user file: the name, the stored password hash and the assigned addresses."""

    name: str
    stored: str
    addresses: tuple[str, ...] = ()

    def may_send_as(self, address: str) -> bool:
        """True when ``address`` is one of the login's (compared as ``mailcrypt.addresses.address_key``)."""
        key = address_key(address)
        return any(address_key(a) == key for a in self.addresses)

    def line(self) -> str:
        addresses = ",".join(quote(a, safe="@.+-_") for a in self.addresses)
        return f"{self.name}:{self.stored}:{addresses}\n"


def _parse(line: str) -> User | None:
    name, sep, rest = line.partition(":")
    if not sep or not valid_name(name):
        return None
    # The hash has no ":" (scrypt$N$r$p$salt$hash, base64): the rest is the addresses.
    stored, _, addresses = rest.partition(":")
    return User(name, stored, tuple(unquote(a) for a in addresses.split(",") if a))


def _addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for address in addresses:
        normal = normalize_address(address)
        if all(address_key(a) != address_key(normal) for a in out):
            out.append(normal)
    return tuple(out)


class UserStore:
    """The user file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, ...] | None = None
        self._users: dict[str, User] = {}

    def _read(self) -> dict[str, User]:
        try:
            # lstat: a file swapped for a symbolic link is a change (read_private then refuses it).
            st = os.lstat(self.path)
        except FileNotFoundError:
            # No file yet: no users (``mailcrypt users add`` creates it).
            self._seen, self._users = None, {}
            return {}
        # chmod and chown change only ctime and mode/owner: a file made readable by others
        # must be read again, so that read_private refuses it.
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)
        if stamp == self._seen:
            return self._users
        try:
            data = read_private(self.path, what="the proxy's user file", limit=USER_FILE_LIMIT)
        except errors.MissingSecretFile:
            return {}
        users = {}
        for line in data.decode("utf-8").splitlines():
            user = _parse(line)
            if user is not None:
                users[user.name] = user
        self._seen, self._users = stamp, users
        return users

    def _write(self, users: dict[str, User]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(users[name].line() for name in sorted(users)))
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

    def users(self) -> list[User]:
        """Every user, sorted by name."""
        users = self._read()
        return [users[name] for name in sorted(users)]

    def get(self, name: str) -> User | None:
        """The user of that name, or None."""
        return self._read().get(name)

    def add(self, name: str, password: bytes, *, replace: bool = False, addresses: Iterable[str] = ()) -> None:
        """Add a user (or with ``replace`` set a new password and addresses).

        Raises ``UsageError`` for a bad or taken name, a short password or an
        address that is not ``local@domain``.
        """
        if not valid_name(name):
            raise errors.UsageError(f"user name {name!r}: use 1 to 64 letters, digits or . _ @ + -")
        if len(password) < 8:
            raise errors.UsageError("the password must be at least 8 characters long")
        assigned = _addresses(addresses)
        users = dict(self._read())
        if name in users and not replace:
            raise errors.UsageError(f"user {name} exists already; remove it first to set a new password")
        users[name] = User(name, hash_password(password), assigned)
        self._write(users)

    def assign(self, name: str, addresses: Iterable[str]) -> User:
        """Add sender addresses to an existing user, keeping its password. Raises ``UsageError``."""
        users = dict(self._read())
        user = users.get(name)
        if user is None:
            raise errors.UsageError(f"no proxy user named {name!r}")
        users[name] = User(name, user.stored, _addresses((*user.addresses, *addresses)))
        self._write(users)
        return users[name]

    def remove(self, name: str) -> None:
        """Remove a user. Raises ``UsageError`` when there is none of that name."""
        users = dict(self._read())
        if name not in users:
            raise errors.UsageError(f"no proxy user named {name!r}")
        del users[name]
        self._write(users)

    def verify(self, name: str, password: bytes) -> bool:
        """True for a known user with this password. CPU-bound (scrypt): call it off the event loop."""
        user = self._read().get(name)
        ok = check_password(password, user.stored if user is not None else _DUMMY)
        return ok and user is not None

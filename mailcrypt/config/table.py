"""Reading one TOML table of ``config.toml`` with the key named in every error.

A ``Table`` hands out typed values (string, integer, choice, path, address,
...) and remembers which keys were asked for; ``finish`` then refuses every
key nobody asked for, with a guess at what was meant. Each error is one
``errors.ConfigError`` line: ``FILE: dotted.key: expected WHAT, got VALUE``.
Paths are resolved against the home.

This module knows nothing about which settings exist; ``mailcrypt.config``
does. It reads no secret (``secrets`` checks and reads secret files).
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar, overload

from mailcrypt import errors

__all__ = ["Table", "fail", "format_key"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MISSING = object()
_V = TypeVar("_V")
_D = TypeVar("_D")


def _anything(value: object) -> bool:
    return True


def format_key(parts: tuple[str | int, ...]) -> str:
    """A dotted TOML key: ``policy.domains."example.org".policy``, ``accounts[1].host``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _BARE_KEY.fullmatch(part) else '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out += f".{text}" if out else text
    return out


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date/time"
    return type(value).__name__


Key = str | int | tuple[str | int, ...]


def fail(table: Table, key: Key, expected: str) -> NoReturn:
    """Raise ``errors.ConfigError``: ``FILE: KEY: expected EXPECTED``."""
    raise errors.ConfigError(f"{table.describe(key)}: expected {expected}")


class Table:
    """One TOML table at a dotted position in the configuration file."""

    def __init__(self, data: dict[str, object], where: tuple[str | int, ...], file: Path, home: Path) -> None:
        self.data = data
        self.where = where
        self.file = file
        self.home = home
        self._used: set[str] = set()

    # -------------------------------------------------------------- naming

    def describe(self, key: Key | None = None) -> str:
        """``FILE: dotted.key`` for messages; ``key`` may be a tuple such as ("trust_anchors", 0)."""
        if key is None:
            parts = self.where
        else:
            parts = (*self.where, *(key if isinstance(key, tuple) else (key,)))
        return f"{self.file}: {format_key(parts) or '(top level)'}"

    def keys(self) -> list[str]:
        return list(self.data)

    def _get(self, key: str, required: bool) -> object:
        self._used.add(key)
        if key in self.data:
            return self.data[key]
        if required:
            fail(self, key, "this setting; it is required")
        return _MISSING

    def _typed(
        self,
        key: str,
        default: _D,
        kind: type[_V],
        expected: str,
        *,
        required: bool = False,
        check: Callable[[_V], bool] = _anything,
    ) -> _V | _D:
        """The value of ``key`` if it is a ``kind`` that passes ``check``; ``default`` if absent.

        The one way every getter below reads a value: anything else is the
        ``ConfigError`` ``expected EXPECTED, got VALUE``.
        """
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if not isinstance(value, kind) or not check(value):
            fail(self, key, f"{expected}, got {_kind(value)}")
        return value

    # -------------------------------------------------------------- tables

    def table(self, key: str) -> Table:
        """The sub-table ``key``, empty if absent."""
        found = self.optional_table(key)
        return found if found is not None else Table({}, (*self.where, key), self.file, self.home)

    def optional_table(self, key: str) -> Table | None:
        """The sub-table ``key``, or None if absent."""
        value: dict[str, object] | None = self._typed(key, None, dict, f"a table [{format_key((*self.where, key))}]")
        return None if value is None else Table(value, (*self.where, key), self.file, self.home)

    def table_list(self, key: str) -> list[Table]:
        """The array of tables ``[[key]]``, empty if absent."""
        expected = f"an array of tables [[{format_key((*self.where, key))}]]"
        value: list[Any] = self._typed(key, [], list, expected, check=lambda v: all(isinstance(t, dict) for t in v))
        return [Table(v, (*self.where, key, i), self.file, self.home) for i, v in enumerate(value)]

    def finish(self) -> None:
        """Refuse every key that was not asked for."""
        unknown = [k for k in self.data if k not in self._used]
        if not unknown:
            return
        key = unknown[0]
        known = sorted(self._used)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {format_key((*self.where, close[0]))}?)" if close else ""
        where = f"[{format_key(self.where)}]" if self.where else "the top level"
        raise errors.ConfigError(
            f"{self.describe(key)}: unknown setting{hint}; expected one of {', '.join(known)} in {where}"
        )

    # -------------------------------------------------------------- scalars

    def string(self, key: str, default: str | None, *, required: bool = False) -> str | None:
        return self._typed(key, default, str, "a string", required=required)

    @overload
    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str: ...
    @overload
    def choice(self, key: str, default: None, choices: tuple[str, ...]) -> str | None: ...
    def choice(self, key: str, default: str | None, choices: tuple[str, ...]) -> str | None:
        expected = f"one of {', '.join(repr(c) for c in choices)}"
        return self._typed(key, default, str, expected, check=lambda v: v in choices)

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        def in_range(value: int) -> bool:
            # A TOML boolean is a Python int too, and no number.
            return not isinstance(value, bool) and low <= value <= high

        return self._typed(key, default, int, f"a whole number from {low} to {high}", check=in_range)

    @overload
    def boolean(self, key: str, default: bool) -> bool: ...
    @overload
    def boolean(self, key: str, default: None) -> bool | None: ...
    def boolean(self, key: str, default: bool | None) -> bool | None:
        return self._typed(key, default, bool, "true or false")

    def string_list(self, key: str, default: list[str]) -> list[str]:
        value: list[Any] = self._typed(
            key, default, list, "an array of strings", check=lambda v: all(isinstance(s, str) for s in v)
        )
        return list(value)

    # -------------------------------------------------------------- paths

    def _resolve(self, text: str) -> Path:
        return Path(os.path.abspath(self.home / Path(text).expanduser()))

    def path(self, key: str, default: str | None) -> Path | None:
        """A path, resolved against the home (``~`` is expanded)."""
        text = self.string(key, default)
        if text is None:
            return None
        if not text or "\0" in text:
            fail(self, key, f"a file or directory path, got {text!r}")
        return self._resolve(text)

    def path_list(self, key: str) -> list[Path]:
        items = self.string_list(key, [])
        for i, text in enumerate(items):
            if not text or "\0" in text:
                fail(self, key, f"an array of file paths, and item {i} is {text!r}")
        return [self._resolve(t) for t in items]

    def certificate_file(self, key: Key, path: Path) -> int:
        """Check that ``path`` is a readable file of PEM or DER certificates; return how many."""
        from mailcrypt.pki import load_certificates

        try:
            data = path.read_bytes()
        except FileNotFoundError:
            fail(self, key, f"a certificate file, but {path} does not exist")
        except IsADirectoryError:
            fail(self, key, f"a certificate file, but {path} is a directory")
        except OSError as exc:
            fail(self, key, f"a readable certificate file, but {path}: {exc.strerror or exc}")
        try:
            return len(load_certificates(data))
        except errors.MalformedCertificate as exc:
            fail(self, key, f"a PEM or DER certificate file, but {path} holds no readable certificate ({exc.reason})")

    # -------------------------------------------------------------- addresses

    def address(self, key: str, default: str | None) -> str | None:
        value = self.string(key, default)
        if value is None:
            return None
        return self.check_address(key, value)

    def check_address(self, key: str, value: str) -> str:
        """``value`` as a normalised e-mail address, or an error naming ``key``."""
        from mailcrypt.addresses import normalize_address

        try:
            return normalize_address(value)
        except errors.UsageError:
            fail(self, key, f"an e-mail address such as alice@example.org, got {value!r}")

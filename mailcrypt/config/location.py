"""Where the home directory is: ``--home DIR``, else ``$MAILCRYPT_HOME``, else the platform's default.

The default is the user configuration directory (``$XDG_CONFIG_HOME/mailcrypt``
or ``~/.config/mailcrypt`` on Linux and other Unix systems,
``~/Library/Application Support/mailcrypt`` on macOS, ``%APPDATA%\\mailcrypt``
on Windows). Commands given key files ask only whether a home exists, so
this module imports nothing of the settings' parser. ``Below`` names the
places inside a directory (the home, the key directory) once each.

What it won't do: read or create anything.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import overload

__all__ = ["HOME_ENV", "CONFIG_NAME", "Below", "default_home", "resolve_home"]

HOME_ENV = "MAILCRYPT_HOME"
CONFIG_NAME = "config.toml"


# ------------------------------------------------------------------ the home


def default_home(*, environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The platform's user configuration directory for mailcrypt (no extra dependency)."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform.startswith("win"):
        appdata = env.get("APPDATA")
        base = Path(appdata) if appdata else Path(env.get("USERPROFILE", "~")).expanduser() / "AppData" / "Roaming"
        return base / "mailcrypt"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    if platform == "darwin":
        return home / "Library" / "Application Support" / "mailcrypt"
    # XDG Base Directory spec: a relative $XDG_CONFIG_HOME is invalid and ignored.
    xdg = env.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"
    return base / "mailcrypt"


def resolve_home(home: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None) -> Path:
    """The home directory: ``home`` (--home), else $MAILCRYPT_HOME, else ``default_home()``.

    The result is absolute; it need not exist yet.
    """
    env = os.environ if environ is None else environ
    if home is not None and os.fspath(home) != "":
        chosen = Path(home)
    elif env.get(HOME_ENV):
        chosen = Path(env[HOME_ENV])
    else:
        chosen = default_home(environ=env)
    return Path(os.path.abspath(chosen.expanduser()))


# ------------------------------------------------------------------ places in a directory


class Below:
    """A read-only attribute: the path ``name`` inside the directory the object's ``root`` attribute names.

    A directory layout is then a table, one line a place, e.g.
    ``outbox = Below("outbox", root="home")``; the attribute follows ``root``
    and is never stored apart from it.
    """

    def __init__(self, name: str, *, root: str = "root") -> None:
        self.name = name
        self.root = root

    @overload
    def __get__(self, instance: None, owner: type) -> Below: ...
    @overload
    def __get__(self, instance: object, owner: type) -> Path: ...
    def __get__(self, instance: object | None, owner: type) -> Below | Path:
        if instance is None:
            return self
        root: Path = getattr(instance, self.root)
        return root / self.name

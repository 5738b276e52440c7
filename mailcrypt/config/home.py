"""The home's ``config.toml``, read into typed, checked settings.

Where the home is (``resolve_home``) is the business of ``location``.
``load_settings`` reads the file with ``tomllib`` into frozen dataclasses, one
per section of DESIGN.md §5, and checks every value. Every mistake becomes one
``errors.ConfigError`` naming the file, the dotted key and what is expected
(an unknown key, a wrong type, a bad address, a missing or group-readable
file): never a traceback. Relative paths are resolved against the home.
``write_default_config`` writes the file ``mailcrypt init`` starts with.
The settings types live in ``model``, the checks of each section in
``parse``.

What it won't do: read secrets (``SecretRef.read`` does, when asked),
open the key directory, or create anything but the configuration file.
"""

from __future__ import annotations

import datetime
import os
import tomllib
from pathlib import Path

from mailcrypt import errors
from mailcrypt.config.location import CONFIG_NAME
from mailcrypt.config.model import Settings
from mailcrypt.config.parse import parse_settings

__all__ = ["load_settings", "write_default_config"]

# ------------------------------------------------------------------ loading


def load_settings(home: Path, *, missing_ok: bool = False) -> Settings:
    """Read and check ``home/config.toml``.

    With ``missing_ok`` a missing file gives the defaults (a home that was
    never initialised); otherwise it is an error that says to run
    ``mailcrypt init``. Raises ``errors.ConfigError`` for every problem.
    """
    home = Path(os.path.abspath(home))
    path = home / CONFIG_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return parse_settings({}, home=home, config_file=path)
        if not home.exists():
            raise errors.ConfigError(
                f"{path}: no such file: the home {home} does not exist; run: mailcrypt init ADDRESS"
            ) from None
        raise errors.ConfigError(f"{path}: no such file; run: mailcrypt init ADDRESS") from None
    except IsADirectoryError:
        raise errors.ConfigError(f"{path}: is a directory, expected the configuration file") from None
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError:
        raise errors.ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_settings(document, home=home, config_file=path)


# ------------------------------------------------------------------ writing


def _toml_string(value: str) -> str:
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in out):
        raise ValueError("control character in a configuration value")
    return f'"{out}"'


def write_default_config(home: Path, address: str, *, passphrase_file: Path | None = None) -> Path:
    """Write the ``config.toml`` that ``mailcrypt init ADDRESS`` starts with; return its path.

    The home is created (mode 0700) if needed. The address is checked and
    normalised. Raises ``errors.ConfigError`` if a configuration already
    exists: an existing home is never overwritten.
    """
    from mailcrypt.addresses import normalize_address

    address = normalize_address(address)
    home = Path(os.path.abspath(home))
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / CONFIG_NAME
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    passphrase_line = (
        f"passphrase_file = {_toml_string(os.fspath(passphrase_file))}   # mode 0600\n"
        if passphrase_file is not None
        else '# passphrase_file = "passphrase"   # a 0600 file; else $MAILCRYPT_PASSPHRASE or a prompt\n'
    )
    text = (
        f"# mailcrypt configuration, written by `mailcrypt init` on {stamp}.\n"
        "# Every setting, with its default, is described in config/mailcrypt.example.toml.\n"
        "# Relative paths are relative to this directory.\n"
        "\n"
        "[identity]\n"
        f"address = {_toml_string(address)}\n"
        "\n"
        "[keys]\n"
        'directory = "keys"\n'
        "trust_anchors = []\n"
        "harvest = true\n"
        f"{passphrase_line}"
        "\n"
        "[policy]\n"
        'default = "require"         # require | opportunistic | plaintext\n'
        'profile = "compatible"      # compatible | modern\n'
        "\n"
        "[proxy]\n"
        'listen = "127.0.0.1:10587"\n'
        'auth = "required"\n'
        "\n"
        "# No [upstream]: outgoing mail is delivered into outbox/ (a Maildir).\n"
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise errors.ConfigError(f"{path} already exists: this home is already set up") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return path

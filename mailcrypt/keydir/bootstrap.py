"""``mailcrypt init ADDRESS``: a new home with a configuration and a first identity.

It creates the home (mode 0700), writes ``config.toml`` naming the address,
creates the key directory and generates an identity for the address, stored
encrypted under the passphrase source's passphrase, or unencrypted when the
source is ``PassphraseSource.unencrypted()`` (``--no-passphrase``, for
unattended setups: the result says so and a warning is logged, and the
command line must say it loudly too).

An existing configuration is never overwritten. It does not make the proxy's
TLS certificate (the proxy's issue) or any state files.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from mailcrypt import config, errors
from mailcrypt.addresses import normalize_address
from mailcrypt.keydir import keygen
from mailcrypt.keydir.directory import KeyDirectory
from mailcrypt.keydir.index import CertificateEntry
from mailcrypt.keydir.passphrase import PassphraseSource

__all__ = ["InitResult", "init_home"]


@dataclass(frozen=True)
class InitResult:
    """What ``init_home`` made."""

    home: Path
    config_file: Path
    identity: CertificateEntry
    #: False when the private key was stored without a passphrase.
    encrypted: bool


def init_home(
    home: Path,
    address: str,
    *,
    passphrase: PassphraseSource,
    key_type: str = keygen.DEFAULT_KEY_TYPE,
    days: int = 730,
    passphrase_file: Path | None = None,
    now: datetime.datetime | None = None,
) -> InitResult:
    """Create a home for ``address`` (see the module docstring).

    ``passphrase_file``, if given, is written into ``[keys] passphrase_file``.
    Raises ``errors.UsageError`` for a bad address or key type and
    ``errors.ConfigError`` when the home already has a configuration or no
    passphrase can be found. Nothing is left behind on failure except the
    (empty) directories.
    """
    address = normalize_address(address)
    if key_type not in keygen.KEY_TYPES:
        raise errors.UsageError(f"unknown key type {key_type!r} (choose from {', '.join(keygen.KEY_TYPES)})")
    home = Path(home)
    config_file = home / config.CONFIG_NAME
    if config_file.exists():
        raise errors.ConfigError(f"{config_file} already exists: this home is already set up")
    if not passphrase.stores_unencrypted:
        # Ask before the slow key generation, and before anything is written.
        passphrase.get_new(f"the private key of {address}")
    key, certificate = keygen.generate_identity(address, key_type=key_type, days=days, now=now)
    config_file = config.write_default_config(home, address, passphrase_file=passphrase_file)
    try:
        settings = config.load_settings(home)
        directory = KeyDirectory.from_settings(settings)
        entry = directory.add_identity(key, certificate, passphrase=passphrase, source="mailcrypt init", now=now)
    except BaseException:
        config_file.unlink(missing_ok=True)
        raise
    return InitResult(home, config_file, entry, not passphrase.stores_unencrypted)

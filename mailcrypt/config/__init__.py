"""Configuration: the home directory and its ``config.toml``, read into typed, checked settings.

``location`` finds the home, ``home`` reads its file; ``model`` holds the frozen
settings types, ``parse`` the checks of each section, ``table`` the typed
reader of TOML tables they share, ``secrets`` the one reader of files that
hold secrets. The names below are the package's API;
the modules are its private parts.
"""

from typing import TYPE_CHECKING

from mailcrypt.lazy import exports

# The names below are imported when first used (mailcrypt.lazy); mypy,
# import-linter and readers see them here.
if TYPE_CHECKING:
    from mailcrypt.config.home import load_settings, write_default_config
    from mailcrypt.config.location import CONFIG_NAME, HOME_ENV, Below, default_home, resolve_home
    from mailcrypt.config.model import (
        AccountSettings,
        IdentitySettings,
        KeySettings,
        ProxySettings,
        ReplaySettings,
        SecretRef,
        Settings,
        Target,
        UpstreamSettings,
    )
    from mailcrypt.config.parse import is_loopback, parse_host_port, parse_settings
    from mailcrypt.config.secrets import check_private, read_private, read_secret_line

__all__ = [
    "AccountSettings",
    "Below",
    "check_private",
    "CONFIG_NAME",
    "default_home",
    "HOME_ENV",
    "IdentitySettings",
    "is_loopback",
    "KeySettings",
    "load_settings",
    "parse_host_port",
    "parse_settings",
    "ProxySettings",
    "read_private",
    "read_secret_line",
    "ReplaySettings",
    "resolve_home",
    "SecretRef",
    "Settings",
    "Target",
    "UpstreamSettings",
    "write_default_config",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, __file__)

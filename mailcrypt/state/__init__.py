"""State: the one SQLite state store, the replay guard, and durable writes (DESIGN.md §4).

- ``database``: opening an SQLite file and its transactions (the store's and the key index's);
- ``store``: the SQLite store (WAL);
- ``replay``: the replay guard on the store (signature or envelope digests);
- ``durable``: write-new, fsync, rename, and directory fsync.

The names below are the package's API; the modules are its private parts.
"""

from typing import TYPE_CHECKING

from mailcrypt.lazy import exports

# The names below are imported when first used (mailcrypt.lazy); mypy,
# import-linter and readers see them here.
if TYPE_CHECKING:
    from mailcrypt.state.database import open_database, transaction
    from mailcrypt.state.durable import fsync_dir
    from mailcrypt.state.replay import ReplayFacts, ReplayGuard
    from mailcrypt.state.store import Store

__all__ = [
    "fsync_dir",
    "open_database",
    "ReplayFacts",
    "ReplayGuard",
    "Store",
    "transaction",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, __file__)

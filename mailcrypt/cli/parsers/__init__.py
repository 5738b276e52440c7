"""The arguments of every ``mailcrypt`` subcommand, one module per subcommand (DESIGN.md §6).

Each module has a ``register(commands)`` that adds its subcommand's parser,
arguments and help to the ``mailcrypt`` command's subparsers, and names its
handler as ``"module:function"`` inside ``mailcrypt.cli``; ``mailcrypt.cli``
only assembles them. What the parsers share (the common options, the exit
status table, the help layout) is in ``common``.

What these modules won't do: import a handler, or anything beyond argparse,
so that ``mailcrypt --help`` starts fast; the handler module is imported
only when its command runs.
"""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers import decrypt, encrypt, fetch, init, keys, proxy, quarantine, users, verify

# Not typing.TYPE_CHECKING: importing typing would cost every start (see mailcrypt.cli).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["REGISTRARS"]

# Every subcommand's ``register``, in the order of the command list in
# ``mailcrypt --help``. They are collected here, not in ``mailcrypt.cli``,
# because there the names ``keys``, ``proxy`` and ``fetch`` are rebound to
# the handler modules of the same names as soon as one of them is imported.
REGISTRARS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    init.register,
    encrypt.register,
    decrypt.register,
    verify.register,
    keys.register,
    proxy.register,
    users.register,
    fetch.register,
    quarantine.register,
)

"""``mailcrypt users ...`` (add, remove, list), the proxy's AUTH users: their descriptions and arguments.

The handlers are the ``users_*`` functions of ``mailcrypt.cli.proxy``.
"""

from __future__ import annotations

import argparse

__all__ = ["ADD", "add", "remove"]

#: The description of ``mailcrypt users add`` in its help.
ADD = (
    "Add a user who may send through the proxy, as the addresses given with --address only (and "
    "signed only with their identities). The password is read from standard input (first line) "
    "when it is not a terminal, else asked for twice; it is stored as an scrypt hash. For an "
    "existing user, --address adds addresses and keeps the password."
)


def add(uadd: argparse.ArgumentParser) -> None:
    """Add the arguments of ``users add``."""
    uadd.add_argument("name", metavar="NAME")
    uadd.add_argument(
        "--address",
        action="append",
        metavar="A",
        help="an address the user may send as (repeatable)",
    )
    uadd.add_argument(
        "--replace", action="store_true", help="set a new password (and the --address list) for an existing user"
    )


def remove(urem: argparse.ArgumentParser) -> None:
    """The argument of ``users remove``: the user's name."""
    urem.add_argument("name", metavar="NAME")

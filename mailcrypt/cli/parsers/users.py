"""``mailcrypt users ...`` (add, remove, list), the proxy's AUTH users: their arguments.

The handlers are the ``users_*`` functions of ``mailcrypt.cli.proxy``.
"""

from __future__ import annotations

import argparse

from mailcrypt.cli.parsers.common import add_command, add_group

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``users`` and its subcommands to the ``mailcrypt`` command."""
    users_commands = add_group(commands, "users", "manage the proxy's AUTH users")
    uadd = add_command(
        users_commands,
        "add",
        "proxy:users_add",
        "add a proxy user",
        "Add a user who may send through the proxy, as the addresses given with --address only (and "
        "signed only with their identities). The password is read from standard input (first line) "
        "when it is not a terminal, else asked for twice; it is stored as an scrypt hash. For an "
        "existing user, --address adds addresses and keeps the password.",
    )
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
    urem = add_command(users_commands, "remove", "proxy:users_remove", "remove a proxy user")
    urem.add_argument("name", metavar="NAME")
    add_command(users_commands, "list", "proxy:users_list", "list the proxy users")

"""What the subcommand parsers share: the command table's entry, the common options, the exit status, the help layout.

What it won't do: parse anything itself or import a handler; at module
level only argparse loads (see ``mailcrypt.cli``).
"""

from __future__ import annotations

import argparse

# Not typing.TYPE_CHECKING: importing typing would cost every start (see mailcrypt.cli).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["EXIT_STATUS", "KEY_TYPES", "Command", "Formatter", "add_commands", "add_new_key_arguments"]

# The exit codes of DESIGN.md §6, shown under every command's help.
EXIT_STATUS = """\
exit status:
  0  success
  2  usage or configuration error (bad option, unreadable file, wrong passphrase)
  3  no key for this message (no matching identity, no recipient certificate)
  4  integrity failure or malformed input (tampered, truncated, not encrypted)
  5  signature invalid or replay; with trust anchors configured, a signer whose
     certificate chain is invalid, revoked or ends at an unknown issuer
"""

# The key types of ``init`` and ``keys generate`` (DESIGN.md §6).
KEY_TYPES = ["rsa2048", "rsa3072", "rsa4096", "p256", "p384"]


class Formatter(argparse.HelpFormatter):
    """Fill descriptions to the terminal width but keep multi-line text (the exit status table) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _common_options() -> argparse.ArgumentParser:
    """The options ``mailcrypt`` takes before a subcommand, accepted after it too (unlisted in its help)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a subcommand from resetting what was given before it.
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return common


class Command:
    """One subcommand as data: its name and line of help, then what it does.

    A command either runs a handler, ``run`` (``"module:function"`` inside
    ``mailcrypt.cli``, imported only when the command runs), with the
    ``arguments`` that function adds to its parser and a longer
    ``description`` (default: the help line); or it only holds
    ``subcommands`` (``keys``, ``users``, ``quarantine``).
    """

    __slots__ = ("name", "help", "run", "arguments", "description", "subcommands")

    def __init__(
        self,
        name: str,
        help: str,
        run: str | None = None,
        arguments: Callable[[argparse.ArgumentParser], None] | None = None,
        description: str | None = None,
        *,
        subcommands: tuple[Command, ...] = (),
    ) -> None:
        self.name = name
        self.help = help
        self.run = run
        self.arguments = arguments
        self.description = description
        self.subcommands = subcommands


def add_commands(group: argparse._SubParsersAction[argparse.ArgumentParser], commands: tuple[Command, ...]) -> None:
    """Add each of ``commands``, and the subcommands they hold, to the subparsers ``group``."""
    for command in commands:
        if command.subcommands:
            add_commands(_add_group(group, command), command.subcommands)
            continue
        sub = group.add_parser(
            command.name,
            parents=[_common_options()],
            formatter_class=Formatter,
            epilog=EXIT_STATUS,
            help=command.help,
            description=command.description or command.help,
        )
        sub.set_defaults(run=command.run)
        if command.arguments is not None:
            command.arguments(sub)


def _add_group(
    group: argparse._SubParsersAction[argparse.ArgumentParser], command: Command
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add ``command``, which only holds subcommands; return their subparsers.

    The subcommand chosen is stored as ``<name>_command`` and shown as
    ``<NAME>_COMMAND`` in the usage line, the same for every group.
    """
    parser = group.add_parser(command.name, parents=[_common_options()], help=command.help)
    dest = f"{command.name}_command"
    return parser.add_subparsers(dest=dest, metavar=dest.upper(), required=True)


def add_new_key_arguments(parser: argparse.ArgumentParser, address_help: str) -> None:
    """Add what ``init`` and ``keys generate`` both ask of a new identity: its address, key type and validity."""
    parser.add_argument("address", metavar="ADDRESS", help=address_help)
    parser.add_argument("--key-type", choices=KEY_TYPES, default="rsa3072", help="key type (default: rsa3072)")
    parser.add_argument("--days", type=int, default=730, metavar="N", help="validity in days (default: 730)")

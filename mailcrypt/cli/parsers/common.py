"""What the subcommand parsers share: adding a command, the common options, the exit status, the help layout.

What it won't do: parse anything itself or import a handler; at module
level only argparse loads (see ``mailcrypt.cli``).
"""

from __future__ import annotations

import argparse

# Not typing.TYPE_CHECKING: importing typing would cost every start (see mailcrypt.cli).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["EXIT_STATUS", "KEY_TYPES", "Formatter", "add_command", "add_group", "add_new_key_arguments"]

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


def add_command(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: str,
    help: str,
    arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    description: str | None = None,
) -> None:
    """Add the subcommand ``name`` whose handler is ``run`` (``"module:function"`` inside ``mailcrypt.cli``).

    ``help`` is its line in the command list, ``arguments`` adds its
    arguments to its parser, and ``description`` heads its own help
    (default: ``help``).
    """
    sub = group.add_parser(
        name,
        parents=[_common_options()],
        formatter_class=Formatter,
        epilog=EXIT_STATUS,
        help=help,
        description=description or help,
    )
    sub.set_defaults(run=run)
    if arguments is not None:
        arguments(sub)


def add_group(
    group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add the command ``name`` that only holds subcommands (``keys``, ``users``); return their subparsers.

    The subcommand chosen is stored as ``<name>_command`` and shown as
    ``<NAME>_COMMAND`` in the usage line, the same for every group.
    """
    parser = group.add_parser(name, parents=[_common_options()], help=help)
    return parser.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND", required=True)


def add_new_key_arguments(parser: argparse.ArgumentParser, address_help: str) -> None:
    """Add what ``init`` and ``keys generate`` both ask of a new identity: its address, key type and validity."""
    parser.add_argument("address", metavar="ADDRESS", help=address_help)
    parser.add_argument("--key-type", choices=KEY_TYPES, default="rsa3072", help="key type (default: rsa3072)")
    parser.add_argument("--days", type=int, default=730, metavar="N", help="validity in days (default: 730)")

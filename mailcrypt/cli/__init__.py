"""The ``mailcrypt`` command: argument parsing and exit codes (DESIGN.md §6).

This module builds the parser, whose subcommands are added in one place
(``mailcrypt.cli.parsers.add_commands``: name, handler, help and the function
that adds the arguments, one module per subcommand), and turns every
``MailcryptError`` into one line on stderr and its exit code. The handlers
live beside it, one module per concern (``crypt``: encrypt; ``read``: decrypt
and verify; ``keys``: init and the key directory; ``proxy``: the proxy and its
users; ``fetch``), and are imported only when chosen, so that
``mailcrypt --help`` starts fast: at module level only argparse, importlib,
os, sys and the argument modules load.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from mailcrypt.cli.parsers import add_commands
from mailcrypt.cli.parsers.common import EXIT_STATUS, Formatter

# Not typing.TYPE_CHECKING: importing typing would cost every start (see above).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["main"]


class _Version(argparse.Action):
    """Print the installed version; it is looked up only when asked for."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from importlib.metadata import version

        print(f"mailcrypt {version('mailcrypt')}")
        parser.exit()


def _build_parser() -> argparse.ArgumentParser:
    """The ``mailcrypt`` command: its own options, then its subcommands (``parsers.add_commands``)."""
    parser = argparse.ArgumentParser(
        prog="mailcrypt",
        description="S/MIME (RFC 8551) mail encryption beside an ordinary mail client.",
        epilog=EXIT_STATUS,
        formatter_class=Formatter,
    )
    parser.add_argument(
        "--home", metavar="DIR", help="mailcrypt home directory (default: $MAILCRYPT_HOME or the user config dir)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="say more on stderr; -v shows tracebacks")
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(commands)
    return parser


def _resolve(run: str) -> Callable[[argparse.Namespace], object]:
    """``"module:function"`` inside mailcrypt.cli, imported only now."""
    module, function = run.split(":")
    # Importing a handler and what it needs creates tens of thousands of
    # objects that live as long as the process and no garbage; the cyclic
    # collector would walk them dozens of times meanwhile for nothing (about
    # a tenth of the CPU of a short command), so it waits until they exist.
    gc.disable()
    try:
        return getattr(importlib.import_module(f"mailcrypt.cli.{module}"), function)
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (DESIGN.md §6)."""
    args = _build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", 0) or 0
    from mailcrypt import errors
    from mailcrypt.cli.report import fail

    try:
        _resolve(args.run)(args)
        return 0
    except errors.MailcryptError as exc:
        return fail(str(exc), exc.exit_code)
    except BrokenPipeError:
        # The reader went away; there is nobody to tell, and stdout is unusable.
        _silence_stdout()
        return 1
    except OSError as exc:
        if exc.filename is not None:
            return fail(f"{exc.filename}: {exc.strerror or exc}", 2)
        return fail(str(exc), 2)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        return fail(
            f"internal error: {type(exc).__name__}: {exc}" + ("" if verbose else " (run with -v for details)"), 1
        )


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

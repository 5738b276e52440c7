"""How commands talk to the user: notes on stderr under -v, warnings, one-line errors."""

from __future__ import annotations

import argparse
import sys

__all__ = ["note", "warn", "fail"]


def note(args: argparse.Namespace, message: str) -> None:
    """Say ``message`` on stderr when -v was given."""
    if getattr(args, "verbose", 0):
        print(f"mailcrypt: {message}", file=sys.stderr)


def warn(message: str) -> None:
    """Say ``message`` on stderr always: something the user should know although the command succeeds."""
    print(f"mailcrypt: warning: {' '.join(message.split())}", file=sys.stderr)


def fail(message: str, code: int) -> int:
    """Print the one error line (white space folded) and return the exit code."""
    line = " ".join(message.split())
    print(f"mailcrypt: error: {line}", file=sys.stderr)
    return code

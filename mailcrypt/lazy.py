"""Package roots that import their parts when a name is first used (PEP 562).

A package's ``__init__`` names its API with ordinary ``from ... import``
lines under ``if TYPE_CHECKING:``, which is what mypy, import-linter and a
reader see, and gets its module ``__getattr__`` from ``exports``, which
reads those lines from the package's own source: one list of names, not a
second table beside it. A name's module is imported the first time the
name is asked for (``from mailcrypt.keydir import load_key_pair`` imports
``keydir.keyfiles`` and what it needs, not the directory, its SQLite index
and the revocation checker).

Why: every command imports package roots, and an eager root imports every
module of its package. ``mailcrypt encrypt --cert FILE`` loaded some 300
modules and spent half of a 25 MB run starting up; ``decrypt`` likewise.

What it won't do: look at anything but the ``from X import A, B as C``
lines directly inside a top-level ``if TYPE_CHECKING:`` block, or hide a
failing import: an ImportError from a name's module propagates as it is.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable

__all__ = ["exports"]


def exports(package: str, source: str) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the package named ``package``, whose ``__init__`` is ``source``."""
    with open(source, encoding="utf-8") as f:
        tree = ast.parse(f.read(), source)
    table: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module and statement.level == 0:
                    for alias in statement.names:
                        table[alias.asname or alias.name] = (statement.module, alias.name)
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> object:
        try:
            module, attribute = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), attribute)
        # Kept in the package's namespace: the next lookup does not come here.
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *table})

    return __getattr__, __dir__

"""The architecture of DESIGN.md §4, checked on the source.

import-linter (``.ci/run``, contracts in ``pyproject.toml``) holds the
layers. This module checks what import-linter does not:

- product code outside a package imports only the package root, whose
  ``__init__`` exports the public names; a package's modules are its
  private parts (STYLE.md §2);
- every package's ``__all__`` names what it defines;
- every module stays under 400 lines, or says in its docstring why not
  (a line starting ``Longer than 400 lines:``).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_INITS = [*ROOT.glob("mailcrypt/*/__init__.py"), ROOT / "proxy" / "__init__.py"]
PACKAGES = sorted({".".join(p.parent.relative_to(ROOT).parts) for p in _INITS})
SOURCES = sorted([*ROOT.glob("mailcrypt/**/*.py"), *ROOT.glob("proxy/**/*.py")])
LINE_LIMIT = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str) -> str | None:
    for package in PACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return None


def _deep_imports(path: Path) -> list[str]:
    return _deep_imports_in(path.read_text(), _module_name(path), str(path.relative_to(ROOT)))


def _deep_imports_in(source: str, module_name: str, label: str) -> list[str]:
    """``file:line: module`` for each import of another package's private module."""
    me = _package_of(module_name)
    found = []
    for node in ast.walk(ast.parse(source, label)):
        modules: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
            # ``from mailcrypt.mime import headers`` imports a module too.
            modules += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules += [a.name for a in node.names]
        for module in modules:
            package = _package_of(module)
            if package is None or package == me or module == package:
                continue
            if module.count(".") > package.count(".") and _is_module(module):
                found.append(f"{label}:{node.lineno}: {module}")
    return found


def _is_module(dotted: str) -> bool:
    base = ROOT / Path(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def test_packages_are_the_ones_of_the_design() -> None:
    assert {"mailcrypt.envelope", "mailcrypt.pki", "mailcrypt.mime", "mailcrypt.state", "mailcrypt.config"} <= set(
        PACKAGES
    )
    assert {"mailcrypt.keydir", "mailcrypt.fetch", "mailcrypt.cli", "proxy"} <= set(PACKAGES)


def test_nothing_imports_another_packages_private_modules() -> None:
    found = [hit for path in SOURCES for hit in _deep_imports(path)]
    assert found == []


def test_the_check_sees_deep_imports() -> None:
    # The check above must be able to fail.
    source = (
        "from mailcrypt.mime.headers import split_fields\n"
        "from mailcrypt.mime import headers as mh\n"
        "import mailcrypt.state.store\n"
        "from mailcrypt.mime import split_fields\n"  # the package root: allowed
        "from mailcrypt.proxy_like import x\n"  # not a package of ours
    )
    found = _deep_imports_in(source, "proxy.handler", "probe.py")
    assert found == [
        "probe.py:1: mailcrypt.mime.headers",
        "probe.py:2: mailcrypt.mime.headers",
        "probe.py:3: mailcrypt.state.store",
    ]
    # Inside its own package a module may import its siblings.
    assert _deep_imports_in(source, "mailcrypt.mime.unwrap", "probe.py") == ["probe.py:3: mailcrypt.state.store"]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_exports_what_it_names(package: str) -> None:
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    assert names, f"{package} has no __all__"
    assert len(set(names)) == len(names), f"{package}.__all__ repeats a name"
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_size(path: Path) -> None:
    lines = path.read_text().count("\n")
    if lines <= LINE_LIMIT:
        return
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    reasons = [line for line in doc.splitlines() if line.startswith("Longer than 400 lines:")]
    assert reasons, f"{path.relative_to(ROOT)} has {lines} lines and no 'Longer than 400 lines:' reason"

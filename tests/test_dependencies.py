"""The lock file: what every fresh machine installs.

``uv.lock`` pins every package with hashes; ``scripts/setup`` installs from it
with ``uv sync --locked``. The PKITS data the tests read comes from
``cryptography-vectors``, published with each ``cryptography`` release: the
lock must hold both at the same version, so the data matches the code under
test.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _locked() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"]: package["version"] for package in lock["package"]}


def test_vectors_are_locked_at_the_cryptography_version() -> None:
    locked = _locked()
    assert locked["cryptography-vectors"] == locked["cryptography"]


def test_every_locked_distribution_has_a_hash() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    for package in lock["package"]:
        if package.get("source", {}).get("editable"):
            continue  # mailcrypt itself
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files, package["name"]
        assert all(f.get("hash", "").startswith("sha256:") for f in files), package["name"]

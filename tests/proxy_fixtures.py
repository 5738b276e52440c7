"""The pytest fixtures that several proxy test modules share: a recording upstream, Bob (and Dave), a home.

A test module imports the fixtures it uses by name, each with a redundant
alias (``from proxy_fixtures import upstream as upstream``): pytest finds a
fixture among a module's names, and the alias tells ruff the import is
meant to be there although no code reads it. They are not in conftest.py,
which every test module sees: names as plain as ``settings`` and ``bob``
would reach modules that mean something else by them. A module that needs a
different one (another key type, a size limit) defines its own instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_kit import Person, Upstream, make_home, person

from mailcrypt import config


@pytest.fixture(scope="module")
def bob(tmp_path_factory: pytest.TempPathFactory) -> Person:
    """bob@example.org with a P-256 identity, made once per module (key generation is the slow part)."""
    return person(tmp_path_factory.mktemp("people"), "bob@example.org", "p256")


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Person]:
    """Bob (bob@example.org) and Dave (dave@example.com), both P-256, made once per module."""
    d = tmp_path_factory.mktemp("people")
    return {"bob": person(d, "bob@example.org", "p256"), "dave": person(d, "dave@example.com", "p256")}


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """A recording aiosmtpd upstream that accepts everything, fresh for each test."""
    up = Upstream().start()
    yield up
    up.stop()


@pytest.fixture
def settings(tmp_path: Path, upstream: Upstream, bob: Person) -> config.Settings:
    """A home whose proxy relays to ``upstream`` and knows Bob's certificate."""
    return make_home(tmp_path / "home", upstream_port=upstream.port, recipients=(bob,))

"""The mutation fuzzer of the incoming path (``benchmarks/fuzz_incoming.py``), on a small budget.

``.ci/run`` runs the fuzzer itself with 100,000 inputs; this test keeps the
script working between those runs: its seeds are all read (openssl-made and,
where present, the Thunderbird corpus), its mutations change the input at
both levels, and a short run on a fixed seed finds no exception other than
mailcrypt's typed ones.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest
from corpus import CORPUS, require_corpus

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_incoming.py"


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_incoming", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved  # the script puts the checkout and tests/ first, for its own runs
    return module


def test_the_seeds_are_real_messages(fuzz: ModuleType) -> None:
    require_corpus()
    targets = fuzz._targets()
    names = [name for t in targets for name, _ in t.seeds]
    assert sum(name.startswith("openssl") for name in names) == 6
    assert sum(name.startswith("corpus") for name in names) >= 40, CORPUS
    assert all(t.identities and t.anchors and t.donors for t in targets)


def test_mutations_change_the_input_at_both_levels(fuzz: ModuleType) -> None:
    target = fuzz.openssl_target()
    target.donors = fuzz.certificate_donors([i.certificate for i in target.identities])
    rng = random.Random(5)
    _, message = target.seeds[1]
    der_level = {fuzz._mutate_body(message, rng, target.donors) for _ in range(50)}
    mime_level = {fuzz._mutate_mime(message, rng) for _ in range(50)}
    # A few mutations may give the input back (a tag or length changed to itself); most must not.
    assert len(der_level - {message}) > 40 and len(mime_level - {message}) > 20


@pytest.mark.slow
def test_a_short_run_finds_only_typed_errors(fuzz: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    require_corpus()
    status = fuzz.main(["--inputs", "400", "--workers", "1", "--seed", "13"])
    out = capsys.readouterr().out
    assert "exceptions other than mailcrypt's: 0" in out, out
    assert status == 0

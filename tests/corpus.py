"""Where Thunderbird's S/MIME corpus is, and the rule for tests that need it.

The corpus (see ``../shared/corpus/thunderbird-smime/README.md``) lives beside
the repository, or wherever ``MAILCRYPT_CORPUS`` points. A user's machine does
not have it: tests skip with a reason. When ``CI`` is set, its absence fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["CORPUS", "PASSWORD", "require_corpus"]


def _corpus_dir() -> Path:
    env = os.environ.get("MAILCRYPT_CORPUS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "corpus" / "thunderbird-smime"


CORPUS = _corpus_dir()
#: The password of every PKCS#12 file in the corpus.
PASSWORD = b"nss"


def require_corpus() -> None:
    if CORPUS.is_dir():
        return
    reason = f"corpus not present: {CORPUS} (set MAILCRYPT_CORPUS to its thunderbird-smime directory)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI is set, so this is a failure")
    pytest.skip(reason)

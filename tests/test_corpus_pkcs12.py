"""Every PKCS#12 file of Thunderbird's corpus imports and decrypts quietly.

NSS writes PKCS#12 in BER. cryptography reads BER only through a fallback that
warns (and may one day refuse); mailcrypt re-encodes the file as DER first, so
a user importing a Thunderbird export sees the one-line result and nothing
else. Each case runs the real ``mailcrypt`` command, as a user would, with
Python's warnings turned into errors so that any warning fails loudly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import CORPUS, PASSWORD, require_corpus

PASSPHRASE = "pkcs12 corpus home 4c1e"
MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: p12\r\n\r\nHello from the corpus test.\r\n"
IDENTITIES = ["Alice", "Alice-ec", "Bob", "Dave", "Eve", "Fran", "Fran-ec"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    env["MAILCRYPT_HOME"] = str(home)
    env["MAILCRYPT_PASSPHRASE"] = PASSPHRASE
    return env


def _mailcrypt(home: Path, *args: str | Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "mailcrypt", *map(str, args)],
        input=input,
        capture_output=True,
        timeout=120,
        env=_env(home),
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "p12.pass"
    path.write_bytes(PASSWORD + b"\n")
    path.chmod(0o600)
    return path


def _p12(name: str) -> Path:
    require_corpus()
    return CORPUS / "generated" / f"{name}.p12"


def _only_one_line(stderr: bytes) -> None:
    text = stderr.decode(errors="replace")
    assert "Warning" not in text and "Traceback" not in text, text
    assert text.count("\n") <= 1, text


@pytest.mark.parametrize("name", IDENTITIES)
def test_keys_import_of_an_nss_pkcs12(name: str, tmp_path: Path, password_file: Path) -> None:
    home = tmp_path / "home"
    assert _mailcrypt(home, "init", "me@example.org", "--key-type", "p256").returncode == 0
    proc = _mailcrypt(home, "keys", "import", _p12(name), "--password-file", password_file)
    assert proc.returncode == 0, proc.stderr
    assert b"imported identity" in proc.stdout, proc.stdout
    assert proc.stdout.count(b"\n") == 1, proc.stdout
    _only_one_line(proc.stderr)


@pytest.mark.parametrize("name", IDENTITIES)
def test_decrypt_with_an_nss_pkcs12(name: str, tmp_path: Path, password_file: Path) -> None:
    p12 = _p12(name)
    sent = subprocess.run(
        ["openssl", "cms", "-encrypt", "-aes256", str(CORPUS / "generated" / f"{name}.crt")],
        input=MESSAGE,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    proc = _mailcrypt(tmp_path / "home", "decrypt", "--p12", p12, "--password-file", password_file, input=sent)
    assert proc.returncode == 0, proc.stderr
    assert b"Hello from the corpus test." in proc.stdout
    _only_one_line(proc.stderr)

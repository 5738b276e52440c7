"""The one reader of secret files (``config.read_private``) and the sites that use it.

Each refusal is one ``ConfigError`` line naming the file and the problem, and
never the content. The check is made on the descriptor that is read, so a
file swapped in after the check is not what gets read.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mailcrypt import config, errors
from mailcrypt.keydir import PassphraseSource, passphrase_from
from proxy import UserStore

SECRET = b"not-a-real-secret\n"


def private(path: Path, content: bytes = SECRET, mode: int = 0o600) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


def refusal(path: Path, *, limit: int | None = None) -> str:
    with pytest.raises(errors.ConfigError) as info:
        config.read_private(path, what="test file", limit=limit)
    message = str(info.value)
    assert "\n" not in message and "not-a-real-secret" not in message
    return message


def test_a_private_file_is_read(tmp_path: Path) -> None:
    path = private(tmp_path / "s")
    assert config.read_private(path, what="test file") == SECRET
    assert config.read_private(str(path), what="test file", limit=len(SECRET)) == SECRET
    assert config.read_secret_line(path, what="test file") == b"not-a-real-secret"
    config.check_private(path, what="test file")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o610, 0o601])
def test_any_group_or_other_bit_is_refused(tmp_path: Path, mode: int) -> None:
    path = private(tmp_path / "s", mode=mode)
    assert refusal(path) == (
        f"test file {path} is readable by other users (mode {mode:04o}); expected mode 0600: run chmod 600 {path}"
    )
    with pytest.raises(errors.ConfigError, match="readable by other users"):
        config.check_private(path, what="test file")


def test_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    target = private(tmp_path / "target")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert refusal(link) == f"test file {link} is a symbolic link; name the file itself (mode 0600)"


def test_a_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir(mode=0o700)
    assert refusal(directory) == f"test file {directory} is not a regular file (expected a file, mode 0600)"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    # Without O_NONBLOCK the open would wait for a writer forever; run it
    # in a thread so that a regression fails the test instead of hanging it.
    found: list[str] = []
    worker = threading.Thread(target=lambda: found.append(refusal(fifo)), daemon=True)
    worker.start()
    worker.join(10)
    assert found == [f"test file {fifo} is not a regular file (expected a file, mode 0600)"]


def test_a_missing_file_has_its_own_error(tmp_path: Path) -> None:
    path = tmp_path / "none"
    with pytest.raises(errors.MissingSecretFile) as info:
        config.read_private(path, what="test file")
    assert info.value.path == path
    assert str(info.value) == f"test file {path} does not exist (expected a file, mode 0600)"


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = private(tmp_path / "s")
    if os.geteuid() == 0:
        os.chown(path, 65534, -1)
        assert refusal(path) == (
            f"test file {path} belongs to another user (uid 65534); expected a file of uid 0"
        )
    else:
        # Only root can give a file away; a user meets another user's 0600 file as unreadable.
        path.chmod(0o000)
        assert refusal(path) == f"test file {path} is not readable (permission denied)"


def test_the_limit(tmp_path: Path) -> None:
    path = private(tmp_path / "s")
    assert refusal(path, limit=len(SECRET) - 1) == (
        f"test file {path} is larger than {len(SECRET) - 1} bytes; is it the right file?"
    )
    long_line = private(tmp_path / "long", b"x" * (64 * 1024 + 1))
    with pytest.raises(errors.ConfigError, match="is larger than 65536 bytes"):
        config.read_secret_line(long_line, what="test file")


def test_an_empty_secret_line(tmp_path: Path) -> None:
    path = private(tmp_path / "s", b"\r\nsecond line\n")
    with pytest.raises(errors.ConfigError, match="is empty .expected the secret on its first line."):
        config.read_secret_line(path, what="test file")


def test_the_checked_descriptor_is_the_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Between the open and the read, another process replaces the file by
    # name with one of its own. A check by name followed by a read by name
    # would read the replacement; the descriptor still holds the original.
    path = private(tmp_path / "s")
    planted = private(tmp_path / "planted", b"planted by someone else\n", mode=0o644)
    real_open = os.open

    def open_then_swap(file: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        fd = real_open(file, flags, mode)
        if Path(file) == path:
            os.replace(planted, path)
        return fd

    monkeypatch.setattr(os, "open", open_then_swap)
    assert config.read_private(path, what="test file") == SECRET
    monkeypatch.undo()
    # And by name the file is now the planted one, which is refused.
    assert "readable by other users (mode 0644)" in refusal(path)


# ---------------------------------------------------------------- every site uses it


def test_the_sites_refuse_a_symbolic_link(tmp_path: Path) -> None:
    target = private(tmp_path / "target")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(errors.ConfigError, match="passphrase file .* is a symbolic link"):
        PassphraseSource(file=link, environ={}, interactive=False).get("a key")
    with pytest.raises(errors.ConfigError, match="password file .* is a symbolic link"):
        passphrase_from(link, "UNUSED_VARIABLE")
    with pytest.raises(errors.ConfigError, match="password file .* is a symbolic link"):
        config.SecretRef("upstream.password_file", file=link).read()
    with pytest.raises(errors.ConfigError, match="the proxy's user file .* is a symbolic link"):
        UserStore(link).names()


def test_the_user_file_may_be_missing_but_not_loose(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "proxy" / "users")
    assert store.names() == []
    store.add("alice", b"a long password")
    assert store.names() == ["alice"]
    (tmp_path / "proxy" / "users").chmod(0o640)
    with pytest.raises(errors.ConfigError, match="user file .* is readable by other users .mode 0640."):
        store.names()

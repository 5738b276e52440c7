"""The fetched Maildir as local mail tools read it: s-nail, mutt and openssl, against a real Dovecot.

A mailbox with plain, encrypted (header-protected Subject), signed-only and
undecryptable mail, some of it marked ``\\Seen``, ``\\Flagged``,
``\\Answered`` or ``\\Draft`` on the server, is fetched once. Then every
file has LF line ends only, every file's Maildir flags are the server's
flags, s-nail (batch mode) and mutt (in a tmux pane: it only draws on a
terminal) list every message with its restored Subject, and a signed
message kept whole still verifies with ``openssl smime -verify``, which
converts LF back to CRLF as a reader must. A Maildir fetched without INBOX
is still a mailbox at its root.

s-nail, mutt and tmux are Debian packages that ``.ci/run`` installs: a
missing one skips on a developer's machine and fails under CI.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from fetch_helpers import maildir_files, make_home, plain, run_cli

from mailcrypt.envelope import Signer
from mailcrypt.mime import enveloped as smime
from mailcrypt.mime import signed as smime_signed

NOW = datetime.datetime.now(datetime.UTC)

# Server flags as the test sets them, and the Maildir info letters they must become.
LETTERS = {b"\\Seen": "S", b"\\Answered": "R", b"\\Flagged": "F", b"\\Draft": "D"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (Debian package {name}; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI is set, so this is a failure")
    pytest.skip(reason)


def _set_flags(imap_user, folder: str, flags: dict[int, tuple[bytes, ...]]) -> None:  # type: ignore[no-untyped-def]
    client = imap_user.client()
    try:
        client.select_folder(folder)
        for uid, wanted in flags.items():
            if wanted:
                client.add_flags([uid], list(wanted))
    finally:
        client.logout()


def _info(path: Path) -> str:
    """The Maildir info letters of a file ("" in new/)."""
    if path.parent.name == "new":
        assert ":" not in path.name, path
        return ""
    assert ":2," in path.name, path
    return path.name.split(":2,", 1)[1]


def _uid(path: Path) -> int:
    return int(path.name.split(",U=")[1].split(":")[0])


def _s_nail_subjects(folder: Path) -> list[str]:
    """The Subjects s-nail lists for a Maildir, in batch mode, read-only, without any rc file."""
    proc = subprocess.run(
        [_tool("s-nail"), "-:/", "-#", "-R", "-S", "headline=%s", "-S", "ttycharset=utf-8",
         "-Y", "headers", "-Y", "quit", "-f", str(folder)],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return sorted(line.strip() for line in proc.stdout.decode().splitlines() if line.strip())


def _mutt_index(folder: Path, home: Path) -> list[str]:
    """The index lines mutt draws for a Maildir ("[flags] subject"), read from a tmux pane.

    mutt has no batch mode that prints its index; it runs read-only (-R)
    in a detached tmux session, and the pane is read once the status line
    shows the message count.
    """
    mutt, tmux = _tool("mutt"), _tool("tmux")
    home.mkdir(parents=True, exist_ok=True)
    rc = home / "muttrc"
    rc.write_text(
        f'set folder="{folder}"\nset spoolfile="{folder}"\nset charset=utf-8\n'
        'set index_format="[%Z] %s"\nset sort=mailbox-order\nset mark_old=no\nset status_on_top=no\n'
    )
    socket = f"mailcrypt-test-{uuid.uuid4().hex[:12]}"
    command = f"{mutt} -n -F {rc} -R -f {folder}"
    env = {**os.environ, "HOME": str(home), "TERM": "screen", "LANG": "C.UTF-8"}
    subprocess.run([tmux, "-L", socket, "new-session", "-d", "-x", "200", "-y", "60", command], env=env, check=True)
    try:
        screen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [tmux, "-L", socket, "capture-pane", "-p", "-t", "0"], capture_output=True, text=True, env=env
            ).stdout
            if "Msgs:" in screen:
                break
            time.sleep(0.2)
        assert "Msgs:" in screen, f"mutt did not show {folder}:\n{screen}"
        assert "^M" not in screen
        return [line.rstrip() for line in screen.splitlines() if line.startswith("[")]
    finally:
        subprocess.run([tmux, "-L", socket, "kill-server"], env=env, capture_output=True)


def test_s_nail_and_mutt_read_the_fetched_maildir(tmp_path, imap_user, openssl, rsa2048, ec_p256) -> None:  # type: ignore[no-untyped-def]
    _tool("s-nail"), _tool("mutt"), _tool("tmux")
    home = make_home(tmp_path / "home", imap_user, [rsa2048], folders=("INBOX", "Archive"))
    signer = Signer(ec_p256.key, ec_p256.cert)
    inbox = [
        (plain("plain unread"), ()),
        (smime.encrypt_message(plain("encrypted and read"), [rsa2048.cert]), (b"\\Seen",)),
        (smime.encrypt_message(smime_signed.sign_message(plain("signed inside, flagged"), signer, signing_time=NOW),
                               [rsa2048.cert]), (b"\\Seen", b"\\Flagged")),
        (smime_signed.sign_message(plain("signed only, answered"), signer, signing_time=NOW),
         (b"\\Seen", b"\\Answered")),
        (plain("a draft"), (b"\\Draft",)),
        (smime.encrypt_message(plain("flagged unread"), [rsa2048.cert]), (b"\\Flagged",)),
    ]
    imap_user.append([m for m, _f in inbox])
    _set_flags(imap_user, "INBOX", {uid: f for uid, (_m, f) in enumerate(inbox, start=1)})
    # Mail nobody here can open goes to Quarantine, with its flags too.
    archive = [(plain("archived, read"), (b"\\Seen",)),
               (smime.encrypt_message(plain("not for me"), [ec_p256.cert]), (b"\\Seen",))]
    imap_user.append([m for m, _f in archive], "Archive")
    _set_flags(imap_user, "Archive", {uid: f for uid, (_m, f) in enumerate(archive, start=1)})

    result = run_cli(home, imap_user)
    assert result.returncode == 3, result.stdout + result.stderr  # the no-key one

    mail = home / "mail"
    files = maildir_files(mail)
    assert sorted(files) == ["", ".Archive", ".Quarantine"]
    for paths in files.values():
        for path in paths:
            assert b"\r" not in path.read_bytes(), f"CR on disk in {path}"
    server = {"": inbox, ".Archive": archive[:1], ".Quarantine": archive[1:]}
    for folder, paths in files.items():
        got = {_uid(p): _info(p) for p in paths}
        if folder == ".Quarantine":
            want = {2: "S"}
        else:
            want = {uid: "".join(sorted(LETTERS[f] for f in flags)) for uid, (_m, flags) in
                    enumerate(server[folder], start=1)}
        assert got == want, folder

    inbox_subjects = sorted([
        "plain unread", "encrypted and read", "signed inside, flagged", "signed only, answered", "a draft",
        "flagged unread",
    ])
    assert _s_nail_subjects(mail) == inbox_subjects
    assert _s_nail_subjects(mail / ".Archive") == ["archived, read"]

    index = _mutt_index(mail, tmp_path / "mutt-home")
    assert sorted(line.split("] ", 1)[1] for line in index) == inbox_subjects
    by_subject = {line.split("] ", 1)[1]: line.split("] ", 1)[0][1:] for line in index}
    # mutt's %Z: N new, r replied, ! flagged; read mail has neither N nor O.
    assert "N" in by_subject["plain unread"] and "N" not in by_subject["encrypted and read"]
    assert "!" in by_subject["signed inside, flagged"] and "r" in by_subject["signed only, answered"]
    assert "!" in by_subject["flagged unread"]

    # The signed-only message is kept whole: with LF on disk it still verifies for a reader that
    # converts back to CRLF, as RFC 8551 §3.1.1 canonicalisation and openssl do.
    signed_only = next(p for p in files[""] if _uid(p) == 4)
    assert b"multipart/signed" in signed_only.read_bytes()
    openssl("smime", "-verify", "-noverify", "-in", signed_only, "-out", tmp_path / "content.txt")
    assert b"hello" in (tmp_path / "content.txt").read_bytes()
    openssl("cms", "-verify", "-noverify", "-in", signed_only, "-out", os.devnull)


def test_the_maildir_root_is_a_mailbox_without_inbox(tmp_path, imap_user) -> None:  # type: ignore[no-untyped-def]
    _tool("mutt"), _tool("tmux")
    home = make_home(tmp_path / "home", imap_user, folders=("Archive",))
    imap_user.append([plain("only in Archive")], "Archive")

    result = run_cli(home, imap_user)
    assert result.returncode == 0, result.stdout + result.stderr
    mail = home / "mail"
    assert all((mail / sub).is_dir() for sub in ("cur", "new", "tmp"))
    assert not (mail / "maildirfolder").exists()
    # mutt opens the root (no "is not a mailbox"), empty, and the folder below it with its mail.
    assert _mutt_index(mail, tmp_path / "mutt-home") == []
    assert _s_nail_subjects(mail / ".Archive") == ["only in Archive"]

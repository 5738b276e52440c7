"""Operating ``mailcrypt fetch``: --watch with IDLE, TLS and STARTTLS, UIDVALIDITY, --since,
an IMAP folder as the target, passwords, and the progress bar — all against the real Dovecot.
"""

from __future__ import annotations

import datetime
import io
import os
import signal
import subprocess
import sys
import time

import pytest
from fetch_helpers import FOLDER_SYNC, ROOT, by_uid, env_for, make_home, plain, run_cli, run_crashing, status

from mailcrypt.fetch.imap import IMAPConnection
from mailcrypt.fetch.progress import Counts, Progress, summary_table
from mailcrypt.fetch.sync import batches
from mailcrypt.mime import enveloped as smime


def _wait_for_uid(home, uid: int, proc: subprocess.Popen[str], *, timeout: float, why: str) -> None:  # type: ignore[no-untyped-def]
    """Return once UID ``uid`` is in the home's Maildir; fail with ``why`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while uid not in by_uid(home / "mail"):
        assert proc.poll() is None, f"the watcher exited ({proc.returncode}) before UID {uid} arrived"
        assert time.monotonic() < deadline, f"UID {uid} not delivered after {timeout:.0f} s: {why}"
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=30)


def test_watch_delivers_new_mail_when_the_server_announces_it(tmp_path, imap_user, dovecot, rsa2048) -> None:  # type: ignore[no-untyped-def]
    """Mail appended while the watcher waits in IDLE is delivered on the server's announcement.

    The watcher re-syncs on its own only when IDLE times out (every 60 s,
    ``Fetcher.watch``'s ``poll_seconds``), so delivery within 30 s of the
    APPEND can only come from the announcement.
    """
    home = make_home(tmp_path / "home", imap_user, [rsa2048])
    imap_user.append(plain("before"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailcrypt", "--home", str(home), "fetch", "--watch"],
        env=env_for(imap_user), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        dovecot.wait_for_idle(imap_user, client=proc)
        assert 1 in by_uid(home / "mail"), "the first sync did not deliver before waiting in IDLE"
        imap_user.append(smime.encrypt_message(plain("while watching"), [rsa2048.cert]))
        _wait_for_uid(home, 2, proc, timeout=30, why="IDLE did not announce the new mail")
        assert status(by_uid(home / "mail")[2][1]).startswith("decrypted")
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err
    assert "fetched" in out  # the summary of the whole watch session
    assert "\r" not in err  # no progress bar when stderr is not a terminal


def test_watch_reconnects_after_the_connection_drops(tmp_path, imap_user, dovecot) -> None:  # type: ignore[no-untyped-def]
    """Kill the server's IMAP process for this user while the watcher waits in IDLE: it says so,
    reconnects with backoff and delivers what arrived meanwhile."""
    home = make_home(tmp_path / "home", imap_user)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailcrypt", "--home", str(home), "fetch", "--watch"],
        env=env_for(imap_user), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        dovecot.wait_for_idle(imap_user, client=proc)
        assert dovecot.kill_sessions(imap_user) == 1, f"expected the watcher's one session: {dovecot.log[-500:]}"
        imap_user.append(plain("after the drop"))
        _wait_for_uid(home, 1, proc, timeout=30, why="the watcher did not reconnect")
    finally:
        _out, err = _stop(proc)
    assert proc.returncode == 0, err
    # The first failure waits the shortest backoff; the one line names the account and what failed.
    reconnects = [line for line in err.splitlines() if line.endswith("; reconnecting in 1 s")]
    assert len(reconnects) == 1, err
    assert reconnects[0].startswith("account test: ") and "IDLE failed" in reconnects[0], err


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_and_starttls(tmp_path, imap_user, rsa2048, security) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, [rsa2048], security=security)
    imap_user.append(smime.encrypt_message(plain(f"over {security}"), [rsa2048.cert]))
    result = run_cli(home, imap_user)
    assert result.returncode == 0, result.stderr
    assert status(by_uid(home / "mail")[1][1]).startswith("decrypted")


def test_tls_certificate_is_verified(tmp_path, imap_user) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, security="tls")
    text = (home / "config.toml").read_text()
    (home / "config.toml").write_text("\n".join(line for line in text.splitlines() if not line.startswith("ca_file")))
    result = run_cli(home, imap_user)
    assert result.returncode == 1
    assert "certificate verify failed" in result.stderr and result.stderr.count("mailcrypt: error:") == 1


def test_uidvalidity_change_stops_with_the_way_out(tmp_path, imap_user) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, folders=("Work",))
    imap_user.append([plain("one"), plain("two")], folder="Work")
    assert run_cli(home, imap_user).returncode == 0
    client = imap_user.client()
    try:
        before = client.folder_status("Work", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        # Dovecot derives UIDVALIDITY from the clock: a folder made again within the same
        # second may keep it, so make it again until the server has renumbered it.
        deadline = time.monotonic() + 10
        while True:
            client.delete_folder("Work")
            client.create_folder("Work")
            if client.folder_status("Work", ["UIDVALIDITY"])[b"UIDVALIDITY"] != before:
                break
            assert time.monotonic() < deadline, "Dovecot kept the UIDVALIDITY of a folder made again"
            time.sleep(0.05)
        client.append("Work", plain("three"))
    finally:
        client.logout()
    result = run_cli(home, imap_user)
    assert result.returncode == 2
    assert "UIDVALIDITY changed" in result.stderr and "--accept-uidvalidity" in result.stderr
    assert len(list((home / "mail" / ".Work" / "new").iterdir())) == 2  # nothing fetched again
    again = run_cli(home, imap_user, "--accept-uidvalidity")
    assert again.returncode == 0, again.stderr
    assert len(list((home / "mail" / ".Work" / "new").iterdir())) == 3


def test_since_limits_the_first_sync(tmp_path, imap_user) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user)
    client = imap_user.client()
    try:
        old = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        client.append("INBOX", plain("old"), msg_time=old)
        client.append("INBOX", plain("new"))
    finally:
        client.logout()
    result = run_cli(home, imap_user, "--since", datetime.date.today().isoformat())
    assert result.returncode == 0, result.stderr
    assert sorted(by_uid(home / "mail")) == [2]
    imap_user.append(plain("newer"))
    assert run_cli(home, imap_user).returncode == 0
    assert sorted(by_uid(home / "mail")) == [2, 3]  # the old one stays left out


def test_imap_target_must_be_asked_for_and_survives_a_crash(tmp_path, imap_user, rsa2048, make_keypair) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    other = make_keypair("imap-target-stranger", ec.generate_private_key(ec.SECP256R1()))
    home = make_home(tmp_path / "home", imap_user, [rsa2048], extra='target = "imap:Decrypted"\n')
    refused = run_cli(home, imap_user)
    assert refused.returncode == 2 and "plaintext_on_server = true" in refused.stderr
    (home / "config.toml").write_text((home / "config.toml").read_text() + "plaintext_on_server = true\n")
    imap_user.append([
        smime.encrypt_message(plain("to the server"), [rsa2048.cert]),
        smime.encrypt_message(plain("nobody's"), [other.cert]),
        plain("plain"),
    ])
    crashed = run_crashing(home, env_for(imap_user), FOLDER_SYNC, "written", 2, "fetch")
    assert crashed.returncode == -9, crashed.stderr
    rerun = run_cli(home, imap_user)
    assert rerun.returncode in (0, 3), rerun.stderr
    assert run_cli(home, imap_user).returncode == 0
    decrypted = imap_user.messages("Decrypted")
    quarantine = imap_user.messages("Decrypted.Quarantine")
    assert len(decrypted) == 2 and len(quarantine) == 1
    bodies = [body for body, _flags in decrypted.values()]
    assert any(b"X-Mailcrypt-Status: decrypted" in b and b"Subject: to the server" in b for b in bodies)
    assert not (home / "mail").exists()


def test_password_is_never_taken_from_argv_and_missing_one_is_explained(tmp_path, imap_user) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user)
    text = (home / "config.toml").read_text().replace('password_env = "MAILCRYPT_TEST_IMAP_PASSWORD"\n', "")
    (home / "config.toml").write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "mailcrypt", "--home", str(home), "fetch"],
        env={k: v for k, v in os.environ.items() if k != "MAILCRYPT_TEST_IMAP_PASSWORD"},
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 2
    assert "no password" in result.stderr and "password_file" in result.stderr


def test_password_file(tmp_path, imap_user) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user)
    secret = home / "imap.pass"
    secret.write_text(imap_user.password + "\n")
    secret.chmod(0o600)
    text = (home / "config.toml").read_text().replace(
        'password_env = "MAILCRYPT_TEST_IMAP_PASSWORD"', 'password_file = "imap.pass"'
    )
    (home / "config.toml").write_text(text)
    imap_user.append(plain("by file"))
    result = subprocess.run([sys.executable, "-m", "mailcrypt", "--home", str(home), "fetch"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert list(by_uid(home / "mail")) == [1]


def test_progress_bar_on_a_terminal_only() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    progress = Progress(tty)
    progress.start("test/INBOX", 3)
    for _ in range(3):
        progress.advance()
    progress.finish()
    drawn = tty.getvalue()
    assert "3/3" in drawn and "msg/s" in drawn and "ETA" in drawn
    quiet = io.StringIO()
    silent = Progress(quiet)
    silent.start("x", 2)
    silent.advance(2)
    silent.finish()
    assert quiet.getvalue() == ""
    counts = Counts(fetched=3, decrypted=2, verified=1, quarantined=1)
    counts.reasons["replay"] += 1
    table = summary_table([("test/INBOX", counts)])
    assert table.splitlines()[0].split() == ["folder", "fetched", "decrypted", "verified", "quarantined", "failed"]
    assert table.splitlines()[1].split() == ["test/INBOX", "3", "2", "1", "1", "0"]
    assert "1 replay" in table


def test_batches_hold_a_large_message_alone_from_the_sizes_the_server_names(imap_user) -> None:  # type: ignore[no-untyped-def]
    small, large = plain("small"), plain("large").replace(b"\r\n\r\n", b"\r\n\r\n" + b"x" * 200_000, 1)
    imap_user.append([small, small, small, large, small, small])
    conn = IMAPConnection.connect(
        host=imap_user.server.host,
        port=imap_user.server.port,
        security="none",
        username=imap_user.name,
        password=imap_user.password.encode(),
    )
    with conn:
        conn.select("INBOX")
        uids = conn.new_uids(0)
        exact = conn.sizes(uids)
        # Only the message above the threshold is named, with the size RFC822.SIZE gives.
        assert conn.sizes_above(uids, 100_000) == {4: exact[4]}
        assert conn.sizes_above(uids, 0) == exact
        assert conn.sizes_above(uids[:3], 100_000) == {}
    listed = {4: exact[4]}
    assert batches(uids, listed, count=2, limit=200_000, unlisted=100_000) == [[1, 2], [3], [4], [5, 6]]
    assert batches(uids, listed, count=3, limit=300_000, unlisted=100_000) == [[1, 2, 3], [4], [5, 6]]

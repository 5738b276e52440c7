"""Freshness measured against arrival (DESIGN.md §2), against the real Dovecot and on ``decrypt FILE``.

A mailbox that holds years of signed and encrypted mail, each message signed
two minutes before the server received it (its INTERNALDATE, set by APPEND),
is delivered whole on the first fetch; only a message signed 400 days before
it arrived (an old message sent again) is quarantined as stale. For a
message file the arrival is the date of its topmost ``Received`` field, and
the errors say how to read it anyway (``--no-replay-check``).
"""

from __future__ import annotations

import email.utils
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fetch_helpers import ROOT, append_at, by_uid, make_home, plain, run_cli, status

from mailcrypt.envelope import Signer
from mailcrypt.keydir import KeyDirectory
from mailcrypt.keydir.passphrase import PassphraseSource
from mailcrypt.mime import sign_message
from mailcrypt.mime.enveloped import encrypt_message

NOW = datetime.now(UTC).replace(microsecond=0)
SIGNED_BEFORE_ARRIVAL = timedelta(minutes=2)


def signed_encrypted(subject: str, signer: Signer, cert, signed_at: datetime) -> bytes:  # type: ignore[no-untyped-def]
    return encrypt_message(sign_message(plain(subject), signer, signing_time=signed_at), [cert])


def test_years_of_mail_are_fresh_by_their_arrival(tmp_path, imap_user, rsa2048, ec_p256) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, [rsa2048])
    signer = Signer(ec_p256.key, ec_p256.cert)
    # Twelve arrivals from three years ago to yesterday, each signed two minutes before it.
    arrivals = [NOW - timedelta(days=1 + 99 * i, hours=i) for i in range(12)]
    mail = [
        (signed_encrypted(f"arrived {when:%Y-%m-%d}", signer, rsa2048.cert, when - SIGNED_BEFORE_ARRIVAL), when)
        for when in reversed(arrivals)
    ]
    # An old message sent again: signed 400 days before it reached the server.
    resent_arrival = NOW - timedelta(days=200)
    mail.append(
        (signed_encrypted("sent again", signer, rsa2048.cert, resent_arrival - timedelta(days=400)), resent_arrival)
    )
    # Unsigned mail, old and new: as before, delivered.
    mail.append((encrypt_message(plain("unsigned old"), [rsa2048.cert]), NOW - timedelta(days=1000)))
    mail.append((plain("plain old"), NOW - timedelta(days=900)))
    append_at(imap_user, mail)

    result = run_cli(home, imap_user)
    assert result.returncode == 5, result.stderr
    delivered = by_uid(home / "mail")
    assert sorted(delivered) == list(range(1, len(mail) + 1))
    stale = len(arrivals) + 1
    for uid, (folder, data) in delivered.items():
        if uid == stale:
            assert folder == ".Quarantine", uid
            assert "stale" in status(data) and "400 days before it arrived" in status(data)
        else:
            assert folder == "", (uid, status(data))
    # A rerun finds nothing new and changes nothing.
    again = run_cli(home, imap_user)
    assert again.returncode == 0, again.stderr
    assert by_uid(home / "mail") == delivered


def _home_with(tmp_path: Path, keypair) -> Path:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[identity]\naddress = "me@example.test"\n')
    KeyDirectory(home / "keys").add_identity(keypair.key, keypair.cert, passphrase=PassphraseSource.unencrypted())
    return home


def _decrypt(home: Path, message: bytes, *options: str) -> subprocess.CompletedProcess[bytes]:
    source = home / "in.eml"
    source.write_bytes(message)
    return subprocess.run(
        [sys.executable, "-m", "mailcrypt", "--home", str(home), "decrypt", *options, str(source)],
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )


def _received(when: datetime) -> bytes:
    # A receiving server's trace field (RFC 5321 §4.4), with a second, older one below it.
    older = email.utils.format_datetime(when - timedelta(hours=3))
    return (
        b"Received: from mx.example.test (mx.example.test [192.0.2.1])\r\n"
        b"\tby imap.example.test with LMTP id abc\r\n"
        b"\tfor <me@example.test>; " + email.utils.format_datetime(when).encode() + b"\r\n"
        b"Received: from sender.example.test by mx.example.test; " + older.encode() + b"\r\n"
    )


def test_decrypt_file_dates_arrival_by_the_topmost_received_field(tmp_path, rsa2048, ec_p256) -> None:  # type: ignore[no-untyped-def]
    home = _home_with(tmp_path, rsa2048)
    signer = Signer(ec_p256.key, ec_p256.cert)
    arrived = NOW - timedelta(days=700)

    # Signed two minutes before it arrived, two years ago: fresh.
    kept = _received(arrived) + signed_encrypted("archived", signer, rsa2048.cert, arrived - SIGNED_BEFORE_ARRIVAL)
    ok = _decrypt(home, kept)
    assert ok.returncode == 0, ok.stderr
    assert b"Subject: archived" in ok.stdout

    # The same signature again: a replay, and the error says how to read it anyway.
    replay = _decrypt(home, kept)
    assert replay.returncode == 5
    assert b"replay" in replay.stderr and b"--no-replay-check" in replay.stderr
    assert replay.stdout == b""
    assert _decrypt(home, kept, "--no-replay-check").returncode == 0

    # Signed 400 days before it arrived: stale, measured against the Received date.
    resent = _received(arrived) + signed_encrypted("resent", signer, rsa2048.cert, arrived - timedelta(days=400))
    stale = _decrypt(home, resent)
    assert stale.returncode == 5
    assert b"400 days before it arrived" in stale.stderr and b"--no-replay-check" in stale.stderr

    # No Received field: arrival is now, so mail signed two years ago is stale.
    bare = signed_encrypted("no trace", signer, rsa2048.cert, arrived - SIGNED_BEFORE_ARRIVAL)
    old = _decrypt(home, bare)
    assert old.returncode == 5
    assert b"stale" in old.stderr and b"--no-replay-check" in old.stderr


def test_since_moved_earlier_fetches_the_older_mail_once(tmp_path, imap_user, rsa2048) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, [rsa2048])
    dates = [NOW - timedelta(days=d) for d in (400, 200, 100, 50, 10)]
    append_at(imap_user, [(plain(f"arrived {d:%Y-%m-%d}"), d) for d in dates])
    first = run_cli(home, imap_user, "--since", f"{NOW - timedelta(days=60):%Y-%m-%d}")
    assert first.returncode == 0, first.stderr
    assert sorted(by_uid(home / "mail")) == [4, 5]
    # New mail since, then --since moved back past two of the older messages.
    append_at(imap_user, [(plain("newest"), NOW)])
    second = run_cli(home, imap_user, "--since", f"{NOW - timedelta(days=250):%Y-%m-%d}")
    assert second.returncode == 0, second.stderr
    assert sorted(by_uid(home / "mail")) == [2, 3, 4, 5, 6]
    # Without --since, or with the same one, nothing more; moved back again, the rest.
    assert run_cli(home, imap_user).returncode == 0
    assert run_cli(home, imap_user, "--since", f"{NOW - timedelta(days=250):%Y-%m-%d}").returncode == 0
    assert sorted(by_uid(home / "mail")) == [2, 3, 4, 5, 6]
    third = run_cli(home, imap_user, "--since", "2000-01-01")
    assert third.returncode == 0, third.stderr
    delivered = by_uid(home / "mail")  # by_uid asserts that no UID has two copies.
    assert sorted(delivered) == [1, 2, 3, 4, 5, 6]
    assert run_cli(home, imap_user, "--since", "2000-01-01").returncode == 0
    assert by_uid(home / "mail") == delivered

"""Quarantine is not a dead end: ``mailcrypt quarantine reprocess`` after importing a missing identity.

Against the real Dovecot: mail encrypted to an identity the home lacks is
quarantined by ``fetch`` (``no-key``); once that identity's PKCS#12 is
imported, re-processing delivers it into the folder it came from (INBOX,
Archive), readable, with the flags a mail client gave the quarantined copy,
and judges freshness against the arrival the copy recorded (a message signed
when it arrived 500 days ago is delivered). A second copy of one of them
becomes a replay and stays; mail for a stranger stays. A rerun changes
nothing, and so does a later fetch. Then the crash test: the re-processing
is killed after each of its steps (SIGKILL, as in ``test_fetch_crash``),
rerun, and every message is there exactly once. Without the server: a copy
with no recorded arrival is judged around the time of re-processing, and
the fetcher's fields are told apart from forged ones of the original.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from fetch_helpers import REQUEUE, ROOT, append_at, env_for, make_home, plain, run_cli, run_crashing, status

from mailcrypt.envelope.signed import Signer
from mailcrypt.fetch import REQUEUE_STEPS, FetchState, MessageProcessor, Requeue
from mailcrypt.fetch.requeue import read_quarantined
from mailcrypt.mime import sign_message
from mailcrypt.mime.enveloped import encrypt_message
from mailcrypt.state import ReplayGuard, Store

NOW = datetime.now(UTC).replace(microsecond=0)
PASSPHRASE = "the home's passphrase"

#: file name before ":" -> (Maildir++ folder, "new" or "cur", flags after ":" or "", bytes)
Copies = dict[str, tuple[str, str, str, bytes]]


def copies(root: Path) -> Copies:
    """Every message file of the Maildir tree by name; asserts no message has two copies."""
    out: Copies = {}
    for folder in [root, *sorted(p for p in root.iterdir() if p.name.startswith("."))]:
        for sub in ("new", "cur"):
            for path in sorted((folder / sub).glob("*")) if (folder / sub).is_dir() else []:
                stem, _, info = path.name.partition(":")
                assert stem not in out, f"{stem} twice: {out[stem][0]!r} and {folder.name!r}"
                out[stem] = ("" if folder == root else folder.name, sub, info, path.read_bytes())
    return out


def origin(stem: str) -> tuple[str, int]:
    """(server folder, UID) of a file name made by the fetcher (``maildir.message_stem``)."""
    folder = next(f for f in ("INBOX", "Archive") if f".{hashlib.sha256(f.encode()).hexdigest()[:10]}." in stem)
    return folder, int(stem.rsplit(",U=", 1)[1])


def reprocess(home: Path, user, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """``mailcrypt --home HOME ARGS`` with the passphrase of the imported identity."""
    env = env_for(user)
    env["MAILCRYPT_PASSPHRASE"] = PASSPHRASE
    return subprocess.run(
        [sys.executable, "-m", "mailcrypt", "--home", str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def late(make_keypair):  # type: ignore[no-untyped-def]
    return make_keypair("reprocess-late", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def mail(late, make_keypair, ec_p256):  # type: ignore[no-untyped-def]
    """(INBOX messages with arrivals, Archive messages with arrivals)."""
    stranger = make_keypair("reprocess-stranger", ec.generate_private_key(ec.SECP256R1()))
    old = NOW - timedelta(days=500)
    signed_old = encrypt_message(
        sign_message(plain("late old"), Signer(ec_p256.key, ec_p256.cert), signing_time=old - timedelta(minutes=2)),
        [late.cert],
    )
    late_a = encrypt_message(plain("late A"), [late.cert])
    inbox = [
        (plain("hello"), NOW - timedelta(days=2)),  # UID 1: delivered by fetch
        (signed_old, old),  # UID 2: fresh by its arrival only
        (late_a, NOW - timedelta(days=1)),  # UID 3: a mail client marks its quarantined copy seen
        (late_a, NOW - timedelta(hours=1)),  # UID 4: the same message again: a replay once UID 3 is read
        (encrypt_message(plain("stranger"), [stranger.cert]), NOW),  # UID 5: never readable
    ]
    archive = [(encrypt_message(plain("late B"), [late.cert]), NOW - timedelta(days=3))]  # Archive UID 1
    return inbox, archive


def _p12(directory: Path, keypair) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    p12 = directory / "late.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"late", keypair.key, keypair.cert, None, serialization.BestAvailableEncryption(b"p12 password")
        )
    )
    password = directory / "p12.pass"
    password.write_text("p12 password\n")
    password.chmod(0o600)
    return p12, password


def _fetched_home(directory: Path, user, mail, rsa2048, late) -> Path:  # type: ignore[no-untyped-def]
    """A home that fetched ``mail`` without the late identity, then imported it; one copy marked seen."""
    inbox, archive = mail
    home = make_home(directory / "home", user, [rsa2048], folders=("INBOX", "Archive"))
    append_at(user, inbox)
    append_at(user, archive, folder="Archive")
    fetched = run_cli(home, user)
    assert fetched.returncode == 3, fetched.stderr
    quarantined = copies(home / "mail")
    assert sorted(origin(s) for s, c in quarantined.items() if c[0] == ".Quarantine") == [
        ("Archive", 1),
        *[("INBOX", uid) for uid in (2, 3, 4, 5)],
    ]
    (stem2,) = [s for s in quarantined if origin(s) == ("INBOX", 2)]
    # The fetcher kept the message's arrival with the copy.
    assert quarantined[stem2][3].startswith(b"X-Mailcrypt-Status: quarantined; no-key")
    assert b"\nX-Mailcrypt-Arrival: " in quarantined[stem2][3].split(b"X-Mailcrypt-Source", 1)[0]
    # A mail client has read the quarantined UID 3 (Maildir: moved to cur/ with the S flag).
    (stem3,) = [s for s in quarantined if origin(s) == ("INBOX", 3)]
    qdir = home / "mail" / ".Quarantine"
    os.rename(qdir / "new" / stem3, qdir / "cur" / f"{stem3}:2,S")
    p12, password = _p12(directory, late)
    imported = reprocess(home, user, "keys", "import", str(p12), "--password-file", str(password))
    assert imported.returncode == 0, imported.stderr
    return home


def check(before: Copies, after: Copies) -> None:
    """The outcome of re-processing ``before``: every late message delivered where it belongs, once."""
    assert set(after) == set(before)
    where = {origin(stem): (folder, sub, info) for stem, (folder, sub, info, _data) in after.items()}
    assert where == {
        ("INBOX", 1): ("", "new", ""),
        ("INBOX", 2): ("", "new", ""),
        ("INBOX", 3): ("", "cur", "2,S"),  # the flags of the quarantined copy
        ("INBOX", 4): (".Quarantine", "new", ""),
        ("INBOX", 5): (".Quarantine", "new", ""),
        ("Archive", 1): (".Archive", "new", ""),
    }
    data = {origin(stem): c[3] for stem, c in after.items()}
    subjects = {("INBOX", 1): b"hello", ("INBOX", 2): b"late old", ("INBOX", 3): b"late A", ("Archive", 1): b"late B"}
    for key, subject in subjects.items():
        assert b"Subject: " + subject + b"\n" in data[key], key
    for key in (("INBOX", 2), ("INBOX", 3), ("Archive", 1)):
        assert status(data[key]).startswith("decrypted"), (key, status(data[key]))
        assert b"X-Mailcrypt-Source: test/" + key[0].encode() + b" <" in data[key]
    # Signed 500 days ago, 2 minutes before it arrived: fresh by its recorded arrival.
    assert "signature" in status(data[("INBOX", 2)]) or b"X-Mailcrypt-Signer" in data[("INBOX", 2)]
    assert status(data[("INBOX", 4)]).startswith("quarantined; replay"), status(data[("INBOX", 4)])
    assert status(data[("INBOX", 5)]).startswith("quarantined; no-key"), status(data[("INBOX", 5)])
    # Exactly one status field on a copy left in the quarantine (updated, not added).
    assert data[("INBOX", 4)].count(b"X-Mailcrypt-Status:") == 1


def test_reprocess_delivers_what_the_imported_identity_opens(tmp_path, imap_user, rsa2048, late, mail) -> None:  # type: ignore[no-untyped-def]
    home = _fetched_home(tmp_path, imap_user, mail, rsa2048, late)
    before = copies(home / "mail")

    first = reprocess(home, imap_user, "quarantine", "reprocess")
    # A replay and a message for a stranger remain: the most serious reason decides (5).
    assert first.returncode == 5, first.stderr
    assert "3 delivered" in first.stdout and "2 still quarantined" in first.stdout, first.stdout
    after = copies(home / "mail")
    check(before, after)
    assert [p for p in (home / "mail").rglob("tmp/*")] == []

    again = reprocess(home, imap_user, "quarantine", "reprocess", "--account", "test")
    assert again.returncode == 5, again.stderr
    assert "0 delivered" in again.stdout, again.stdout
    assert copies(home / "mail") == after
    # The fetcher still finds nothing new and delivers nothing twice.
    fetched = reprocess(home, imap_user, "fetch")
    assert fetched.returncode == 0, fetched.stderr
    assert copies(home / "mail") == after


@pytest.fixture(scope="module")
def fetched_template(dovecot, tmp_path_factory, rsa2048, late, mail):  # type: ignore[no-untyped-def]
    """One fetched and imported home, copied for each crash case (re-processing needs no server)."""
    user = dovecot.add_user()
    return user, _fetched_home(tmp_path_factory.mktemp("reprocess-template"), user, mail, rsa2048, late)


@pytest.mark.parametrize("step", REQUEUE_STEPS)
def test_crash_after_each_step_then_rerun(tmp_path, fetched_template, step) -> None:  # type: ignore[no-untyped-def]
    user, template = fetched_template
    home = tmp_path / "home"
    shutil.copytree(template, home, symlinks=True)
    before = copies(home / "mail")
    env = env_for(user)
    env["MAILCRYPT_PASSPHRASE"] = PASSPHRASE
    # UID 3 of INBOX: the seen copy, with a second copy of it (UID 4) processed after it.
    crashed = run_crashing(home, env, REQUEUE, step, 3, "quarantine", "reprocess")
    assert crashed.returncode == -9, (crashed.returncode, crashed.stderr)
    # Between the rename and the unlink the message is in both places: the rerun finishes the unlink.

    rerun = reprocess(home, user, "quarantine", "reprocess")
    assert rerun.returncode == 5, rerun.stderr
    after = copies(home / "mail")
    check(before, after)
    assert [p for p in (home / "mail").rglob("tmp/*")] == []

    final = reprocess(home, user, "quarantine", "reprocess")
    assert final.returncode == 5, final.stderr
    assert copies(home / "mail") == after


# ------------------------------------------------------------------ without the server


def _quarantined(source: str, raw: bytes, *, arrival: datetime | None) -> bytes:
    when = b"" if arrival is None else f"X-Mailcrypt-Arrival: {arrival:%a, %d %b %Y %H:%M:%S +0000}\r\n".encode()
    return (
        b"X-Mailcrypt-Status: quarantined; no-key; no identity\r\n"
        + when
        + f"X-Mailcrypt-Source: {source}\r\n".encode()
        + raw
    )


@pytest.mark.parametrize("recorded", [True, False], ids=["arrival-recorded", "arrival-unknown"])
def test_freshness_uses_the_recorded_arrival(tmp_path, rsa2048, ec_p256, recorded) -> None:  # type: ignore[no-untyped-def]
    from mailcrypt.fetch.maildir import message_stem

    arrival = NOW - timedelta(days=400)
    raw = encrypt_message(
        sign_message(plain("old"), Signer(ec_p256.key, ec_p256.cert), signing_time=arrival - timedelta(minutes=1)),
        [rsa2048.cert],
    )
    stem = message_stem("acct", "INBOX", 7, 9)
    qdir = tmp_path / "mail" / ".Quarantine" / "new"
    qdir.mkdir(parents=True)
    (qdir / stem).write_bytes(_quarantined(f"acct/INBOX <{stem}>", raw, arrival=arrival if recorded else None))
    with Store.open(tmp_path / "state.db") as store:
        processor = MessageProcessor([rsa2048.identity], guard=ReplayGuard(store))
        counts = Requeue(state=FetchState(store), processor=processor).run("acct", tmp_path / "mail")
    if recorded:
        assert counts.delivered == 1
        assert (tmp_path / "mail" / "new" / stem).exists()
        assert not (qdir / stem).exists()
    else:
        # No arrival: judged around the time of re-processing, like any message without one.
        assert counts.delivered == 0 and dict(counts.remaining) == {"stale": 1}
        assert status((qdir / stem).read_bytes()).startswith("quarantined; stale; stale message: signed")
        assert "days ago" in status((qdir / stem).read_bytes())


def test_only_the_fetchers_fields_are_taken_off() -> None:
    original = b"X-Mailcrypt-Status: decrypted; forged\r\nSubject: x\r\n\r\nbody\r\n"
    data = (
        b"X-Mailcrypt-Status: quarantined; no-key; none\r\n"
        b"X-Mailcrypt-Arrival: Mon, 02 Jan 2023 03:04:05 +0000\r\n"
        b"X-Mailcrypt-Source: a/b/c <mailcrypt.a.0123456789.5,U=6>\r\n" + original
    )
    q = read_quarantined(data)
    assert q is not None
    assert q.raw == original
    assert (q.head, q.stem) == ("a/b/c", "mailcrypt.a.0123456789.5,U=6")
    assert q.arrival == datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)
    # LF line ends (a Maildir written as local tools write it) read the same.
    assert read_quarantined(data.replace(b"\r\n", b"\n")) is not None
    # A file that does not start with the fetcher's fields, or has them out of order, is not taken.
    assert read_quarantined(original) is None
    assert read_quarantined(b"X-Mailcrypt-Source: a/b <s>\r\nX-Mailcrypt-Status: x\r\n\r\n") is None


@pytest.mark.parametrize("delimiter", ["/", ".", None], ids=["slash", "dot", "unknown"])
def test_a_nested_folder_is_named_with_the_recorded_delimiter(tmp_path, delimiter) -> None:  # type: ignore[no-untyped-def]
    from mailcrypt.fetch.maildir import message_stem

    stem = message_stem("acct", "Lists/dev", 3, 4)
    qdir = tmp_path / "mail" / ".Quarantine" / "new"
    qdir.mkdir(parents=True)
    (qdir / stem).write_bytes(_quarantined(f"acct/Lists/dev <{stem}>", plain("nested"), arrival=None))
    with Store.open(tmp_path / "state.db") as store:
        state = FetchState(store)
        if delimiter is not None:
            state.note_delimiter("acct", delimiter)
        processor = MessageProcessor([], guard=ReplayGuard(store))
        counts = Requeue(state=state, processor=processor).run("acct", tmp_path / "mail")
    expected = {"/": ".Lists.dev", ".": ".Lists_dev"}
    if delimiter is None:
        # "Lists/dev" is ".Lists.dev" under "/" and ".Lists_dev" under ".": left for a fetch to settle.
        assert counts.skipped == 1 and counts.delivered == 0
        assert "delimiter is not known" in counts.notes[0]
        assert (qdir / stem).exists()
    else:
        assert counts.delivered == 1
        assert (tmp_path / "mail" / expected[delimiter] / "new" / stem).exists()
        assert not (qdir / stem).exists()

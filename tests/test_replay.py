"""The state store and the replay guard (DESIGN.md §2).

A message is accepted once: the same signature (signed) or envelope
(unsigned) digest a second time is ``ReplayedMessage`` with the time it was
first seen. A signingTime older than the window (30 days) or more than the
skew (5 minutes) ahead is ``StaleMessage``; 2 minutes ahead is fine. The
store runs in WAL mode, two ``Store`` objects (two processes) can use it at
once, and of two racing arrivals of one message exactly one is accepted.
"""

from __future__ import annotations

import datetime
import functools
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mailcrypt import errors
from mailcrypt.envelope import Signer
from mailcrypt.mime.enveloped import encrypt_message
from mailcrypt.mime.signed import sign_message
from mailcrypt.mime.unwrap import unwrap_message
from mailcrypt.state import open_database, transaction
from mailcrypt.state.replay import ReplayGuard
from mailcrypt.state.store import SCHEMA_VERSION, Store

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
MINUTE = datetime.timedelta(minutes=1)
DAY = datetime.timedelta(days=1)
MESSAGE = b"From: a@example.test\r\nTo: rsa2048@example.test\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Store.open(tmp_path / "state.db") as s:
        yield s


@pytest.fixture
def guard(store: Store) -> ReplayGuard:
    return ReplayGuard(store)


# ------------------------------------------------------------------ store


def test_store_is_wal_versioned_private_and_has_its_tables(store: Store) -> None:
    assert store.journal_mode == "wal"
    assert store.schema_version == SCHEMA_VERSION
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    tables = {row[0] for row in store.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"schema_version", "replay_cache", "fetch_state", "capabilities"} <= tables
    columns = {row[1] for row in store.read("PRAGMA table_info(fetch_state)")}
    assert {"account", "folder", "uidvalidity", "last_uid"} <= columns
    columns = {row[1] for row in store.read("PRAGMA table_info(capabilities)")}
    assert {"address", "fingerprint", "capabilities", "seen_at"} <= columns
    columns = {row[1] for row in store.read("PRAGMA table_info(replay_cache)")}
    assert columns == {"digest", "first_seen", "signing_time", "kind"}


def test_reopening_keeps_data_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store.open(path) as s:
        ReplayGuard(s).accept(b"\x01" * 32, NOW, NOW)
    with Store.open(path) as s:
        assert s.read("SELECT count(*) FROM replay_cache") == [(1,)]
        with s.transaction() as conn:
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(errors.ConfigError, match="schema version"):
        Store.open(path)
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(errors.ConfigError):
        Store.open(tmp_path / "junk.db")


def test_a_failed_transaction_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            conn.execute("INSERT INTO fetch_state VALUES ('work', 'INBOX', 7, 42, 0)")
            raise RuntimeError("crash between the steps")
    assert store.read("SELECT count(*) FROM fetch_state") == [(0,)]


def test_two_store_objects_at_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store.open(path) as first, Store.open(path) as second:
        ReplayGuard(first).accept(b"\x02" * 32, NOW, NOW)
        with pytest.raises(errors.ReplayedMessage):
            ReplayGuard(second).accept(b"\x02" * 32, NOW, NOW + MINUTE)
        ReplayGuard(second).accept(b"\x03" * 32, NOW, NOW)
        assert first.read("SELECT count(*) FROM replay_cache") == [(2,)]


def test_racing_arrivals_of_one_message_are_accepted_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    stores = [Store.open(path) for _ in range(4)]
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def arrive(s: Store) -> None:
        barrier.wait()
        try:
            ReplayGuard(s).accept(b"\x04" * 32, NOW, NOW)
            outcomes.append("accepted")
        except errors.ReplayedMessage:
            outcomes.append("replay")

    threads = [threading.Thread(target=arrive, args=(stores[i % 4],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert sorted(outcomes) == ["accepted"] + ["replay"] * 7


def test_open_database_makes_a_private_file_with_what_is_asked(tmp_path: Path) -> None:
    wal = open_database(tmp_path / "a.db", what="the test file", wal=True, foreign_keys=True)
    plain = open_database(tmp_path / "b.db", what="the test file", wal=False)
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "a.db").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "b.db").st_mode) == 0o600
        assert wal.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert wal.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert wal.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert plain.execute("PRAGMA foreign_keys").fetchone()[0] == 0
        assert plain.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
        # Autocommit: nothing is open until a transaction begins one.
        assert not wal.in_transaction and not plain.in_transaction
    finally:
        wal.close()
        plain.close()
    with pytest.raises(errors.ConfigError, match=f"cannot create the test file {tmp_path}/missing/c.db: "):
        open_database(tmp_path / "missing" / "c.db", what="the test file", wal=False)
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(errors.ConfigError, match=f"cannot open the test file {tmp_path}/junk.db: "):
        open_database(tmp_path / "junk.db", what="the test file", wal=True)


def test_transaction_commits_or_rolls_back_and_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    first = open_database(path, what="t", wal=True)
    second = open_database(path, what="t", wal=True)
    second.execute("PRAGMA busy_timeout = 0")
    try:
        with transaction(first) as conn:
            conn.execute("CREATE TABLE t (x INTEGER)")
            conn.execute("INSERT INTO t VALUES (1)")
            # BEGIN IMMEDIATE took the write lock: another writer cannot start.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                second.execute("BEGIN IMMEDIATE")
        with pytest.raises(RuntimeError):
            with transaction(first) as conn:
                conn.execute("INSERT INTO t VALUES (2)")
                raise RuntimeError("between the steps")
        assert not first.in_transaction
        assert second.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        first.close()
        second.close()


# ------------------------------------------------------------------ guard


def test_same_digest_twice_is_a_replay_with_first_seen(guard: ReplayGuard) -> None:
    fresh = guard.accept(b"\xaa" * 32, NOW - MINUTE, NOW)
    assert fresh.recorded and fresh.digest == "aa" * 32 and fresh.accepted_at == NOW
    with pytest.raises(errors.ReplayedMessage) as caught:
        guard.accept(b"\xaa" * 32, NOW - MINUTE, NOW + 3 * DAY)
    assert caught.value.first_seen == NOW
    assert caught.value.exit_code == 5 and caught.value.kind == "signature"
    assert "first accepted 2026-05-01 12:00:00 UTC" in str(caught.value)


@pytest.mark.parametrize(
    ("offset", "fresh"),
    [(-40 * DAY, False), (-29 * DAY, True), (2 * MINUTE, True), (6 * MINUTE, False), (0 * MINUTE, True)],
    ids=["40-days-ago", "29-days-ago", "2-minutes-ahead", "6-minutes-ahead", "now"],
)
def test_freshness_window(guard: ReplayGuard, offset: datetime.timedelta, fresh: bool) -> None:
    digest = os.urandom(32)
    if fresh:
        assert guard.accept(digest, NOW + offset, NOW).signing_time == NOW + offset
        return
    with pytest.raises(errors.StaleMessage) as caught:
        guard.accept(digest, NOW + offset, NOW)
    assert caught.value.signing_time == NOW + offset
    assert caught.value.window == (NOW - 30 * DAY, NOW + 5 * MINUTE)
    assert caught.value.exit_code == 5
    # A stale message is not recorded: nothing to find later.
    assert guard.store.read("SELECT count(*) FROM replay_cache") == [(0,)]


def test_signature_without_signing_time_is_stale_envelope_is_not(guard: ReplayGuard) -> None:
    with pytest.raises(errors.StaleMessage, match="no signing time"):
        guard.accept(b"\x05" * 32, None, NOW)
    assert guard.accept(b"\x06" * 32, None, NOW, kind="envelope").kind == "envelope"


def test_configurable_window_and_check_only(store: Store) -> None:
    guard = ReplayGuard(store, max_age=7 * DAY, future_skew=30 * datetime.timedelta(seconds=1))
    with pytest.raises(errors.StaleMessage):
        guard.accept(b"\x07" * 32, NOW - 8 * DAY, NOW)
    with pytest.raises(errors.StaleMessage):
        guard.accept(b"\x07" * 32, NOW + MINUTE, NOW)
    assert not guard.check(b"\x07" * 32, NOW, NOW).recorded
    guard.accept(b"\x07" * 32, NOW, NOW)  # Not recorded before, so not a replay.
    with pytest.raises(ValueError):
        ReplayGuard(store, max_age=datetime.timedelta(0))
    with pytest.raises(TypeError):
        guard.accept(b"\x08" * 32, NOW.replace(tzinfo=None), NOW)


def test_prune_forgets_what_left_the_window(guard: ReplayGuard) -> None:
    guard.accept(b"\x10" * 32, NOW - 20 * DAY, NOW)  # Signed 20 days ago.
    guard.accept(b"\x11" * 32, NOW, NOW)
    guard.accept(b"\x12" * 32, None, NOW - 10 * DAY, kind="envelope")  # Arrived 10 days ago.
    # The 20-day-old signature is 35 days old, but was accepted only 15 days ago: still a replay.
    assert guard.prune(NOW + 15 * DAY) == 0
    with pytest.raises(errors.ReplayedMessage):
        guard.check(b"\x10" * 32, NOW - 20 * DAY, NOW + 15 * DAY, arrival=NOW - DAY)
    assert guard.prune(NOW + 25 * DAY) == 1  # The envelope's arrival left the window.
    assert guard.prune(NOW + 31 * DAY) == 2
    assert guard.store.read("SELECT digest FROM replay_cache") == []
    # Once pruned, a copy arriving now is refused as stale, not let through.
    with pytest.raises(errors.StaleMessage):
        guard.accept(b"\x10" * 32, NOW - 20 * DAY, NOW + 31 * DAY)


def test_freshness_is_measured_against_arrival(guard: ReplayGuard) -> None:
    arrived = NOW - 700 * DAY
    # Signed two minutes before it arrived, two years ago: fresh.
    guard.accept(b"\x13" * 32, arrived - 2 * MINUTE, NOW, arrival=arrived)
    with pytest.raises(errors.StaleMessage, match="400 days before it arrived"):
        guard.accept(b"\x14" * 32, arrived - 400 * DAY, NOW, arrival=arrived)
    with pytest.raises(errors.StaleMessage, match="after it arrived"):
        guard.accept(b"\x15" * 32, arrived + 10 * MINUTE, NOW, arrival=arrived)
    # Without an arrival, or with one in the future, the window lies around now.
    with pytest.raises(errors.StaleMessage, match="days ago"):
        guard.accept(b"\x16" * 32, arrived - 2 * MINUTE, NOW)
    with pytest.raises(errors.StaleMessage, match="in the future"):
        guard.accept(b"\x17" * 32, NOW + DAY, NOW, arrival=NOW + DAY + MINUTE)


def test_every_layer_key_is_remembered(guard: ReplayGuard) -> None:
    guard.accept(b"\x20" * 32, NOW, NOW, also=[b"\x21" * 32])
    with pytest.raises(errors.ReplayedMessage):  # The envelope again, its signature stripped.
        guard.accept(b"\x21" * 32, None, NOW, kind="envelope")


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def signer(make_keypair) -> Signer:  # type: ignore[no-untyped-def]
    pair = make_keypair("replay-signer", ec.generate_private_key(ec.SECP256R1()), key_usage="signing")
    return Signer(pair.key, pair.cert)


def test_the_same_encrypted_message_twice(guard: ReplayGuard, rsa2048, signer: Signer) -> None:
    for message in (MESSAGE, sign_message(MESSAGE, signer, signing_time=NOW - MINUTE)):
        encrypted = encrypt_message(message, [rsa2048.cert])
        first = unwrap_message(encrypted, [rsa2048.identity], now=NOW)
        assert guard.accept_unwrapped(first, NOW) is not None
        again = unwrap_message(encrypted, [rsa2048.identity], now=NOW + DAY)
        with pytest.raises(errors.ReplayedMessage) as caught:
            guard.accept_unwrapped(again, NOW + DAY)
        assert caught.value.first_seen == NOW
        assert caught.value.kind == ("signature" if first.signatures else "envelope")


def test_a_signed_message_encrypted_anew_is_still_a_replay(guard: ReplayGuard, rsa2048, signer: Signer) -> None:
    """Anyone can encrypt to us: a copied signed message in a fresh envelope is caught by its signature."""
    signed = sign_message(MESSAGE, signer, signing_time=NOW)
    guard.accept_unwrapped(unwrap_message(encrypt_message(signed, [rsa2048.cert]), [rsa2048.identity], now=NOW), NOW)
    rewrapped = unwrap_message(encrypt_message(signed, [rsa2048.cert]), [rsa2048.identity], now=NOW)
    with pytest.raises(errors.ReplayedMessage):
        guard.accept_unwrapped(rewrapped, NOW + MINUTE)


@pytest.mark.parametrize(
    ("offset", "stale"),
    [(-40 * DAY, True), (2 * MINUTE, False), (6 * MINUTE, True)],
    ids=["signed-40-days-ago", "2-minutes-ahead", "6-minutes-ahead"],
)
def test_signed_message_freshness(guard: ReplayGuard, rsa2048, signer: Signer, offset, stale) -> None:
    encrypted = encrypt_message(sign_message(MESSAGE, signer, signing_time=NOW + offset), [rsa2048.cert])
    result = unwrap_message(encrypted, [rsa2048.identity], now=NOW)
    if stale:
        with pytest.raises(errors.StaleMessage):
            guard.accept_unwrapped(result, NOW)
    else:
        assert guard.accept_unwrapped(result, NOW) is not None


def test_plain_message_has_nothing_to_check(guard: ReplayGuard) -> None:
    assert guard.accept_unwrapped(unwrap_message(MESSAGE, now=NOW), NOW) is None


def test_store_connection_is_shared_between_threads(store: Store) -> None:
    guard = ReplayGuard(store)
    errors_seen: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                guard.accept(bytes([i, j]) * 16, NOW, NOW)
        except (sqlite3.Error, errors.MailcryptError) as exc:  # pragma: no cover - the failure being tested for
            errors_seen.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors_seen == []
    assert store.read("SELECT count(*) FROM replay_cache") == [(120,)]


def test_a_batch_lookup_decides_like_a_query_per_message(guard: ReplayGuard) -> None:
    """``seen()`` once for many keys, then ``check_against``: the same answers as ``check``, one query each."""
    a, b, c, d = (bytes([n]) * 32 for n in b"abcd")
    guard.accept(a, None, NOW, kind="envelope")
    guard.accept(b, NOW - DAY, NOW + MINUTE, also=[c])
    seen = guard.seen([a, b, c, d])
    assert set(seen) == {a.hex(), b.hex(), c.hex()}
    later = NOW + 2 * MINUTE
    cases = ((a, (), "envelope", None), (d, (c,), "signature", NOW), (d, (), "envelope", None))
    for digest, also, kind, signed in cases:
        answers: list[object] = []
        for decide in (guard.check, functools.partial(guard.check_against, seen)):
            try:
                decide(digest, signed, later, kind=kind, also=also)
                answers.append("fresh")
            except errors.ReplayedMessage as exc:
                answers.append(("replay", exc.first_seen))
        assert answers[0] == answers[1]
    assert guard.seen([d]) == {}  # only looked, nothing recorded


def test_check_and_check_against_record_nothing_accept_and_record_delivered_do(guard: ReplayGuard) -> None:
    e, f = b"\xee" * 32, b"\xff" * 32
    assert guard.check(e, NOW, NOW, also=[f]).recorded is False
    assert guard.check_against({}, e, NOW, NOW, also=[f]).recorded is False
    assert guard.seen([e, f]) == {}
    # Freshness is judged by all three, with or without a lookup.
    for decide in (guard.accept, guard.check, functools.partial(guard.check_against, {})):
        with pytest.raises(errors.StaleMessage):
            decide(e, NOW - 40 * DAY, NOW)
    assert guard.seen([e, f]) == {}
    guard.record_delivered([(e, NOW, NOW, "signature", [f])])
    for decide in (guard.accept, guard.check, functools.partial(guard.check_against, guard.seen([f]))):
        with pytest.raises(errors.ReplayedMessage):
            decide(f, None, NOW + MINUTE, kind="envelope")
    fresh = guard.accept(b"\xdd" * 32, NOW, NOW)
    assert fresh.recorded is True and set(guard.seen([b"\xdd" * 32])) == {"dd" * 32}

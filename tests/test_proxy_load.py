"""The load test of issue 14: 20 clients x 50 messages through an upstream that fails about 10% of them.

The upstream is a ``FaultServer`` whose faults come from a seeded RNG (the
seed is printed; ``MAILCRYPT_LOAD_SEED`` repeats a run): a tenth of the
transactions are dropped (hang-up, no reply, nothing stored) or answered
451 at a random step (MAIL, RCPT, DATA, the final dot), and a few more are
slow to answer one step. In the first run a few clients also give up in
the middle of a transaction (after the DATA command, or after the body
without waiting for the reply). Every message has
its own Message-ID, and the upstream counts what it stored per
(Message-ID, recipient), that is per envelope.

First run: the proxy in-process, every tenth message with a Bcc recipient
(two envelopes; a Bcc copy that fails after the To copy was accepted goes
through the retry spool). Second run: ``mailcrypt proxy`` as a real process,
killed with SIGKILL once mid-run and started again on the same port. Each
time, every message that got 250 is stored exactly once per envelope, none
that got a 4xx/5xx reply is stored at all, and one whose client lost the
connection without a reply (at the kill) or gave up is stored at most once
per envelope. Afterwards the proxy's pooled connections owe no reply.
"""

from __future__ import annotations

import os
import random
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from proxy_fixtures import people as people
from proxy_kit import SENDER, FaultServer, Person, make_home, start_proxy
from test_proxy_once import proxy_process, with_proxy_setting

from mailcrypt import config

pytestmark = pytest.mark.slow

CLIENTS = 20
MESSAGES = 50
FAULT_RATE = 0.10
SLOW_RATE = 0.03
GIVE_UP_RATE = 0.03
BOB, DAVE = "bob@example.org", "dave@example.com"


class Faults:
    """About ``FAULT_RATE`` of the transactions fail at one random step, dropped or answered 451 (seeded)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.plans: dict[int, tuple[str, str] | None] = {}
        self.injected: Counter[str] = Counter()

    def __call__(self, number: int, step: str, sender: bytes) -> float | str | bytes | None:
        with self.lock:
            if step == "MAIL":
                draw = self.rng.random()
                where = self.rng.choice(("MAIL", "RCPT", "DATA", "DOT"))
                kind = self.rng.choice(("drop", "451")) if draw < FAULT_RATE else "slow"
                self.plans[number] = (where, kind) if draw < FAULT_RATE + SLOW_RATE else None
            plan = self.plans.get(number)
            if plan is None or plan[0] != step:
                return None
            self.plans[number] = None  # One fault a transaction.
            self.injected[f"{plan[1]} at {step}"] += 1
        if plan[1] == "slow":
            return 0.7
        return "drop" if plan[1] == "drop" else b"451 4.3.0 injected fault, try again later"


class Outcomes:
    """What each client heard, per message: "ok" (250), "refused" (4xx/5xx), "lost" (no reply), "left" (gave up)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_message: dict[str, tuple[str, tuple[str, ...]]] = {}

    def note(self, message_id: str, outcome: str, recipients: tuple[str, ...]) -> None:
        with self.lock:
            self.by_message[message_id] = (outcome, recipients)

    def __len__(self) -> int:
        return len(self.by_message)


def _message(message_id: str, bcc: bool) -> bytes:
    head = f"From: <{SENDER}>\r\nTo: <{BOB}>\r\n" + (f"Bcc: <{DAVE}>\r\n" if bcc else "")
    head += f"Subject: load\r\nMessage-ID: {message_id}\r\n\r\n"
    return head.encode() + b"A line of the load test.\r\n"


def _give_up(client: smtplib.SMTP, recipients: tuple[str, ...], message: bytes, *, after_body: bool) -> None:
    """A transaction the client leaves without hearing the end: after the DATA command, or after the body."""
    client.ehlo_or_helo_if_needed()
    client.mail(SENDER)
    for r in recipients:
        client.rcpt(r)
    client.putcmd("data")
    if after_body and client.getreply()[0] == 354:
        client.send(message + b".\r\n")
    client.close()


def _client(
    number: int,
    port: Callable[[], int],
    outcomes: Outcomes,
    *,
    bcc_every: int,
    run: str,
    deadline: float,
    seed: int,
    give_up: float,
) -> None:
    rng = random.Random(seed * 1000 + number)
    client: smtplib.SMTP | None = None
    for i in range(MESSAGES):
        message_id = f"<{run}-c{number}-m{i}@load.test>"
        bcc = bcc_every > 0 and i % bcc_every == 0
        recipients = (BOB, DAVE) if bcc else (BOB,)
        while client is None:
            try:
                client = smtplib.SMTP("127.0.0.1", port(), timeout=60)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # The proxy is being restarted.
        if rng.random() < give_up:
            try:
                _give_up(client, recipients, _message(message_id, bcc), after_body=rng.random() < 0.5)
            except (smtplib.SMTPException, OSError):
                client.close()
            outcomes.note(message_id, "left", recipients)
            client = None
            continue
        try:
            refused = client.sendmail(SENDER, list(recipients), _message(message_id, bcc))
            outcomes.note(message_id, "refused" if refused else "ok", recipients)
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused):
            outcomes.note(message_id, "refused", recipients)
        except (smtplib.SMTPServerDisconnected, OSError):
            outcomes.note(message_id, "lost", recipients)
            client.close()
            client = None
    if client is not None:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _run_clients(
    port: Callable[[], int], outcomes: Outcomes, *, bcc_every: int, run: str, seed: int, give_up: float = 0.0
) -> list[threading.Thread]:
    deadline = time.monotonic() + 150
    options = {"bcc_every": bcc_every, "run": run, "deadline": deadline, "seed": seed, "give_up": give_up}
    threads = [threading.Thread(target=_client, args=(n, port, outcomes), kwargs=options) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    return threads


def _check(run: str, up: FaultServer, outcomes: Outcomes, faults: Faults, *, settle: float = 0.0) -> None:
    """Exactly once per envelope for 250, never for 4xx/5xx, at most once when the reply was lost."""

    def delivered() -> Counter[tuple[str, str]]:
        with up.lock:
            stored = list(up.stored)
        return Counter(
            (s.message_id.decode(), r.decode().strip("<>")) for s in stored if s.message_id for r in s.recipients
        )

    # Groups in the retry spool are still on their way: wait for them (bounded).
    wanted = {(m, r) for m, (o, rs) in outcomes.by_message.items() if o == "ok" for r in rs}
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline and not wanted <= set(delivered()):
        time.sleep(0.1)
    counts = delivered()
    heard = Counter(o for o, _ in outcomes.by_message.values())
    per_envelope: Counter[str] = Counter()
    for message_id, (outcome, recipients) in outcomes.by_message.items():
        for r in recipients:
            per_envelope[f"{outcome}: stored {counts.get((message_id, r), 0)}x"] += 1
    print(
        f"\n{run}: {len(outcomes)} messages, replies {dict(heard)}; faults injected {dict(faults.injected)}; "
        f"envelopes {dict(sorted(per_envelope.items()))}; upstream stored {sum(counts.values())} envelope copies"
    )
    assert len(outcomes) == CLIENTS * MESSAGES
    known = {(m, r) for m, (_, rs) in outcomes.by_message.items() for r in rs}
    assert set(counts) <= known, set(counts) - known
    for message_id, (outcome, recipients) in outcomes.by_message.items():
        for r in recipients:
            n = counts.get((message_id, r), 0)
            if outcome == "ok":
                assert n == 1, (message_id, r, n)
            elif outcome == "refused":
                assert n == 0, (message_id, r, n)
            else:
                assert n <= 1, (message_id, r, n)


def test_load_with_faults_then_a_kill(tmp_path: Path, people: dict[str, Person]) -> None:
    seed = int(os.environ.get("MAILCRYPT_LOAD_SEED") or time.time_ns() % 1_000_000)
    print(f"\nload test seed: {seed} (MAILCRYPT_LOAD_SEED={seed} repeats it)")
    started = time.monotonic()

    # Run 1: in-process, with Bcc copies (and so the retry spool).
    faults = Faults(seed)
    up = FaultServer(faults).start()
    try:
        settings = make_home(tmp_path / "one", upstream_port=up.port, recipients=tuple(people.values()), timeout=20)
        settings = _no_logins(settings)
        running = start_proxy(settings)
        outcomes = Outcomes()
        try:
            for t in _run_clients(
                lambda: running.port, outcomes, bcc_every=10, run="one", seed=seed, give_up=GIVE_UP_RATE
            ):
                t.join(180)
            _check("in-process", up, outcomes, faults, settle=20)
            pool = running.server.pool
            assert pool is not None
            assert all(conn.in_step for _, conn, _ in pool._idle)
        finally:
            running.thread.stop()
    finally:
        up.stop()

    # Run 2: `mailcrypt proxy` as a process, killed once mid-run and started again.
    faults = Faults(seed + 1)
    up = FaultServer(faults).start()
    proc = None
    try:
        settings = make_home(tmp_path / "two", upstream_port=up.port, recipients=tuple(people.values()), timeout=20)
        settings = _no_logins(settings)
        proc, port = proxy_process(settings)
        outcomes = Outcomes()
        threads = _run_clients(lambda: port, outcomes, bcc_every=0, run="two", seed=seed + 1)
        while len(outcomes) < CLIENTS * MESSAGES * 2 // 5 and any(t.is_alive() for t in threads):
            time.sleep(0.02)
        proc.kill()  # SIGKILL: nothing is finished, nothing is flushed.
        proc.wait(10)
        killed_at = len(outcomes)
        proc, _ = proxy_process(settings, port)
        for t in threads:
            t.join(180)
        print(f"\nkilled with SIGKILL after {killed_at} replies; restarted on port {port}")
        _check("killed and restarted", up, outcomes, faults)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except Exception:
                proc.kill()
                proc.wait(10)
        up.stop()
    print(f"load test took {time.monotonic() - started:.1f} s")


def _no_logins(settings: config.Settings) -> config.Settings:
    """``auth = "none"`` (allowed on loopback): the load is relaying, not scrypt."""
    path = settings.home / "config.toml"
    text = path.read_text()
    assert 'auth = "required"' in text
    path.write_text(text.replace('auth = "required"', 'auth = "none"', 1))
    return with_proxy_setting(config.load_settings(settings.home), "shutdown_grace = 5")

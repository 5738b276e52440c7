"""Exactly once under every interleaving (issue 14, findings 1-4), each against a real peer on loopback.

The upstream side is ``FaultServer`` (a strict server that stalls, hangs up
or refuses at a chosen step, and keeps only what it answered 250); the
clients are smtplib and ``RawClient``. Each test fails on a proxy that pools
a connection with replies unread, drops a delivery report it cannot
encrypt, ends running transactions at SIGTERM, or gives up on the reply to
the final dot after the command timeout.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from proxy_fixtures import people as people
from proxy_kit import (
    PASSWORD,
    SENDER,
    FaultServer,
    Person,
    RawClient,
    closed_port,
    make_home,
    start_proxy,
)

from mailcrypt import config
from proxy.auth import UserStore

BODY = b"The plaintext marker 7c1f: only the recipients may read this line.\r\n"


def message(message_id: str, to: str, sender: str = SENDER) -> bytes:
    head = f"From: <{sender}>\r\nTo: {to}\r\nSubject: once\r\nMessage-ID: {message_id}\r\n\r\n"
    return head.encode() + BODY


def with_proxy_setting(settings: config.Settings, line: str) -> config.Settings:
    """The home's config with ``line`` added to its [proxy] table."""
    path = settings.home / "config.toml"
    path.write_text(path.read_text().replace("[proxy]\n", f"[proxy]\n{line}\n", 1))
    return config.load_settings(settings.home)


# ------------------------------------------------------------------ finding 1


def test_a_client_leaving_while_a_stale_connection_is_replaced_leaves_the_pool_in_step(
    tmp_path: Path, people: dict[str, Person]
) -> None:
    """Stale pooled connection, slow MAIL on the new one, client gone: the next messages arrive whole."""
    stale = threading.Event()

    def rule(number: int, step: str, sender: bytes) -> float | str | None:
        if step == "MAIL" and number == 1 and stale.is_set():
            return "drop"  # The pooled connection went stale.
        if step == "MAIL" and number == 2:
            return 2.5  # The server is slow to answer MAIL on the replacement.
        return None

    up = FaultServer(rule).start()
    settings = make_home(tmp_path / "home", upstream_port=up.port, recipients=tuple(people.values()), timeout=10)
    running = start_proxy(settings)
    try:
        with running.client() as client:
            assert client.sendmail(SENDER, ["bob@example.org"], message("<a@once>", "bob@example.org")) == {}
        stale.set()
        with RawClient(running.port) as raw:
            raw.login(SENDER, PASSWORD)
            assert raw.send(f"MAIL FROM:<{SENDER}>\r\n".encode())[0].startswith(b"250")
            assert raw.send(b"RCPT TO:<bob@example.org>\r\n")[0].startswith(b"250")
            raw.sock.sendall(b"DATA\r\n")
            time.sleep(1.0)  # The client gives up while the envelope goes again, and hangs up.
        time.sleep(2.5)  # The slow replies arrive (on a connection that must be closed by now).
        for mid in ("<c@once>", "<d@once>"):
            with running.client() as client:
                assert client.sendmail(SENDER, ["bob@example.org"], message(mid, "bob@example.org")) == {}
        idle = [conn for _, conn, _ in running.server.pool._idle] if running.server.pool else []
    finally:
        running.thread.stop()
        up.stop()
    assert [s.message_id for s in up.stored] == [b"<a@once>", b"<c@once>", b"<d@once>"]
    assert all(b"application/pkcs7-mime" in s.data for s in up.stored)
    assert all(conn.pending == 0 for conn in idle)


# ------------------------------------------------------------------ finding 2


def test_a_report_that_cannot_be_encrypted_is_sent_without_the_content(
    tmp_path: Path, people: dict[str, Person]
) -> None:
    """Plaintext copy accepted, the encrypted copy refused late, the sender has no identity: told, never dropped."""
    nokey = "nokey@example.org"
    dots: dict[bytes, int] = {}

    def rule(number: int, step: str, sender: bytes) -> bytes | None:
        if step != "DOT":
            return None
        who = sender.split(b">")[0] + b">"
        dots[who] = dots.get(who, 0) + 1
        if who == f"<{nokey}>".encode() and dots[who] == 2:
            return b"550 5.7.1 this copy is refused"  # The second (encrypted) copy, after the plaintext one.
        if who == b"<>" and dots[who] == 1:
            return b"451 4.3.0 not now"  # The report's first try.
        return None

    up = FaultServer(rule).start()
    settings = make_home(
        tmp_path / "home",
        upstream_port=up.port,
        recipients=tuple(people.values()),
        extra='\n[policy.domains."open.example"]\npolicy = "opportunistic"\n',
    )
    UserStore(settings.home / "proxy" / "users").add(SENDER, PASSWORD.encode(), replace=True, addresses=(SENDER, nokey))
    running = start_proxy(settings)
    try:
        to = ["carol@open.example", "bob@example.org"]
        with running.client() as client:
            assert client.sendmail(nokey, to, message("<r@once>", ", ".join(to), sender=nokey)) == {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(s.sender.startswith(b"<>") for s in up.stored):
            time.sleep(0.05)
    finally:
        running.thread.stop()
        up.stop()
    reports = [s for s in up.stored if s.sender.startswith(b"<>")]
    assert len(reports) == 1
    assert reports[0].recipients == [f"<{nokey}>".encode()]
    assert b"bob@example.org" in reports[0].data
    assert b"7c1f" not in reports[0].data  # The report names the recipient, never the content.


def test_a_client_leaving_while_to_and_bcc_are_relayed_still_gets_the_bcc_copy_out(
    tmp_path: Path, people: dict[str, Person], caplog: pytest.LogCaptureFixture
) -> None:
    """The client hangs up while the first copy waits for its final reply: the Bcc copy is still sent, and logged."""
    up = FaultServer(lambda number, step, sender: 1.0 if step == "DOT" else None).start()
    settings = make_home(tmp_path / "home", upstream_port=up.port, recipients=tuple(people.values()), timeout=10)
    running = start_proxy(settings)
    head = f"From: <{SENDER}>\r\nTo: bob@example.org\r\nBcc: dave@example.com\r\nMessage-ID: <b@once>\r\n\r\n"
    try:
        with RawClient(running.port) as raw:
            raw.login(SENDER, PASSWORD)
            replies = raw.send(
                f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<dave@example.com>\r\nDATA\r\n".encode(),
                4,
            )
            assert replies[-1].startswith(b"354"), replies
            raw.sock.sendall(head.encode() + BODY + b".\r\n")
            time.sleep(0.3)  # The first copy is upstream, waiting for its final reply; the client leaves.
        up.wait_for(2, timeout=15)
    finally:
        running.thread.stop()
        up.stop()
    copies = sorted(tuple(s.recipients) for s in up.stored)
    assert copies == [(b"<bob@example.org>",), (b"<dave@example.com>",)]
    assert "the client left while it was relayed" in caplog.text


# ------------------------------------------------------------------ finding 3


def proxy_process(settings: config.Settings, port: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    """``mailcrypt proxy`` as a real process on ``port`` (a free one when 0); its log goes to ``proxy.log``."""
    port = port or closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    log_path = settings.home / "proxy.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailcrypt", "--home", str(settings.home), "proxy", "--listen", f"127.0.0.1:{port}"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    deadline = time.monotonic() + 60
    while b"proxy listening" not in log_path.read_bytes()[start:]:
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    return proc, port


def test_sigterm_lets_the_running_transaction_finish_then_421s_after_the_grace(
    tmp_path: Path, people: dict[str, Person]
) -> None:
    """SIGTERM mid-transaction: the client gets its 250 (once delivered); one still idle in a transaction, 421."""
    at_dot = threading.Event()

    def slow_dot(number: int, step: str, sender: bytes) -> float | None:
        if step != "DOT":
            return None
        at_dot.set()  # The message is upstream, waiting for the reply to its final dot.
        return 1.5

    up = FaultServer(slow_dot).start()
    settings = make_home(tmp_path / "home", upstream_port=up.port, recipients=tuple(people.values()), timeout=10)
    settings = with_proxy_setting(settings, "shutdown_grace = 3")
    proc, port = proxy_process(settings)
    outcome: dict[str, object] = {}

    def send() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.login(SENDER, PASSWORD)
                outcome["refused"] = client.sendmail(SENDER, ["bob@example.org"], message("<t@once>", "bob"))
        except smtplib.SMTPException as exc:
            outcome["error"] = exc

    try:
        with RawClient(port) as idle:
            idle.login(SENDER, PASSWORD)
            assert idle.send(f"MAIL FROM:<{SENDER}>\r\n".encode())[0].startswith(b"250")
            sender = threading.Thread(target=send)
            sender.start()
            # A readiness signal, not a sleep: SIGTERM goes when the message is in flight upstream.
            assert at_dot.wait(30), "the message never reached the upstream's final dot"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            sender.join(30)
            # The idle client is still in its transaction: it hears 421 once the grace is over.
            assert idle.read().startswith(b"421")
            assert time.monotonic() - started >= 2.5
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        up.stop()
    assert outcome == {"refused": {}}, outcome
    assert [s.message_id for s in up.stored] == [b"<t@once>"]


# ------------------------------------------------------------------ finding 4


def test_a_final_reply_slower_than_the_command_timeout_counts_as_delivered(
    tmp_path: Path, people: dict[str, Person]
) -> None:
    """The reply to the final dot may take longer than the command timeout (RFC 5321 §4.5.3.2.6)."""
    up = FaultServer(lambda number, step, sender: 1.6 if step == "DOT" else None).start()
    settings = make_home(
        tmp_path / "home",
        upstream_port=up.port,
        recipients=tuple(people.values()),
        timeout=1,
        upstream_extra="data_timeout = 10\n",
    )
    running = start_proxy(settings)
    try:
        with running.client() as client:
            assert client.sendmail(SENDER, ["bob@example.org"], message("<s@once>", "bob@example.org")) == {}
    finally:
        running.thread.stop()
        up.stop()
    assert [s.message_id for s in up.stored] == [b"<s@once>"]

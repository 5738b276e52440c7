"""Upstream faults, each against a real peer on loopback: every message ends accepted exactly once
or refused to the client, and nothing reaches the upstream side in plaintext.

The peers: the recording aiosmtpd ``Upstream`` with rules that answer 451
or 550 at RCPT or at the end of DATA, or stall past the proxy's timeout; a
``RawServer`` for a 421 greeting and for a connection dropped in the middle
of DATA; a closed port for a server that is down.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from pathlib import Path

import pytest
from proxy_fixtures import people as people
from proxy_fixtures import upstream as upstream
from proxy_kit import (
    SENDER,
    Person,
    RawServer,
    Upstream,
    closed_port,
    decrypt,
    inner_body,
    is_encrypted,
    mail,
    make_home,
    sender_key,
    start_proxy,
)

from mailcrypt import errors

BODY = b"The plaintext marker 7c1f: nobody upstream may read this line.\r\n"


def message(to: str, bcc: str = "") -> bytes:
    return mail(to, "fault test", BODY, sender=f"<{SENDER}>", bcc=bcc, message_id="<f1@example.org>")


def run_proxy(tmp_path: Path, port: int, people: dict[str, Person], **home):  # type: ignore[no-untyped-def]
    settings = make_home(tmp_path / "home", upstream_port=port, recipients=tuple(people.values()), **home)
    running = start_proxy(settings)
    running.settings = settings  # type: ignore[attr-defined]
    return running


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream, people):  # type: ignore[no-untyped-def]
    running = run_proxy(tmp_path, upstream.port, people)
    yield running
    running.thread.stop()


def no_plaintext(*blobs: bytes) -> None:
    for blob in blobs:
        assert b"7c1f" not in blob


def all_encrypted(upstream: Upstream) -> None:
    for seen in upstream.attempts:
        assert is_encrypted(seen.data)
        no_plaintext(seen.data)


def send(client: smtplib.SMTP, rcpts: list[str], msg: bytes) -> dict:  # type: ignore[type-arg]
    return client.sendmail(SENDER, rcpts, msg)


# ------------------------------------------------------------------ nothing committed: the client hears it


def test_upstream_down(tmp_path: Path, people) -> None:  # type: ignore[no-untyped-def]
    with run_proxy(tmp_path, closed_port(), people) as running:
        with running.client() as client, pytest.raises(smtplib.SMTPSenderRefused) as caught:
            send(client, ["bob@example.org"], message("bob@example.org"))
        assert caught.value.smtp_code == 451


def test_upstream_down_without_recipient_checks_fails_at_data(tmp_path: Path, people) -> None:  # type: ignore[no-untyped-def]
    with run_proxy(tmp_path, closed_port(), people, upstream_extra="check_recipients = false\n") as running:
        with running.client() as client, pytest.raises(smtplib.SMTPDataError) as caught:
            send(client, ["bob@example.org"], message("bob@example.org"))
        assert caught.value.smtp_code == 451


def test_421_at_greeting(tmp_path: Path, people) -> None:  # type: ignore[no-untyped-def]
    raw = RawServer(greeting=b"421 4.3.2 raw.test shutting down\r\n").start()
    running = run_proxy(tmp_path, raw.port, people)
    try:
        with running.client() as client, pytest.raises(smtplib.SMTPSenderRefused) as caught:
            send(client, ["bob@example.org"], message("bob@example.org"))
        assert caught.value.smtp_code == 451 and b"shutting down" in caught.value.smtp_error
    finally:
        running.thread.stop()
        raw.stop()
    assert raw.connections >= 1


@pytest.mark.parametrize("code", [451, 550])
def test_refusal_at_rcpt_is_told_before_the_body_then_a_retry_goes_once(proxy, upstream: Upstream, code: int) -> None:  # type: ignore[no-untyped-def]
    upstream.rcpt_rules["dave@example.com"] = f"{code} {code // 100}.1.1 mailbox says no"
    both = ["bob@example.org", "dave@example.com"]
    with proxy.client() as client:
        client.ehlo()
        assert client.mail(SENDER)[0] == 250
        assert [client.rcpt(r)[0] for r in both] == [250, 250]
        # The server's word comes at the DATA command, before the body is sent.
        got, text = client.docmd("DATA")
        assert got == code and b"<dave@example.com>" in text and b"mailbox says no" in text
        # The transaction is over: a client that tries again starts with MAIL.
        assert client.docmd("DATA")[0] == 503
    assert upstream.attempts == []
    del upstream.rcpt_rules["dave@example.com"]
    with proxy.client() as client:
        assert send(client, both, message(", ".join(both))) == {}
    (copy,) = upstream.wait_for(1)
    assert sorted(copy.recipients) == both
    all_encrypted(upstream)


@pytest.mark.parametrize("code", [451, 550])
def test_refusal_at_data(proxy, upstream: Upstream, code: int) -> None:  # type: ignore[no-untyped-def]
    upstream.data_rule = lambda rcpts: f"{code} {code // 100}.6.0 content says no"
    with proxy.client() as client, pytest.raises(smtplib.SMTPDataError) as caught:
        send(client, ["bob@example.org"], message("bob@example.org"))
    assert caught.value.smtp_code == code and b"content says no" in caught.value.smtp_error
    assert upstream.received == []
    upstream.data_rule = None
    with proxy.client() as client:
        assert send(client, ["bob@example.org"], message("bob@example.org")) == {}
    assert len(upstream.wait_for(1)) == 1
    all_encrypted(upstream)


def test_timeout(tmp_path: Path, upstream: Upstream, people) -> None:  # type: ignore[no-untyped-def]
    running = run_proxy(tmp_path, upstream.port, people, timeout=1)
    upstream.data_rule = lambda rcpts: 1.6  # Stall past the proxy's timeout, then refuse.
    try:
        with running.client() as client, pytest.raises(smtplib.SMTPDataError) as caught:
            send(client, ["bob@example.org"], message("bob@example.org"))
        assert caught.value.smtp_code == 451
        upstream.data_rule = None
        with running.client() as client:
            assert send(client, ["bob@example.org"], message("bob@example.org")) == {}
    finally:
        running.thread.stop()
    assert len(upstream.wait_for(1)) == 1
    all_encrypted(upstream)


def test_connection_dropped_mid_data(tmp_path: Path, people) -> None:  # type: ignore[no-untyped-def]
    raw = RawServer(drop_after=200).start()
    running = run_proxy(tmp_path, raw.port, people)
    try:
        with running.client() as client, pytest.raises(smtplib.SMTPDataError) as caught:
            send(client, ["bob@example.org"], message("bob@example.org") + b"padding line\r\n" * 50)
        assert caught.value.smtp_code == 451
    finally:
        running.thread.stop()
        raw.stop()
    assert raw.data and b"application/pkcs7-mime" in raw.data
    no_plaintext(raw.data)


def test_message_not_made_after_data_went_upstream(proxy, upstream: Upstream, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """DATA goes upstream before the message is encrypted; if that fails, hanging up ends the transaction."""
    import proxy.groups as groups

    def broken(*args: object) -> bytes:
        raise RuntimeError("injected: the message cannot be encrypted")

    with monkeypatch.context() as patch:
        patch.setattr(groups, "_encrypt", broken)
        with proxy.client() as client, pytest.raises(smtplib.SMTPDataError) as caught:
            send(client, ["bob@example.org"], message("bob@example.org"))
    assert caught.value.smtp_code == 451
    assert upstream.attempts == []  # The upstream transaction never reached the end of DATA.
    with proxy.client() as client:
        assert send(client, ["bob@example.org"], message("bob@example.org")) == {}
    assert len(upstream.wait_for(1)) == 1
    all_encrypted(upstream)


def test_connection_lost_at_rcpt_is_retried_on_a_new_one(tmp_path: Path, people) -> None:  # type: ignore[no-untyped-def]
    """Lost while the recipients are checked: the whole envelope again on a new connection, never a bare DATA."""
    raw = RawServer(drop_on=b"RCPT TO:<dave@example.com>", accept=True).start()
    running = run_proxy(tmp_path, raw.port, people)
    try:
        both = ["bob@example.org", "dave@example.com"]
        with running.client() as client:
            assert send(client, both, message(", ".join(both))) == {}
    finally:
        running.thread.stop()
        raw.stop()
    assert len(raw.lines) == 2  # The first connection was lost at dave's RCPT.
    assert not any(line.upper().startswith(b"DATA") for line in raw.lines[0])
    last = raw.lines[-1]
    data_at = next(i for i, line in enumerate(last) if line.upper().startswith(b"DATA"))
    before = b"".join(last[:data_at]).upper()
    for command in (b"MAIL FROM:<", b"RCPT TO:<BOB@EXAMPLE.ORG>", b"RCPT TO:<DAVE@EXAMPLE.COM>"):
        assert command in before
    assert b"application/pkcs7-mime" in raw.data
    no_plaintext(raw.data)


def test_connection_lost_twice_at_rcpt_refuses_with_451(tmp_path: Path, people) -> None:  # type: ignore[no-untyped-def]
    """Lost on the new connection too: 451 at the DATA command, before the body; nothing was sent."""
    raw = RawServer(drop_on=b"RCPT TO:<dave@example.com>", accept=True)
    raw.drop_every_time = True  # type: ignore[attr-defined]
    raw.start()
    running = run_proxy(tmp_path, raw.port, people)
    try:
        both = ["bob@example.org", "dave@example.com"]
        with running.client() as client, pytest.raises(smtplib.SMTPDataError) as caught:
            send(client, both, message(", ".join(both)))
    finally:
        running.thread.stop()
        raw.stop()
    assert caught.value.smtp_code == 451 and b"unavailable" in caught.value.smtp_error
    assert len(raw.lines) == 2
    assert not any(line.upper().startswith(b"DATA") for lines in raw.lines for line in lines)
    assert not raw.data


def test_first_group_refused_sends_no_other(proxy, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    calls = []

    def rule(rcpts: list[str]) -> object:
        calls.append(list(rcpts))
        return "451 4.3.0 not now" if len(calls) == 1 else None

    upstream.data_rule = rule
    msg = message("bob@example.org", bcc="dave@example.com")
    with proxy.client() as client, pytest.raises(smtplib.SMTPDataError) as caught:
        send(client, ["bob@example.org", "dave@example.com"], msg)
    assert caught.value.smtp_code == 451 and calls == [["bob@example.org"]]
    with proxy.client() as client:
        assert send(client, ["bob@example.org", "dave@example.com"], msg) == {}
    received = upstream.wait_for(2)
    assert sorted(r.recipients for r in received) == [["bob@example.org"], ["dave@example.com"]]
    all_encrypted(upstream)


# ------------------------------------------------------------------ one group accepted, a later one fails


def test_later_group_temporarily_refused_is_spooled_and_sent_once(proxy, upstream: Upstream, people) -> None:  # type: ignore[no-untyped-def]
    refusals = []

    def rule(rcpts: list[str]) -> object:
        if rcpts == ["dave@example.com"] and len(refusals) < 2:
            refusals.append(1)
            return "451 4.2.0 try again later"
        return None

    upstream.data_rule = rule
    with proxy.client() as client:
        assert (
            send(client, ["bob@example.org", "dave@example.com"], message("bob@example.org", bcc="dave@example.com"))
            == {}
        )
    spool = proxy.settings.spool / "new"
    deadline = time.monotonic() + 10
    while len(upstream.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    received = upstream.received
    assert sorted(r.recipients for r in received) == [["bob@example.org"], ["dave@example.com"]]
    assert len(refusals) == 2
    deadline = time.monotonic() + 5
    while any(spool.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(spool.iterdir()) == []
    dave = people["dave"]
    copy = next(r for r in received if r.recipients == ["dave@example.com"])
    assert inner_body(decrypt(copy.data, dave.key_path, dave.cert_path) or b"") == BODY
    all_encrypted(upstream)
    # Two more passes of the spool runner, made on the proxy's own loop: still exactly once.
    runner = proxy.server.runner
    assert runner is not None
    for _ in range(2):
        asyncio.run_coroutine_threadsafe(runner.run_once(), proxy.thread.loop).result(30)
    assert len(upstream.received) == 2


def test_later_group_permanently_refused_bounces_to_the_sender(proxy, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    upstream.data_rule = lambda rcpts: "550 5.7.1 dave does not take this" if rcpts == ["dave@example.com"] else None
    with proxy.client() as client:
        assert (
            send(client, ["bob@example.org", "dave@example.com"], message("bob@example.org", bcc="dave@example.com"))
            == {}
        )
    received = upstream.wait_for(2)
    assert [r.recipients for r in received] == [["bob@example.org"], [SENDER]]
    bounce = received[1]
    assert bounce.sender in ("", "<>") and is_encrypted(bounce.data)  # the null reverse-path
    key, cert = sender_key(proxy.settings)
    report = decrypt(bounce.data, key, cert)
    assert report is not None and b"dave@example.com" in report and b"does not take this" in report
    assert b"multipart/report" in report and b"7c1f" not in report
    spool = proxy.settings.spool / "new"
    assert not spool.exists() or list(spool.iterdir()) == []


# ------------------------------------------------------------------ permanent problems are 5xx


def test_a_header_block_over_1_mib_is_refused_for_good_without_a_traceback(proxy, upstream: Upstream, caplog) -> None:  # type: ignore[no-untyped-def]
    """The same message would fail the same way every time: a 5xx, never "451 try again later"."""
    folded = "".join(f"X-Filler-{i}: {'f' * 70}\r\n" for i in range(14_000))  # 1.1 MiB of well-formed fields
    msg = message("bob@example.org").replace(b"\r\n\r\n", b"\r\n" + folded.encode() + b"\r\n", 1)
    assert len(msg.partition(b"\r\n\r\n")[0]) > 1.1 * (1 << 20)
    with proxy.client() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(client, ["bob@example.org"], msg)
        assert refused.value.smtp_code == 552 and b"5.3.4" in refused.value.smtp_error
        assert b"header" in refused.value.smtp_error
        assert send(client, ["bob@example.org"], message("bob@example.org")) == {}  # The session goes on.
    assert len(upstream.wait_for(1)) == 1
    all_encrypted(upstream)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]


def test_a_message_the_mime_layer_refuses_is_refused_for_good(proxy, upstream: Upstream, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """A ``MessageError`` is about the message itself: 554 5.6.0 with its reason, and the transaction ends upstream."""
    import proxy.groups as groups

    def refuses(*args: object) -> bytes:
        raise errors.MessageError("injected: the message is malformed")

    with monkeypatch.context() as patch:
        patch.setattr(groups, "_encrypt", refuses)
        with proxy.client() as client, pytest.raises(smtplib.SMTPDataError) as caught:
            send(client, ["bob@example.org"], message("bob@example.org"))
    assert caught.value.smtp_code == 554 and caught.value.smtp_error.startswith(b"5.6.0 ")
    assert b"malformed" in caught.value.smtp_error
    assert upstream.attempts == []
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    with proxy.client() as client:
        assert send(client, ["bob@example.org"], message("bob@example.org")) == {}
    assert len(upstream.wait_for(1)) == 1

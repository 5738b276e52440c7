"""The proxy's parts on their own: spool, outbox, delivery report, chained reader, dot-stuffing, wire checks, groups."""

from __future__ import annotations

import asyncio
import functools
import io
import os
from pathlib import Path

import pytest
from cryptography import x509
from proxy_kit import recipient_info_kinds

from mailcrypt.envelope import uses_key_agreement
from mailcrypt.keydir import keygen
from mailcrypt.mime import ChainReader
from mailcrypt.policy import COMPATIBLE, readable_envelopes, readable_together
from proxy.groups import Plan, SenderKeys, make_groups
from proxy.outbox import Outbox
from proxy.relay import Group, Refused
from proxy.smtp import path, stuff
from proxy.spool import PermanentFailure, Spool, SpoolRunner, TemporaryFailure, delivery_report
from proxy.wire import check_message


def test_spool_refuses_plaintext(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    with pytest.raises(ValueError, match="encrypted messages only"):
        spool.put("a@x.org", ["b@y.org"], b"plain", encrypted=False, login=None, reason="451")
    assert not (tmp_path / "spool" / "new").exists() or not any((tmp_path / "spool" / "new").iterdir())


def test_spool_entry_round_trip_and_retry_state(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", intervals=(10, 20))
    path = spool.put("a@x.org", ["b@y.org"], b"CIPHERTEXT", encrypted=True, login="alice", reason="451 later")
    assert path.stat().st_mode & 0o777 == 0o600
    (entry,) = spool.entries()
    assert (entry.sender, entry.recipients, entry.login, entry.attempts) == ("a@x.org", ("b@y.org",), "alice", 0)
    assert spool.message(entry) == b"CIPHERTEXT"
    spool.retry_later(entry, "451 again", now=1000.0)
    (entry,) = spool.entries()
    assert (entry.attempts, entry.next_try, entry.reason) == (1, 1020.0, "451 again")
    spool.remove(entry)
    assert spool.entries() == [] and list((tmp_path / "spool" / "tmp").iterdir()) == []


def test_runner_sends_retries_and_bounces(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", intervals=(0, 0))
    for name in ("ok", "later", "never"):
        spool.put("a@x.org", [f"{name}@y.org"], b"C", encrypted=True, login=None, reason="first")
    bounced: list[tuple[str, list, str]] = []  # type: ignore[type-arg]

    async def send(sender, recipients, message, login):  # type: ignore[no-untyped-def]
        if recipients[0].startswith("later"):
            raise TemporaryFailure("451 still busy")
        if recipients[0].startswith("never"):
            raise PermanentFailure("550 no such user")

    async def bounce(sender, failures, message_id):  # type: ignore[no-untyped-def]
        bounced.append((sender, list(failures), message_id))

    runner = SpoolRunner(spool, send, bounce, retry_hours=1)
    asyncio.run(runner.run_once())
    assert [e.recipients for e in spool.entries()] == [("later@y.org",)]
    assert bounced == [("a@x.org", [("never@y.org", "550 no such user", True)], "")]
    asyncio.run(runner.run_once(now=os.path.getmtime(spool.entries()[0].path) + 3601))
    assert spool.entries() == []
    assert bounced[-1][1] == [("later@y.org", "451 still busy", False)]


def test_delivery_report_names_no_content() -> None:
    report = delivery_report("a@x.org", [("b@y.org", "550 5.1.1 unknown", True)], message_id="sha256:ab")
    assert report.startswith(b"From: Mail Delivery System")
    assert b"To: <a@x.org>" in report and b"multipart/report; report-type=delivery-status" in report
    assert b"Final-Recipient: rfc822; b@y.org" in report and b"Status: 5.0.0" in report


def test_outbox_stages_then_commits(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    staged = [outbox.stage("a@x.org", ["b@y.org"], b"M1"), outbox.stage("a@x.org", ["c@y.org"], b"M2")]
    assert list((tmp_path / "outbox" / "new").iterdir()) == []
    outbox.commit(staged)
    names = sorted(p.read_bytes() for p in (tmp_path / "outbox" / "new").iterdir())
    assert names == [
        b"Return-Path: <a@x.org>\r\nX-Envelope-To: b@y.org\r\nM1",
        b"Return-Path: <a@x.org>\r\nX-Envelope-To: c@y.org\r\nM2",
    ]
    leftover = outbox.stage("a@x.org", ["d@y.org"], b"M3")
    Outbox.discard([leftover])
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []


def test_chain_reader_reads_and_seeks_like_a_file() -> None:
    parts = [b"abc", bytearray(b"defg"), memoryview(b"hij")]
    reader, plain = ChainReader(parts), io.BytesIO(b"abcdefghij")
    for size in (2, 4, 1, 10):
        assert reader.read(size) == plain.read(size)
    assert reader.seek(0, os.SEEK_END) == 10 and reader.tell() == 10
    reader.seek(3)
    assert reader.read() == b"defghij"


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b".a\r\n..b\r\n.\r\n", b"..a\r\n...b\r\n..\r\n"),
        (b"x\r\n.\r\n", b"x\r\n..\r\n"),
    ],
)
def test_dot_stuffing(data: bytes, wire: bytes) -> None:
    assert bytes(stuff(data)) == wire


@pytest.mark.parametrize(
    ("message", "plaintext", "code"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", True, None),
        (b"A: 1\r\n\r\nbody\rmore\r\n", False, None),  # A body that goes only into the encryption.
        (b"A: 1\r\n\r\nbody\rmore\r\n", True, "554 5.6.0 Message refused: a bare CR in the body"),
        (b"A: 1\r\n\r\nbody\nmore\r\n", True, "554 5.6.0 Message refused: a bare LF in the body"),
        (b"A: 1\r\n\r\nbody\0\r\n", True, "554 5.6.0 Message refused: a NUL in the body"),
        (b"A: 1\r\r\n\r\nbody\r\n", False, "554 5.6.0 Message refused: a bare CR in the header"),
        (b"A: 1\nB: 2\r\n\r\nbody\r\n", False, "554 5.6.0 Message refused: a bare LF in the header"),
        (b"A: \0\r\n\r\nbody\r\n", False, "554 5.6.0 Message refused: a NUL in the header"),
        (b"A: " + b"a" * 995 + b"\r\n\r\n" + b"b" * 998 + b"\r\n" + b"c" * 998, True, None),
        (b"A: " + b"a" * 996 + b"\r\n\r\nbody\r\n", False, "500 5.5.6 Line too long: a header line"),
        (b"A: 1\r\n\r\n" + b"b" * 998 + b"\r\n" + b"c" * 999, True, "500 5.5.6 Line too long: a body line"),
        (b"A: 1\r\n\r\n" + b"b" * 5000 + b"\r\n", False, None),
        (b"A: 1\r\n" * 200_000, False, "552 5.3.4 Message header too big"),
    ],
)
def test_what_may_go_upstream_in_the_clear(message: bytes, plaintext: bool, code: str | None) -> None:
    if code is None:
        check_message(message, plaintext=plaintext)
        return
    with pytest.raises(Refused) as refused:
        check_message(message, plaintext=plaintext)
    assert refused.value.reply.startswith(code) and refused.value.reply.isascii()


def test_addresses_go_upstream_as_smtp_paths() -> None:
    assert path("a@example.org") == "<a@example.org>"
    assert path("") == path("<>") == "<>"
    for bad in ("a\r@example.org", "a\n@example.org", "a\0@example.org"):
        with pytest.raises(ValueError):
            path(bad)


# ------------------------------------------------------------------ readable by every recipient (DESIGN.md §1)


@functools.cache
def _certificate(address: str, key_type: str) -> x509.Certificate:
    return keygen.generate_identity(address, key_type=key_type)[1]


def _plan(address: str, key_type: str, *, reads: bool = False) -> Plan:
    certificate = _certificate(address, key_type)
    agreement = uses_key_agreement(certificate)
    return Plan(address, "require", certificate, COMPATIBLE, "the test's policy", agreement, reads or agreement)


def _sender(key_type: str) -> SenderKeys:
    return SenderKeys("me@example.org", _certificate("me@example.org", key_type), COMPATIBLE)


def _groups(
    sender: SenderKeys, to: list[Plan], bcc: tuple[Plan, ...] = (), *, decisions: list[str] | None = None
) -> dict[tuple[str, ...], Group]:
    """``make_groups`` for a message to ``to`` with Bcc ``bcc``, by each group's recipients."""
    head = f"From: me@example.org\r\nTo: {', '.join(p.address for p in to)}\r\nSubject: s\r\n\r\nbody\r\n"
    plans = {p.address: p for p in [*to, *bcc]}
    groups = make_groups(head.encode(), list(plans), plans, sender, decisions=decisions)
    return {g.recipients: g for g in groups}


def _kinds(group: Group) -> list[str]:
    return recipient_info_kinds(asyncio.run(group.render()))


def test_key_agreement_is_kept_from_rsa_clients_not_known_to_read_it() -> None:
    rsa, ec, hidden = _plan("rsa@example.net", "rsa2048"), _plan("ec@example.net", "p256"), _plan("b@x.org", "rsa2048")
    groups = _groups(_sender("p256"), [rsa, ec], (hidden,))
    # Every recipient once; the EC sender's copy rides with the EC recipient, so it needs no envelope of its own.
    assert sorted(groups) == [("b@x.org",), ("ec@example.net",), ("rsa@example.net",)]
    assert [g.kind for g in groups.values()].count("to/cc") == 2
    assert _kinds(groups[("rsa@example.net",)]) == ["ktri"]
    assert _kinds(groups[("b@x.org",)]) == ["ktri"]
    assert _kinds(groups[("ec@example.net",)]) == ["kari", "kari"]


def test_an_ec_senders_copy_is_left_out_when_it_fits_in_no_envelope() -> None:
    rsa, other = _plan("rsa@example.net", "rsa2048"), _plan("other@example.net", "rsa2048")
    decisions: list[str] = []
    groups = _groups(_sender("p256"), [rsa, other], decisions=decisions)
    # One envelope, key transport only: no envelope of the sender's own, as `mailcrypt encrypt` does.
    assert sorted(groups) == [("rsa@example.net", "other@example.net")]
    assert [g.kind for g in groups.values()] == ["to/cc"]
    assert _kinds(groups[("rsa@example.net", "other@example.net")]) == ["ktri", "ktri"]
    assert any("sender's copy (me@example.org) left out of this message" in d for d in decisions)
    # A sender who writes to themselves is a recipient like any other, and gets that copy.
    me = _plan("me@example.org", "p256")
    decisions = []
    groups = _groups(_sender("p256"), [rsa], (me,), decisions=decisions)
    assert sorted(groups) == [("me@example.org",), ("rsa@example.net",)]
    assert groups[("me@example.org",)].kind == "bcc" and _kinds(groups[("me@example.org",)]) == ["kari"]
    assert _kinds(groups[("rsa@example.net",)]) == ["ktri"]
    assert not any("left out of this message" in d for d in decisions)


def test_known_readers_and_rsa_senders_share_one_envelope() -> None:
    rsa, ec = _plan("rsa@example.net", "rsa2048"), _plan("ec@example.net", "p256")
    known = _plan("rsa@example.net", "rsa2048", reads=True)
    # An RSA sender joins both envelopes: key transport is read by every client.
    groups = _groups(_sender("rsa2048"), [rsa, ec])
    assert sorted(groups) == [("ec@example.net",), ("rsa@example.net",)]
    assert _kinds(groups[("rsa@example.net",)]) == ["ktri", "ktri"]
    assert sorted(_kinds(groups[("ec@example.net",)])) == ["kari", "ktri"]
    # An RSA client known to read key agreement (policy or announced ECDH) shares one envelope with everyone.
    (shared,) = _groups(_sender("p256"), [known, ec]).values()
    assert shared.recipients == ("rsa@example.net", "ec@example.net")
    assert sorted(_kinds(shared)) == ["kari", "kari", "ktri"]
    # Only RSA recipients, one of them known: the EC sender's copy goes with the known one, not apart.
    other = _plan("other@example.net", "rsa2048")
    groups = _groups(_sender("p256"), [other, known])
    assert sorted(groups) == [("other@example.net",), ("rsa@example.net",)]
    assert _kinds(groups[("other@example.net",)]) == ["ktri"]
    assert sorted(_kinds(groups[("rsa@example.net",)])) == ["kari", "ktri"]


def test_readable_together_and_envelopes() -> None:
    rsa, ec = _plan("rsa@example.net", "rsa2048"), _plan("ec@example.net", "p256")
    known = _plan("k@example.net", "rsa2048", reads=True)
    assert readable_together([rsa, known]) and readable_together([ec, known]) and readable_together([])
    assert not readable_together([rsa, ec])
    assert readable_envelopes([rsa, ec, known]) == [[rsa], [ec, known]]
    assert readable_envelopes([rsa, known]) == [[rsa, known]] and readable_envelopes([]) == []


# ------------------------------------------------------------------ the background transaction (client.Transaction)


@pytest.mark.parametrize("pipelining", [True, False])
def test_mail_goes_with_the_first_rcpt_only_when_the_server_pipelines(pipelining: bool) -> None:
    """With PIPELINING one write carries MAIL and the first RCPT; without, MAIL goes at once and alone."""
    from proxy.client import Connection
    from proxy.smtp import ServerConfig

    reads: list[bytes] = []  # What the server read, one entry per read: one write of the client's each.

    async def main() -> tuple[list[bytes], list[bool]]:
        served = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 test ESMTP\r\n")
            while chunk := await reader.read(65536):
                reads.append(chunk)
                for line in chunk.splitlines():
                    if line.startswith(b"EHLO"):
                        writer.write(b"250-test\r\n250 PIPELINING\r\n" if pipelining else b"250 test\r\n")
                    else:
                        writer.write(b"250 OK\r\n")
                await writer.drain()
            writer.close()
            served.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await Connection.open(ServerConfig("127.0.0.1", port, "none", None, 10.0))
        transaction = conn.transaction("me@example.org")
        await asyncio.sleep(0.2)  # The client is slow to name its first recipient.
        transaction.add("bob@example.org")
        mail, rcpts = await transaction.finish()
        conn.close()
        await served.wait()
        server.close()
        await server.wait_closed()
        return reads[1:], [mail.ok, *(r.ok for r in rcpts)]

    commands, answers = asyncio.run(main())
    assert answers == [True, True]
    if pipelining:
        assert commands[0] == b"MAIL FROM:<me@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
    else:
        assert commands[:2] == [b"MAIL FROM:<me@example.org>\r\n", b"RCPT TO:<bob@example.org>\r\n"]

"""Size and recipient limits of the proxy: SIZE that fits upstream once encrypted, 552 5.3.4, 452 4.5.3.

A recording upstream on 127.0.0.1 announces a small SIZE; the proxy must
advertise what still fits once the message is encrypted, refuse a larger
``MAIL ... SIZE=`` before the body and a larger body at the end of DATA, and
take at most ``proxy.max_recipients`` recipients (issue 14, finding 12).
"""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest
from proxy_kit import SENDER, Person, Upstream, copy_for, make_home, person, start_proxy

from proxy.sizes import GROWTH, fitting_size, upstream_size

UPSTREAM_SIZE = 1_000_000


@pytest.fixture(scope="module")
def bob(tmp_path_factory: pytest.TempPathFactory) -> Person:
    return person(tmp_path_factory.mktemp("people"), "bob@example.org", "rsa2048")


@pytest.fixture
def upstream():  # type: ignore[no-untyped-def]
    up = Upstream(size=UPSTREAM_SIZE).start()
    yield up
    up.stop()


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream, bob: Person):  # type: ignore[no-untyped-def]
    settings = make_home(
        tmp_path / "home",
        upstream_port=upstream.port,
        recipients=(bob,),
        extra='\n[policy.domains."open.example"]\npolicy = "opportunistic"\n',
    )
    running = start_proxy(settings)
    yield running
    running.thread.stop()


def message(size: int) -> bytes:
    head = f"From: {SENDER}\r\nTo: bob@example.org\r\nSubject: big\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * ((size - len(head)) // len(line))


def advertised(client: smtplib.SMTP) -> int:
    client.ehlo()
    return int(client.esmtp_features["size"])


def test_advertised_size_follows_a_small_upstream_size(proxy) -> None:  # type: ignore[no-untyped-def]
    with proxy.client(login=False) as client:
        size = advertised(client)
    # Encrypted (x1.37 and more), an advertised message still fits the upstream's SIZE.
    assert 0 < size * GROWTH < UPSTREAM_SIZE
    assert size == fitting_size(52428800, UPSTREAM_SIZE, recipients=100)
    assert size > UPSTREAM_SIZE // 2


def test_mail_with_a_size_over_the_limit_is_refused_before_the_body(proxy, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    with proxy.client() as client:
        limit = advertised(client)
        code, text = client.mail(SENDER, [f"SIZE={limit + 1}"])
        assert (code, text[:5]) == (552, b"5.3.4"), text
        client.rset()
        code, _ = client.mail(SENDER, [f"SIZE={limit}"])
        assert code == 250
    assert upstream.attempts == []


def test_data_over_the_advertised_size_gets_552(proxy, upstream: Upstream, bob: Person) -> None:  # type: ignore[no-untyped-def]
    with proxy.client() as client:
        limit = advertised(client)
        # Over what the proxy advertised, yet small enough that the upstream would take it encrypted:
        # only the proxy's own limit refuses it.
        big = message(limit + 20_000)
        assert len(big) * GROWTH < UPSTREAM_SIZE
        # Without SIZE= in MAIL (smtplib's sendmail would send it): the end of DATA is where it is found.
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(bob.address)[0] == 250
        code, text = client.data(big)
        assert (code, text[:5]) == (552, b"5.3.4"), text
        # A message that fits goes through on the same connection.
        assert client.sendmail(SENDER, [bob.address], message(limit - 20_000)) == {}
    # Bob's envelope alone (the P-256 sender's copy is left out, DESIGN.md §1): the refused message sent nothing.
    received = upstream.wait_for(1)
    assert len(received) == 1
    copy_for(received, bob.address)


def test_the_101st_recipient_gets_452(proxy, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    with proxy.client() as client:
        assert client.mail(SENDER)[0] == 250
        for n in range(100):
            code, text = client.rcpt(f"user{n}@open.example")
            assert code == 250, text
        code, text = client.rcpt("user100@open.example")
        assert (code, text) == (452, b"4.5.3 Too many recipients")
        client.rset()


def test_upstream_size_reads_rfc_1870_keywords() -> None:
    assert upstream_size({"size": "10485760"}) == 10485760
    # No number, or 0, is "no fixed maximum" (RFC 1870 section 4).
    assert upstream_size({"size": ""}) is None
    assert upstream_size({"size": "0"}) is None
    assert upstream_size({}) is None
    assert upstream_size(None) is None
    assert fitting_size(5000, None, recipients=100) == 5000
    assert fitting_size(5000, 10_000_000, recipients=100) == 5000
    assert fitting_size(10_000_000, 100, recipients=100) == 1


def test_advertised_size_follows_the_upstream_when_the_pool_reconnects(proxy, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    with proxy.client(login=False) as client:
        before = advertised(client)
    upstream.size = UPSTREAM_SIZE // 2  # Announced on the upstream's next connection.
    asyncio.run_coroutine_threadsafe(proxy.server.pool.close(), proxy.thread.loop).result(10)
    with proxy.client() as client:
        assert client.mail(SENDER)[0] == 250  # A new upstream connection, with a new EHLO.
        client.rset()
        after = advertised(client)
    assert after == fitting_size(52428800, UPSTREAM_SIZE // 2, recipients=100) < before


@pytest.mark.parametrize("cut", [0, 1, 2, 3])
def test_a_spilled_message_is_dot_stuffed_across_pieces(cut: int) -> None:
    """A line that starts with a dot at a piece boundary is stuffed as in a message held in memory."""
    from proxy_kit import RawServer

    from proxy.client import Connection
    from proxy.smtp import ServerConfig
    from proxy.spill import PIECE, Spilled

    body = b"a" * (PIECE - cut) + b"\r\n.dot\r\n..two\r\nend"
    spilled = Spilled()
    spilled.write(body)
    spilled.seal()
    server = RawServer(accept=True).start()

    async def send() -> int:
        conn = await Connection.open(ServerConfig("127.0.0.1", server.port, "none", None, 10.0))
        await conn.envelope(SENDER, ["bob@example.org"])
        reply = await conn.data(spilled)
        await conn.quit()
        return reply.code

    try:
        assert asyncio.run(send()) == 250
    finally:
        server.stop()
    # RawServer keeps the lines as sent (stuffed), up to the final dot.
    assert server.data == body.replace(b"\r\n.", b"\r\n..") + b"\r\n"

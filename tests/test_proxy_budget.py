"""The proxy's memory budget for messages at once: admission at DATA, 452 4.3.1, nothing leaked (issue 14).

The real proxy runs on 127.0.0.1 in front of a recording upstream
(``proxy_kit``). Its ``proxy.message_memory`` is set to two and a half
messages: two clients get their 354 at once, a third waits for the reply to
DATA until one of the first two is relayed, and all three arrive exactly
once. A wait that lasts too long is answered 452 4.3.1 and delivers nothing;
transfers that are aborted in every way give their memory back. The budget
itself (``proxy.budget``) is checked for first-come-first-served order.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from proxy_fixtures import upstream as upstream
from proxy_kit import SENDER, Proxy, Upstream, make_home, start_proxy

from mailcrypt import config, errors
from proxy.budget import BUSY, ByteBudget
from proxy.relay import Refused

#: One message; the budget holds two and a half of them.
SIZE = 200_000
MEMORY = SIZE * 5 // 2
WAIT = 2.0
#: When each message reached the upstream server, by recipient.
Arrivals = dict[str, list[float]]


def message(size: int, tag: str) -> bytes:
    head = f"From: {SENDER}\r\nTo: {tag}@open.example\r\nSubject: {tag}\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * ((size - len(head)) // len(line))


@pytest.fixture
def arrivals(upstream: Upstream) -> Arrivals:
    """When each message reached the upstream server, by its one plaintext recipient."""
    seen: Arrivals = {}

    def stamp(recipients: list[str]) -> None:
        for r in recipients:
            seen.setdefault(r, []).append(time.monotonic())

    upstream.data_rule = stamp
    return seen


def budget_home(home: Path, upstream: Upstream, proxy_keys: str) -> config.Settings:
    settings = make_home(
        home, upstream_port=upstream.port, extra='\n[policy.domains."open.example"]\npolicy = "opportunistic"\n'
    )
    path = settings.home / "config.toml"
    path.write_text(path.read_text().replace('auth = "required"\n', f'auth = "required"\n{proxy_keys}'))
    return config.load_settings(settings.home)


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    settings = budget_home(
        tmp_path / "home", upstream, f"max_message_size = {SIZE + 50_000}\nmessage_memory = {MEMORY}\n"
    )
    running = start_proxy(settings, memory_wait=WAIT)
    yield running
    running.thread.stop()


def budget_of(proxy: Proxy) -> ByteBudget:
    budget = proxy.server.handler.budget
    assert budget is not None
    return budget


def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def begin(proxy: Proxy, tag: str, size: int = SIZE) -> smtplib.SMTP:
    """A client that has sent MAIL with SIZE=, RCPT and DATA (the reply to DATA is not read yet)."""
    client = proxy.client()
    client.ehlo()
    assert client.mail(SENDER, [f"SIZE={size}"])[0] == 250
    assert client.rcpt(f"{tag}@open.example")[0] == 250
    client.putcmd("data")
    return client


def finish(client: smtplib.SMTP, body: bytes) -> tuple[int, bytes]:
    """Send the body after a 354 and read the reply to its end."""
    client.send(body + b"\r\n.\r\n")
    return client.getreply()


def test_a_third_message_waits_for_memory_and_all_three_arrive_once(proxy: Proxy, arrivals: Arrivals) -> None:
    # The first one's SIZE= is a little low (an estimate, RFC 1870): its top-up must not wait behind the third.
    first, second = begin(proxy, "first", size=len(message(SIZE, "first")) - 1000), begin(proxy, "second")
    # Both are admitted at once: each has its 354 before either body is sent.
    assert first.getreply()[0] == 354
    assert second.getreply()[0] == 354
    third = begin(proxy, "third")
    replies: dict[str, tuple[float, int]] = {}

    def wait_for_354() -> None:
        code, _ = third.getreply()
        replies["354"] = (time.monotonic(), code)
        replies["end"] = (time.monotonic(), finish(third, message(SIZE, "third"))[0])

    waiter = threading.Thread(target=wait_for_354)
    waiter.start()
    # The third DATA is at the proxy, waiting for memory (or, without a budget, answered at once).
    until(lambda: budget_of(proxy).waiting == 1 or "354" in replies)
    assert finish(first, message(SIZE, "first"))[0] == 250
    waiter.join(30)
    assert finish(second, message(SIZE, "second"))[0] == 250
    arrived_first = arrivals["first@open.example"][0]
    (answered, code) = replies["354"]
    assert code == 354
    # The third was let in only once the first was relayed (and its memory given back).
    assert answered > arrived_first
    assert replies["end"][1] == 250
    for client in (first, second, third):
        client.quit()
    for tag in ("first", "second", "third"):
        assert len(arrivals[f"{tag}@open.example"]) == 1, tag
    until(lambda: budget_of(proxy).free == MEMORY)


def test_a_message_that_waits_too_long_gets_452_and_is_not_sent(proxy: Proxy, arrivals: Arrivals) -> None:
    first, second = begin(proxy, "first"), begin(proxy, "second")
    assert first.getreply()[0] == 354
    assert second.getreply()[0] == 354
    late = begin(proxy, "late")
    code, text = late.getreply()
    assert f"{code} {text.decode()}" == BUSY
    # The transaction is over: DATA again is out of order, and the client can start anew.
    assert late.docmd("DATA")[0] == 503
    assert finish(first, message(SIZE, "first"))[0] == 250
    assert finish(second, message(SIZE, "second"))[0] == 250
    assert "late@open.example" not in arrivals
    # Tried again once memory is free, it goes through: nothing was lost.
    assert late.sendmail(SENDER, ["late@open.example"], message(SIZE, "late")) == {}
    assert len(arrivals["late@open.example"]) == 1
    for client in (first, second, late):
        client.quit()


def test_aborted_transfers_give_their_memory_back(proxy: Proxy, arrivals: Arrivals) -> None:
    budget = budget_of(proxy)
    body = message(SIZE, "gone")
    for n in range(12):
        # The budget holds two messages: a reservation leaked by any of these would stop the next ones.
        client = begin(proxy, f"gone{n}")
        assert client.getreply()[0] == 354, n
        if n % 3 == 0:
            client.send(body[: SIZE // 2])  # Hangs up in the middle of the body.
        elif n % 3 == 1:
            client.send(body + b"x" * 60_000 * 2)  # Over the size limit, then gone before the end.
        client.close()  # Gone without QUIT.
    # Hangs up while waiting for memory.
    holders = [begin(proxy, "hold1"), begin(proxy, "hold2")]
    for holder in holders:
        assert holder.getreply()[0] == 354
    waiting = begin(proxy, "waiting")
    until(lambda: budget.waiting == 1)
    waiting.close()  # Gone without QUIT.
    until(lambda: budget.waiting == 0)
    for holder in holders:
        holder.close()  # Gone without QUIT.
    # Too big (552 at the end of the body) and grown past SIZE= with no memory to cover it (452).
    with proxy.client() as client:
        client.ehlo()
        assert client.mail(SENDER, ["SIZE=1000"])[0] == 250
        assert client.rcpt("big@open.example")[0] == 250
        assert client.data(message(SIZE + 60_000, "big"))[0] == 552
    until(lambda: budget.free == MEMORY)
    hogs = [begin(proxy, "hog1", size=SIZE + 50_000), begin(proxy, "hog2", size=SIZE)]
    for hog in hogs:
        assert hog.getreply()[0] == 354
    with proxy.client() as client:
        client.ehlo()
        assert client.mail(SENDER, ["SIZE=1000"])[0] == 250
        assert client.rcpt("grown@open.example")[0] == 250
        # The body outgrows SIZE=1000 by more than is free: 452 at its end, and nothing sent.
        code, text = client.data(message(SIZE + 20_000, "grown"))
        assert f"{code} {text.decode()}" == BUSY
        assert finish(hogs[0], message(SIZE + 50_000, "hog1"))[0] == 250
        assert finish(hogs[1], message(SIZE, "hog2"))[0] == 250
        # With memory free, a body larger than its SIZE= gets its top-up and goes through.
        assert client.mail(SENDER, ["SIZE=1000"])[0] == 250
        assert client.rcpt("grown@open.example")[0] == 250
        assert client.data(message(SIZE, "grown"))[0] == 250
    for hog in hogs:
        hog.quit()
    assert len(arrivals["grown@open.example"]) == 1
    assert not any(r.startswith("gone") for r in arrivals)
    until(lambda: budget.free == MEMORY)


def test_a_message_relayed_after_its_client_left_keeps_its_memory_to_the_end(proxy: Proxy, upstream: Upstream) -> None:
    budget = budget_of(proxy)
    # The upstream server takes 3 s to answer this one (then 451): the relay outlives the client.
    upstream.data_rule = lambda recipients: 3.0 if "slow@open.example" in recipients else None
    client = begin(proxy, "slow")
    assert client.getreply()[0] == 354
    client.send(message(SIZE, "slow") + b"\r\n.\r\n")
    until(lambda: any("slow@open.example" in r.recipients for r in upstream.attempts))
    client.close()  # Gone without waiting for the reply.
    until(lambda: not proxy.server._sessions)
    # The session is over, the relay is not: the message is still in memory, and counted.
    assert budget.free == MEMORY - SIZE
    until(lambda: budget.free == MEMORY)


def test_message_memory_under_max_message_size_is_a_configuration_error(tmp_path: Path, upstream: Upstream) -> None:
    with pytest.raises(errors.ConfigError, match=r"proxy\.message_memory: expected at least max_message_size"):
        budget_home(tmp_path / "small", upstream, "max_message_size = 2000000\nmessage_memory = 1000000\n")
    assert budget_home(tmp_path / "default", upstream, "").proxy.message_memory == 256 * 1024 * 1024
    # Unset, it follows a max_message_size over its default, so such a file still loads.
    larger = budget_home(tmp_path / "larger", upstream, "max_message_size = 300000000\n")
    assert larger.proxy.message_memory == 300000000


def test_reservations_are_granted_in_order() -> None:
    async def run() -> list[str]:
        budget = ByteBudget(100, wait=5)
        order: list[str] = []
        first = await budget.reserve(60)

        async def take(name: str, size: int) -> None:
            reservation = await budget.reserve(size)
            order.append(name)
            reservation.release()

        big = asyncio.create_task(take("big", 100))
        await asyncio.sleep(0)
        # Small ones that would fit now queue behind the large one rather than starve it.
        small = asyncio.create_task(take("small", 10))
        await asyncio.sleep(0)
        assert order == [] and budget.waiting == 2
        first.release()
        first.release()  # Twice is once.
        await asyncio.gather(big, small)
        assert budget.free == 100
        return order

    assert asyncio.run(run()) == ["big", "small"]


def test_a_top_up_goes_before_reservations_that_wait() -> None:
    async def run() -> None:
        budget = ByteBudget(100, wait=0.5)
        growing, other = await budget.reserve(60), await budget.reserve(30)
        queued = asyncio.create_task(budget.reserve(100))
        await asyncio.sleep(0)
        # The message being received gets its 10 bytes at once: the queued one waits for it to end.
        assert await growing.cover(70)
        assert growing.size == 70 and budget.free == 0 and not queued.done()
        # More than is free waits, and is refused when nothing is given back in time.
        assert not await growing.cover(80)
        assert growing.size == 70 and budget.free == 0
        # The queued one waited as long, from earlier: it was told to try again later.
        with pytest.raises(Refused, match="^452 4.3.1 "):
            await queued
        growing.release()
        other.release()
        assert budget.free == 100 and budget.waiting == 0

    asyncio.run(run())

"""Who may send through the proxy: logins, TLS, rate limiting, never an open relay."""

from __future__ import annotations

import base64
import smtplib
import ssl
from pathlib import Path

import pytest
from proxy_fixtures import bob as bob
from proxy_fixtures import settings as settings
from proxy_fixtures import upstream as upstream
from proxy_kit import PASSWORD, SENDER, LooseServer, Person, RawClient, Upstream, make_home, start_proxy

from mailcrypt import config, errors
from proxy.auth import UserStore
from proxy.guard import LoginGuard
from proxy.server import ProxyServer, ProxyThread

MSG = f"From: <{SENDER}>\r\nTo: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n".encode()


@pytest.fixture
def proxy(settings: config.Settings):  # type: ignore[no-untyped-def]
    running = start_proxy(settings)
    yield running
    running.thread.stop()


def test_mail_without_login_is_refused_and_nothing_relays(proxy, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    with proxy.client(login=False) as client:
        client.ehlo()
        assert client.mail(SENDER)[0] == 530
        assert client.rcpt("bob@example.org")[0] == 503
        assert client.docmd("DATA")[0] == 503
    assert upstream.attempts == [] and upstream.received == []


def test_wrong_passwords_are_refused_and_the_connection_closed_after_five(proxy) -> None:  # type: ignore[no-untyped-def]
    codes = []
    plain = base64.b64encode(f"\0{SENDER}\0wrong password".encode()).decode()
    with proxy.client(login=False) as client:
        client.ehlo()
        for _ in range(5):
            codes.append(client.docmd("AUTH", f"PLAIN {plain}")[0])
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.docmd("NOOP")
    # Five failures on one connection (proxy.max_auth_failures): the fifth closes it.
    assert codes == [535, 535, 535, 535, 421]
    # The right password still gets in, on a new connection (after the delay).
    with proxy.client() as client:
        assert client.noop()[0] == 250


def test_starttls_with_the_init_certificate_by_name_and_by_address(proxy, settings: config.Settings) -> None:  # type: ignore[no-untyped-def]
    context = ssl.create_default_context(cafile=str(settings.proxy.tls_cert))
    for host in ("localhost", "127.0.0.1"):
        with smtplib.SMTP(host, proxy.port, timeout=10) as client:
            client.starttls(context=context)
            client.login(SENDER, PASSWORD)
            assert client.sendmail(SENDER, ["bob@example.org"], MSG) == {}


def test_addresses_are_judged_alike_every_time(proxy, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    """The proxy remembers parsed MAIL and RCPT arguments: a malformed one stays refused, a good one accepted."""
    with proxy.client() as client:
        client.ehlo()
        for _ in range(3):
            assert client.docmd("MAIL FROM:<alice@@example.org>")[0] == 553
            assert client.mail(SENDER)[0] == 250
            assert client.docmd("RCPT TO:<bob@@example.org>")[0] == 553
            assert client.docmd("RCPT TO:<bob@example.org> NOTIFY=NEVER")[0] == 555  # parameters still checked
            assert client.rcpt("bob@example.org")[0] == 250
            assert client.rset()[0] == 250
    assert upstream.received == []


def test_extensions_advertised(proxy) -> None:  # type: ignore[no-untyped-def]
    with proxy.client(login=False) as client:
        client.ehlo()
        for extension in ("size", "8bitmime", "smtputf8", "pipelining", "starttls", "auth"):
            assert client.has_extn(extension), extension
        assert client.esmtp_features["size"] == "52428800"
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}


def test_implicit_tls(tmp_path: Path, upstream: Upstream, bob: Person) -> None:
    settings = make_home(tmp_path / "home", upstream_port=upstream.port, recipients=(bob,), extra="")
    text = (
        (settings.home / "config.toml")
        .read_text()
        .replace('auth = "required"\n', 'auth = "required"\ntls = "implicit"\n')
    )
    (settings.home / "config.toml").write_text(text)
    settings = config.load_settings(settings.home)
    with start_proxy(settings) as running:
        context = ssl.create_default_context(cafile=str(settings.proxy.tls_cert))
        with smtplib.SMTP_SSL("localhost", running.port, context=context, timeout=10) as client:
            client.login(SENDER, PASSWORD)
            assert client.sendmail(SENDER, ["bob@example.org"], MSG) == {}
    assert len(upstream.wait_for(1)) == 1


def test_off_loopback_auth_needs_tls_first(settings: config.Settings) -> None:
    """A proxy configured for a non-loopback address: no AUTH, no MAIL before STARTTLS.

    The listener is bound to 127.0.0.1 all the same (tests stay on loopback);
    the protocol's rules come from the configured address.
    """
    server = ProxyServer(settings, listen=("192.0.2.10", 0), guard=LoginGuard())
    assert not server.loopback
    server.host = "127.0.0.1"
    thread = ProxyThread(server)
    _, port = thread.start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo()
            assert not client.has_extn("auth") and client.has_extn("starttls")
            assert client.docmd("AUTH", "PLAIN AGFsaWNlAHg=")[0] == 530
            assert client.mail(SENDER)[0] == 530
            client.starttls(context=ssl.create_default_context(cafile=str(settings.proxy.tls_cert)))
            client.ehlo()
            assert client.has_extn("auth")
            client.login(SENDER, PASSWORD)
            assert client.sendmail(SENDER, ["bob@example.org"], MSG) == {}
    finally:
        thread.stop()


def test_auth_none_only_on_loopback(settings: config.Settings, tmp_path: Path) -> None:
    text = (settings.home / "config.toml").read_text().replace('auth = "required"', 'auth = "none"')
    (settings.home / "config.toml").write_text(text)
    relaxed = config.load_settings(settings.home)
    with pytest.raises(errors.ConfigError, match="loopback"):
        ProxyServer(relaxed, listen=("0.0.0.0", 10587))
    with start_proxy(relaxed) as running:
        with running.client(login=False) as client:
            assert client.sendmail(SENDER, ["bob@example.org"], MSG) == {}


def test_user_store_hashes_with_scrypt(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "proxy" / "users")
    store.add("alice", b"a long password")
    line = (tmp_path / "proxy" / "users").read_text()
    assert line.startswith("alice:scrypt$16384$8$1$") and "a long password" not in line
    assert (tmp_path / "proxy" / "users").stat().st_mode & 0o777 == 0o600
    # The cost is pinned by the parameters above; what a login costs in time is printed by
    # benchmarks/proxy.py (connecting and logging in are timed apart there).
    assert store.verify("alice", b"a long password")
    assert not store.verify("alice", b"wrong") and not store.verify("mallory", b"a long password")
    with pytest.raises(errors.UsageError):
        store.add("alice", b"another password")
    store.remove("alice")
    assert store.names() == []


def test_client_login_relays_with_the_clients_own_credentials(tmp_path: Path, bob: Person) -> None:
    up = Upstream(auth={SENDER: PASSWORD}).start()
    try:
        settings = make_home(
            tmp_path / "home", upstream_port=up.port, recipients=(bob,), upstream_extra='login = "client"\n'
        )
        with start_proxy(settings) as running:
            with running.client(login=False) as client:
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    client.login(SENDER, "not the upstream password")
            with running.client() as client:  # the upstream server accepts this login
                assert client.sendmail(SENDER, ["bob@example.org"], MSG) == {}
        assert len(up.wait_for(1)) == 1
    finally:
        up.stop()


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def test_auth_plain_and_login_read_their_responses_alike(proxy) -> None:  # type: ignore[no-untyped-def]
    plain = _b64(b"\0" + SENDER.encode() + b"\0" + PASSWORD.encode())
    with proxy.client(login=False) as client:
        client.ehlo()
        # Not base64 on the AUTH line: one answer for both mechanisms, and no failed login counted.
        assert client.docmd("AUTH", "PLAIN not*base64") == (501, b"5.5.2 Cannot decode base64")
        assert client.docmd("AUTH", "LOGIN not*base64") == (501, b"5.5.2 Cannot decode base64")
        # RFC 4954 §4: "=" is an empty initial response (which PLAIN cannot split).
        assert client.docmd("AUTH", "PLAIN =") == (501, b"5.5.2 Cannot split the AUTH PLAIN value")
        # LOGIN with the user name as initial response asks only for the password.
        assert client.docmd("AUTH", f"LOGIN {_b64(SENDER)}") == (334, _b64("Password:").encode())
        assert client.docmd(_b64(PASSWORD))[0] == 235
    with proxy.client(login=False) as client:
        client.ehlo()
        assert client.docmd("AUTH", f"PLAIN {plain}")[0] == 235
    with proxy.client(login=False) as client:
        client.ehlo()
        assert client.docmd("AUTH", "PLAIN") == (334, b"")
        assert client.docmd(plain)[0] == 235


# ------------------------------------------------------------------ nothing smuggles (issue 14, finding 7)

OPEN = '\n[policy.domains."open.example"]\npolicy = "opportunistic"\n'
# What an attacker hides in a message: to a receiver that ends lines at a bare
# CR (or LF), the data ends at "<CR>.<CR>" and a second transaction follows,
# with clear text to a recipient who has no certificate.
SMUGGLED = "{0}.{0}MAIL FROM:<ceo@bank.test>{0}RCPT TO:<victim@elsewhere.test>{0}DATA{0}wire the money{0}.{0}"
BREAKS = {"bare CR": "\r", "bare LF": "\n", "NUL": "\0"}


@pytest.fixture
def loose():  # type: ignore[no-untyped-def]
    server = LooseServer().start()
    yield server
    server.stop()


@pytest.fixture
def loose_proxy(tmp_path: Path, loose: LooseServer, bob: Person):  # type: ignore[no-untyped-def]
    running = start_proxy(make_home(tmp_path / "home", upstream_port=loose.port, recipients=(bob,), extra=OPEN))
    yield running
    running.thread.stop()


def transaction(client: RawClient, recipient: str, message: bytes, sender: str = SENDER) -> bytes:
    """MAIL, RCPT, DATA and the message, pipelined; the reply to the final dot (or the first refusal)."""
    mail, rcpt, data = client.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode(), 3)
    assert mail.startswith(b"250") and rcpt.startswith(b"250") and data.startswith(b"354"), (mail, rcpt, data)
    return client.send(message + b"\r\n.\r\n")[0]


def nothing_smuggled(loose: LooseServer) -> None:
    """No second transaction, nothing for the victim: nothing upstream would read as the attacker's commands."""
    assert b"victim" not in loose.raw and b"bank.test" not in loose.raw
    assert all(b"bank.test" not in t.sender and not t.recipients[1:] for t in loose.transactions)
    assert len(loose.delivered) <= 1


def clean_on_the_wire(loose: LooseServer) -> None:
    """What went upstream has CRLF line ends only, no NUL, and no line over 1,000 octets (RFC 5321 §4.5.3.1.6)."""
    raw = bytes(loose.raw)
    assert b"\0" not in raw and raw.count(b"\r") == raw.count(b"\n") == raw.count(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


@pytest.mark.parametrize("kind", BREAKS)
def test_a_header_field_with_a_bare_line_end_or_nul_is_refused(loose_proxy, loose: LooseServer, kind: str) -> None:  # type: ignore[no-untyped-def]
    """The outer header fields of an encrypted message go upstream in the clear."""
    head = f"From: <{SENDER}>\r\nTo: bob@example.org\r\nX-Note: hello{SMUGGLED.format(BREAKS[kind])}\r\nSubject: s\r\n"
    with RawClient(loose_proxy.port) as client:
        client.login(SENDER, PASSWORD)
        reply = transaction(client, "bob@example.org", head.encode() + b"\r\nbody\r\n")
        assert reply.startswith(b"554 5.6.0") and kind.encode() in reply, reply
        # The session goes on, and a clean message goes through once.
        assert transaction(client, "bob@example.org", MSG).startswith(b"250")
    nothing_smuggled(loose)
    assert len(loose.delivered) == 1
    clean_on_the_wire(loose)


@pytest.mark.parametrize("kind", BREAKS)
def test_a_plaintext_copy_with_a_bare_line_end_or_nul_is_refused(loose_proxy, loose: LooseServer, kind: str) -> None:  # type: ignore[no-untyped-def]
    """The body of an opportunistic plaintext copy is not encrypted: the upstream reads every byte of it."""
    head = f"From: <{SENDER}>\r\nTo: someone@open.example\r\nSubject: s\r\n\r\n"
    body = f"hello{SMUGGLED.format(BREAKS[kind])}\r\nbye"
    with RawClient(loose_proxy.port) as client:
        client.login(SENDER, PASSWORD)
        reply = transaction(client, "someone@open.example", (head + body).encode())
        assert reply.startswith(b"554 5.6.0") and kind.encode() in reply, reply
        assert transaction(client, "someone@open.example", (head + "hello\r\nbye").encode()).startswith(b"250")
    nothing_smuggled(loose)
    (copy,) = loose.delivered  # Signed, in the clear: the text lines are there as the client wrote them.
    assert copy.lines[copy.lines.index(b"hello") + 1] == b"bye"
    clean_on_the_wire(loose)


def test_an_encrypted_body_may_hold_anything(loose_proxy, loose: LooseServer) -> None:  # type: ignore[no-untyped-def]
    """Inside the encryption the upstream sees base64 only: bare line ends and long lines stay as they were."""
    body = "hello" + SMUGGLED.format("\r") + "x" * 2000 + "\r\n"
    with RawClient(loose_proxy.port) as client:
        client.login(SENDER, PASSWORD)
        message = f"From: <{SENDER}>\r\nTo: bob@example.org\r\nSubject: s\r\n\r\n{body}".encode()
        assert transaction(client, "bob@example.org", message).startswith(b"250")
    nothing_smuggled(loose)
    assert len(loose.delivered) == 1
    clean_on_the_wire(loose)


@pytest.mark.parametrize("where", ["MAIL", "RCPT"])
@pytest.mark.parametrize("kind", ["bare CR", "NUL"])
def test_an_address_with_a_bare_cr_or_nul_is_refused(loose_proxy, loose: LooseServer, where: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    """A quoted local part may hold any character to the address parser; the upstream would read a line end."""
    address = f'"a{BREAKS[kind]}RCPT TO:<victim@evil.test>"@example.org'.encode()
    with RawClient(loose_proxy.port) as client:
        client.login(SENDER, PASSWORD)
        if where == "MAIL":
            (reply,) = client.send(b"MAIL FROM:<" + address + b">\r\n")
        else:
            (mail, reply) = client.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<".encode() + address + b">\r\n", 2)
            assert mail.startswith(b"250")
        assert reply.startswith(b"501 5.5.2"), reply
        client.send(b"RSET\r\n")
        assert transaction(client, "bob@example.org", MSG).startswith(b"250")
    assert b"victim" not in loose.raw and not any(b"victim" in c for c in loose.commands)
    assert len(loose.delivered) == 1
    clean_on_the_wire(loose)


def test_a_command_with_a_bare_cr_is_refused(loose_proxy) -> None:  # type: ignore[no-untyped-def]
    with RawClient(loose_proxy.port) as client:
        (reply,) = client.send(b"EHLO attacker\rMAIL FROM:<ceo@bank.test>\r\n")
        assert reply.startswith(b"501 5.5.2"), reply
        client.login(SENDER, PASSWORD)  # The session goes on.


def test_lines_over_1000_octets_are_refused_where_the_upstream_reads_them(loose_proxy, loose: LooseServer) -> None:  # type: ignore[no-untyped-def]
    """RFC 5321 §4.5.3.1.6: a text line is at most 1,000 octets with its CRLF; aiosmtpd's check is kept."""
    long_header = f"From: <{SENDER}>\r\nTo: bob@example.org\r\nX-Long: {'a' * 2001}\r\n\r\nbody\r\n".encode()
    assert len(long_header.split(b"\r\n")[2]) == 2009
    clear = f"From: <{SENDER}>\r\nTo: someone@open.example\r\n\r\nshort\r\n{'b' * 999}\r\n".encode()
    with RawClient(loose_proxy.port) as client:
        client.login(SENDER, PASSWORD)
        assert transaction(client, "bob@example.org", long_header).startswith(b"500 5.5.6")
        assert transaction(client, "someone@open.example", clear).startswith(b"500 5.5.6")
        # 998 octets and the CRLF: the longest line allowed.
        fits = clear.replace(b"b" * 999, b"b" * 998)
        assert transaction(client, "someone@open.example", fits).startswith(b"250")
    assert len(loose.delivered) == 1
    clean_on_the_wire(loose)

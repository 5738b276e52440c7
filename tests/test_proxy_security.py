"""Who may send through the proxy: logins, TLS, rate limiting, never an open relay."""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

import pytest
from proxy_kit import PASSWORD, SENDER, Person, Upstream, make_home, person, start_proxy

from mailcrypt import config, errors
from proxy.auth import LoginGuard, UserStore
from proxy.server import ProxyServer, ProxyThread

MSG = f"From: <{SENDER}>\r\nTo: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n".encode()


@pytest.fixture(scope="module")
def bob(tmp_path_factory: pytest.TempPathFactory) -> Person:
    return person(tmp_path_factory.mktemp("sec-people"), "bob@example.org", "p256")


@pytest.fixture
def upstream():  # type: ignore[no-untyped-def]
    up = Upstream().start()
    yield up
    up.stop()


@pytest.fixture
def settings(tmp_path: Path, upstream: Upstream, bob: Person) -> config.Settings:
    return make_home(tmp_path / "home", upstream_port=upstream.port, recipients=(bob,))


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


def test_wrong_password_is_refused_then_rate_limited(proxy) -> None:  # type: ignore[no-untyped-def]
    codes = []
    with proxy.client(login=False) as client:
        for _ in range(4):  # smtplib tries PLAIN, then LOGIN: two attempts a call
            with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
                client.login(SENDER, "wrong password")
            codes.append(caught.value.smtp_code)
        # Locked out now, even with the right password.
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.login(SENDER, PASSWORD)
        assert caught.value.smtp_code == 454
    assert codes[0] == 535 and codes[-1] == 454


def test_login_guard_doubles_the_wait_and_forgets_after_the_window() -> None:
    now = [0.0]
    guard = LoginGuard(max_failures=3, window=60, base_delay=1, max_delay=3, clock=lambda: now[0])
    assert [guard.failed("a") for _ in range(3)] == [1, 2, 3]
    assert guard.locked_for("a") == 60 and guard.locked_for("b") == 0
    now[0] = 61
    assert guard.locked_for("a") == 0


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
    running = start_proxy(settings)
    try:
        context = ssl.create_default_context(cafile=str(settings.proxy.tls_cert))
        with smtplib.SMTP_SSL("localhost", running.port, context=context, timeout=10) as client:
            client.login(SENDER, PASSWORD)
            assert client.sendmail(SENDER, ["bob@example.org"], MSG) == {}
    finally:
        running.thread.stop()
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
    running = start_proxy(relaxed)
    try:
        with running.client(login=False) as client:
            assert client.sendmail(SENDER, ["bob@example.org"], MSG) == {}
    finally:
        running.thread.stop()


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
        running = start_proxy(settings)
        try:
            with running.client(login=False) as client:
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    client.login(SENDER, "not the upstream password")
            with running.client() as client:  # the upstream server accepts this login
                assert client.sendmail(SENDER, ["bob@example.org"], MSG) == {}
        finally:
            running.thread.stop()
        assert len(up.wait_for(1)) == 1
    finally:
        up.stop()

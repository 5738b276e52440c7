"""Logins and identities (issue 14, findings 8 to 10): guessing, who sends as whom, and key changes at run time.

Finding 8: the guessing guard covers every attempt on every connection and
never locks the right password out for longer than a short back-off.
Finding 9: a login sends only as its assigned addresses and signs only with
their identities. Finding 10: an identity imported while the proxy runs is
used for the next message, and one that cannot be unlocked gets 451, never
an unsigned 250.
"""

from __future__ import annotations

import base64
import email
import os
import smtplib
import subprocess
import sys
import threading
import time
from email.message import Message
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from proxy_fixtures import bob as bob
from proxy_fixtures import settings as settings
from proxy_fixtures import upstream as upstream
from proxy_kit import PASSWORD, SENDER, Person, Upstream, decrypt, start_proxy

from mailcrypt import config
from mailcrypt.keydir import KeyDirectory, PassphraseSource, keygen
from proxy.auth import UserStore
from proxy.guard import LoginGuard

OTHER = "carol@example.org"
LATE = "dave@example.org"


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def _guess(port: int, guesses: int, start: threading.Barrier, codes: list[int]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        client.ehlo()
        start.wait(30)
        # AUTH is the first command after EHLO, with the guess on the same line.
        for _ in range(guesses):
            codes.append(client.docmd("AUTH", f"PLAIN {_plain(SENDER, 'a wrong guess')}")[0])


def _parallel(port: int, connections: int, guesses: int) -> tuple[list[int], float]:
    codes: list[int] = []
    start = threading.Barrier(connections + 1)
    threads = [threading.Thread(target=_guess, args=(port, guesses, start, codes)) for _ in range(connections)]
    for t in threads:
        t.start()
    start.wait(30)
    began = time.monotonic()
    for t in threads:
        t.join(120)
    return codes, time.monotonic() - began


# ------------------------------------------------------------------ finding 8: guessing


def test_parallel_guesses_wait_in_line_and_count_per_login(settings: config.Settings) -> None:
    guard = LoginGuard(base_delay=0.05, max_delay=0.05, max_waiting=200)
    with start_proxy(settings, guard=guard) as running:
        codes, elapsed = _parallel(running.port, connections=50, guesses=2)
    # Every guess was checked and refused, one after another, each after its
    # delay: 100 guesses cannot take less than 100 delays, however many
    # connections they came on.
    assert codes == [535] * 100
    assert guard.failures(login=SENDER) == 100 and guard.failures(client="127.0.0.1") == 100
    assert elapsed >= 100 * 0.05 * 0.9


def test_auth_as_the_first_command_on_many_connections_is_still_guarded(settings: config.Settings) -> None:
    guard = LoginGuard(base_delay=0.25, max_delay=0.25, max_waiting=100)
    with start_proxy(settings, guard=guard) as running:
        codes, elapsed = _parallel(running.port, connections=20, guesses=1)
    assert codes == [535] * 20 and guard.failures(login=SENDER) == 20
    assert elapsed >= 20 * 0.25 * 0.9


def test_the_right_password_after_a_stale_clients_failures_gets_in_after_a_short_delay(
    settings: config.Settings,
) -> None:
    with start_proxy(settings, guard=LoginGuard(base_delay=0.05, max_delay=0.4)) as running:
        wrong = _plain(SENDER, "an old password")
        for _ in range(3):  # a stale client retrying, on new connections
            with running.client(login=False) as client:
                client.ehlo()
                for _ in range(4):
                    assert client.docmd("AUTH", f"PLAIN {wrong}")[0] == 535
        began = time.monotonic()
        with running.client(login=False) as client:
            client.ehlo()
            assert client.docmd("AUTH", f"PLAIN {_plain(SENDER, PASSWORD)}")[0] == 235
        # The back-off (0.4 s here, 15 s by default), never a lockout.
        assert 0.4 <= time.monotonic() - began < 5
        # A success forgets the failures: the next login is not delayed.
        assert running.server.guard.delay("127.0.0.1", SENDER) == 0


def test_login_guard_delays_per_client_and_per_login_and_caps_the_delay() -> None:
    now = [0.0]
    guard = LoginGuard(base_delay=1, max_delay=15, window=60, clock=lambda: now[0])
    for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        guard.failed(client, "alice")
    # Failures from other addresses count against the login...
    assert guard.delay("10.0.0.9", "alice") == 4
    # ...and a client's failures count against every login it tries.
    assert guard.delay("10.0.0.1", "bob") == 1 and guard.delay("10.0.0.8", "bob") == 0
    for _ in range(10):
        guard.failed("10.0.0.1", "alice")
    assert guard.delay("10.0.0.1", "alice") == 15  # capped: Dovecot's 2^n up to 15 s
    now[0] = 61
    assert guard.delay("10.0.0.1", "alice") == 0  # forgotten after the window


# ------------------------------------------------------------------ finding 9: who sends as whom


MSG = "From: <{0}>\r\nTo: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n"


def test_a_login_sending_as_another_address_gets_553_and_nothing_goes_upstream(
    settings: config.Settings, upstream: Upstream
) -> None:
    with start_proxy(settings) as running:
        with running.client() as client:
            code, text = client.mail("someone@else.test")
            assert code == 553 and text.startswith(b"5.7.1 ")
            # The domain compares in its normal form; the null sender is every login's.
            assert client.mail(SENDER.replace("example.org", "EXAMPLE.org"))[0] == 250
            client.rset()
            assert client.mail("<>")[0] == 250
        # A login of an older user file, without addresses, is told what to do.
        UserStore(settings.home / "proxy" / "users").add("old", b"an old password")
        with smtplib.SMTP(running.host, running.port, timeout=20) as client:
            client.login("old", "an old password")
            code, text = client.mail(SENDER)
            assert code == 553 and b"users add old --address" in text
    assert upstream.attempts == [] and upstream.received == []


def _add_identity(settings: config.Settings, address: str, passphrase: PassphraseSource) -> bytes:
    key, cert = keygen.generate_identity(address, key_type="p256")
    KeyDirectory.from_settings(settings).add_identity(key, cert, passphrase=passphrase)
    return cert.public_bytes(serialization.Encoding.DER)


def _signer_certificates(message: bytes, bob: Person) -> bytes:
    """The signature part of what reached bob, decrypted with bob's key."""
    plain = decrypt(message, bob.key_path, bob.cert_path)
    assert plain is not None
    parsed: Message = email.message_from_bytes(plain)
    for part in parsed.walk():
        if part.get_content_type() in ("application/pkcs7-signature", "application/x-pkcs7-signature"):
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload
    return b""


def test_signing_uses_only_the_logins_identity(settings: config.Settings, upstream: Upstream, bob: Person) -> None:
    alice_der = (
        KeyDirectory.from_settings(settings)
        .sender_certificate(SENDER)
        .public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.DER
        )
    )
    carol_der = _add_identity(settings, OTHER, PassphraseSource.unencrypted())
    UserStore(settings.home / "proxy" / "users").add("carol", b"carol's password", addresses=[OTHER])
    with start_proxy(settings) as running:
        with smtplib.SMTP(running.host, running.port, timeout=20) as client:
            client.login("carol", "carol's password")
            # The From field names alice, whose identity is in the home too: carol may not sign as her.
            assert client.sendmail(OTHER, ["bob@example.org"], MSG.format(SENDER).encode()) == {}
        with running.client() as client:
            assert client.sendmail(SENDER, ["bob@example.org"], MSG.format(OTHER).encode()) == {}
    first, second = upstream.wait_for(2)
    signature = _signer_certificates(first.data, bob)
    assert carol_der in signature and alice_der not in signature
    signature = _signer_certificates(second.data, bob)
    assert alice_der in signature and carol_der not in signature


# ------------------------------------------------------------------ finding 10: changes at run time


def _p12(tmp_path: Path, address: str) -> tuple[Path, Path, bytes]:
    key, cert = keygen.generate_identity(address, key_type="p256")
    p12 = tmp_path / "late.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"late", key, cert, None, serialization.BestAvailableEncryption(b"p12 password")
        )
    )
    password = tmp_path / "p12.pass"
    password.write_text("p12 password\n")
    password.chmod(0o600)
    return p12, password, cert.public_bytes(serialization.Encoding.DER)


def _keys_import(settings: config.Settings, p12: Path, password: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    env.update(MAILCRYPT_HOME=str(settings.home), MAILCRYPT_PASSPHRASE="the home's passphrase")
    proc = subprocess.run(
        [sys.executable, "-m", "mailcrypt", "keys", "import", str(p12), "--password-file", str(password)],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def test_an_identity_imported_while_running_signs_the_next_message(
    settings: config.Settings, upstream: Upstream, bob: Person, tmp_path: Path
) -> None:
    passphrase = PassphraseSource(environ={"MAILCRYPT_PASSPHRASE": "the home's passphrase"}, interactive=False)
    with start_proxy(settings, passphrase=passphrase) as running:
        # Users added while it runs count at once too.
        UserStore(settings.home / "proxy" / "users").add("dave", b"dave's password", addresses=[LATE])
        with smtplib.SMTP(running.host, running.port, timeout=20) as client:
            client.login("dave", "dave's password")
            assert client.sendmail(LATE, ["bob@example.org"], MSG.format(LATE).encode()) == {}
            p12, password, dave_der = _p12(tmp_path, LATE)
            _keys_import(settings, p12, password)
            assert client.sendmail(LATE, ["bob@example.org"], MSG.format(LATE).encode()) == {}
    before, after = upstream.wait_for(2)
    assert _signer_certificates(before.data, bob) == b""  # no identity yet: encrypted, unsigned
    assert dave_der in _signer_certificates(after.data, bob)


def test_a_sender_whose_identity_cannot_be_unlocked_gets_451(
    settings: config.Settings, upstream: Upstream, tmp_path: Path
) -> None:
    with start_proxy(settings, passphrase=PassphraseSource(environ={}, interactive=False)) as running:
        UserStore(settings.home / "proxy" / "users").add("dave", b"dave's password", addresses=[LATE])
        p12, password, _ = _p12(tmp_path, LATE)
        # Stored under a passphrase the proxy does not have.
        _keys_import(settings, p12, password)
        with smtplib.SMTP(running.host, running.port, timeout=20) as client:
            client.login("dave", "dave's password")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail(LATE, ["bob@example.org"], MSG.format(LATE).encode())
            assert refused.value.smtp_code == 451
            assert refused.value.smtp_error.startswith(b"4.7.0 ") and b"cannot be unlocked" in refused.value.smtp_error
    assert upstream.received == []

"""The proxy's commands as real processes: init's certificate and first user, users, and
``mailcrypt proxy`` started as a subprocess, used, and stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import email
import re
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_run import clean_env
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from proxy_kit import decrypt, inner_body

MAILCRYPT = [sys.executable, "-m", "mailcrypt"]


def mc(home: Path, *args: str, input: bytes | None = None, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [*MAILCRYPT, *args],
        input=input,
        capture_output=True,
        timeout=60,
        env=clean_env(home),
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


@contextlib.contextmanager
def proxy_process(home: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``mailcrypt proxy`` on an ephemeral loopback port: the process and the port it says it listens on.

    Leaving the block normally sends SIGTERM, and the proxy must then exit 0;
    leaving it by an exception kills the process instead.
    """
    proc = subprocess.Popen(
        [*MAILCRYPT, "proxy", "--listen", "127.0.0.1:0"],
        env=clean_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        yield proc, port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    home = tmp_path_factory.mktemp("cli") / "home"
    out = mc(home, "init", "alice@example.org", "--key-type", "p256", "--no-passphrase").stdout.decode()
    match = re.search(r"proxy login\s+user (\S+)\s+password (\S+)", out)
    assert match, out
    return home, match.group(1), match.group(2)


def test_init_makes_the_proxy_certificate_and_a_user(home: tuple[Path, str, str]) -> None:
    path, user, password = home
    cert = x509.load_pem_x509_certificate((path / "proxy" / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    assert (path / "proxy" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert user == "alice@example.org" and len(password) >= 20
    users = (path / "proxy" / "users").read_text()
    assert password not in users and "scrypt$" in users


def test_users_add_list_remove(home: tuple[Path, str, str]) -> None:
    path, _, _ = home
    mc(path, "users", "add", "mutt", input=b"another secret pw\n")
    listed = mc(path, "users", "list").stdout.decode().splitlines()
    # init gave its login the identity's address; a new user has none until one is assigned.
    assert listed == ["alice@example.org\talice@example.org", "mutt\t(no address: may not send)"]
    assert b"another secret pw" not in (path / "proxy" / "users").read_bytes()
    again = mc(path, "users", "add", "mutt", input=b"x" * 12 + b"\n", ok=False)
    assert again.returncode == 2 and b"exists already" in again.stderr
    # --address for an existing user adds addresses and keeps the password (no password read).
    mc(path, "users", "add", "mutt", "--address", "Mutt@Example.ORG", "--address", "m2@example.org")
    assert "mutt\tMutt@example.org, m2@example.org" in mc(path, "users", "list").stdout.decode()
    assert mc(path, "users", "add", "mutt", "--address", "not an address", ok=False).returncode == 2
    mc(path, "users", "remove", "mutt")
    assert mc(path, "users", "list").stdout.decode().split("\t")[0] == "alice@example.org"
    assert mc(path, "users", "remove", "mutt", ok=False).returncode == 2


def test_proxy_subprocess_sends_and_stops_on_sigterm(home: tuple[Path, str, str]) -> None:
    path, user, password = home
    with proxy_process(path) as (_, port):
        context = ssl.create_default_context(cafile=str(path / "proxy" / "cert.pem"))
        with smtplib.SMTP("localhost", port, timeout=20) as client:
            client.starttls(context=context)
            client.login(user, password)
            body = b"to myself, through the proxy\r\n"
            client.sendmail(user, [user], f"From: {user}\r\nTo: {user}\r\nSubject: s\r\n\r\n".encode() + body)
    (stored,) = list((path / "outbox" / "new").iterdir())
    (key,) = (path / "keys" / "identities").glob("*.key")
    plain = decrypt(stored.read_bytes(), key, key.with_suffix(".crt"))
    assert plain is not None and inner_body(plain) == body


@pytest.mark.parametrize(
    "listen", ["::1:10587", "[::1]10587", "[::1]", "127.0.0.1:65536", "127.0.0.1:-1", "[nohost]:25"]
)
def test_proxy_refuses_a_bad_listen_address(home: tuple[Path, str, str], listen: str) -> None:
    # The same parser as [proxy] listen in config.toml: an IPv6 address with
    # a port needs brackets, and the port is 0 to 65535.
    proc = mc(home[0], "proxy", "--listen", listen, ok=False)
    assert proc.returncode == 2
    assert (
        proc.stderr.decode()
        .strip()
        .endswith(f'--listen: expected "HOST:PORT" such as "127.0.0.1:10587" or "[::1]:10587", got {listen!r}')
    )


def test_sighup_reloads_an_identity_that_could_not_be_unlocked(tmp_path: Path) -> None:
    """Finding 10: mail from an identity the proxy cannot unlock gets 451; after SIGHUP it is signed."""
    home = tmp_path / "home"
    out = mc(home, "init", "alice@example.org", "--key-type", "p256", "--no-passphrase").stdout.decode()
    match = re.search(r"proxy login\s+user (\S+)\s+password (\S+)", out)
    assert match, out
    user, password = match.group(1), match.group(2)
    env = {**clean_env(home), "MAILCRYPT_PASSPHRASE": "dave's passphrase"}
    subprocess.run(
        [*MAILCRYPT, "keys", "generate", "dave@example.org", "--key-type", "p256"],
        env=env,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    mc(home, "users", "add", user, "--address", "dave@example.org")
    # The proxy reads the passphrase from a file that holds a wrong one.
    (home / "pp.txt").write_text("not the passphrase\n")
    (home / "pp.txt").chmod(0o600)
    config_file = home / "config.toml"
    config_file.write_text(config_file.read_text().replace("[keys]\n", '[keys]\npassphrase_file = "pp.txt"\n', 1))
    assert "pp.txt" in config_file.read_text()
    message = b"From: dave@example.org\r\nTo: alice@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    with proxy_process(home) as (proc, port):
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.login(user, password)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("dave@example.org", ["alice@example.org"], message)
            assert refused.value.smtp_code == 451 and b"cannot be unlocked" in refused.value.smtp_error
        # The administrator corrects the passphrase file and sends SIGHUP; no restart.
        (home / "pp.txt").write_text("dave's passphrase\n")
        (home / "pp.txt").chmod(0o600)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while True:
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
                client.login(user, password)
                try:
                    client.sendmail("dave@example.org", ["alice@example.org"], message)
                    break
                except smtplib.SMTPDataError as exc:
                    assert exc.smtp_code == 451 and time.monotonic() < deadline
            time.sleep(0.2)
    (stored,) = list((home / "outbox" / "new").iterdir())
    keys = list((home / "keys" / "identities").glob("*.key"))
    (alice_key,) = [k for k in keys if b"ENCRYPTED" not in k.read_bytes()]
    (dave_key,) = [k for k in keys if b"ENCRYPTED" in k.read_bytes()]
    dave_der = x509.load_pem_x509_certificate(dave_key.with_suffix(".crt").read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    plain = decrypt(stored.read_bytes(), alice_key, alice_key.with_suffix(".crt"))
    assert plain is not None
    (signature,) = [
        p.get_payload(decode=True)
        for p in email.message_from_bytes(plain).walk()
        if p.get_content_type() == "application/pkcs7-signature"
    ]
    assert isinstance(signature, bytes) and dave_der in signature

"""End to end with real software (issue 14): msmtp and swaks -> the proxy -> Postfix -> LMTP -> Dovecot.

Everything runs on 127.0.0.1: a private Postfix instance (``tests/postfix.py``:
its own configuration and queue, a high port, STARTTLS) delivering over LMTP
into a private Dovecot (``tests/dovecot.py`` with ``lmtp=True``), and the
proxy in-process (``tests/proxy_kit.py``), whose upstream is that Postfix,
reached with STARTTLS and its certificate checked against ``ca_file``. msmtp
and swaks send through the proxy with STARTTLS and AUTH PLAIN, verifying the
proxy's own certificate; their password is in a 0600 file (msmtp's
``passwordeval``) or the environment (swaks' ``SWAKS_OPT_auth_password``),
never on a command line.

For an RSA and a P-256 sender: one message with To, Cc, Bcc, a UTF-8 Subject
and a recipient without a certificate in an ``opportunistic`` domain (msmtp);
one with a 5 MB attachment (swaks); one to a recipient without a certificate
under ``require`` (refused 550 5.7.1, swaks). Then each mailbox is read back
from Dovecot: every copy for a recipient with a certificate is S/MIME, and the
sender's mailbox is empty (an RSA sender's copy is in every envelope, a P-256
sender's is left out of these RSA recipients'); each recipient's copies decrypt with
``openssl cms -decrypt`` and NSS's ``cmsutil -D`` (Debian's NSS 3.87, as many
Thunderbirds) and with ``mailcrypt fetch`` into a Maildir; the Bcc recipient's
copy is his alone; the opportunistic recipient gets the message in clear; and
Postfix's queue is empty, with nothing bounced or deferred in its log.

Postfix, msmtp, swaks, Dovecot's LMTP and NSS's tools are Debian packages
(``.ci/run`` installs them): a missing one skips here with a reason and fails
under ``CI``.
"""

from __future__ import annotations

import base64
import email
import email.header
import email.policy
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dovecot import Dovecot, ImapUser, find_dovecot, start_dovecot
from fetch_helpers import by_uid, run_cli
from fetch_helpers import make_home as make_fetch_home
from nss import NSSReader, require_nss
from postfix import Postfix, PostfixUnavailable, find_postfix, start_postfix
from proxy_kit import Person, Proxy, decrypt, is_encrypted, outer_header, person, sender_key, start_proxy

from mailcrypt import config
from mailcrypt.keydir import KeyDirectory, init_home
from mailcrypt.keydir.passphrase import PassphraseSource
from proxy.auth import UserStore
from proxy.setup import make_certificate

pytestmark = pytest.mark.slow

#: Domains Postfix delivers into Dovecot: recipients with certificates, the opportunistic domain
#: and a ``require`` domain whose recipient has none.
DOMAIN, OPEN_DOMAIN, STRICT_DOMAIN = "example.org", "open.example", "example.net"
SUBJECT = "Grüße aus Köln — Quartalszahlen ✓"
BODY = "Hello all,\nthe numbers are in. Grüße!\n"
ATTACHMENT = os.urandom(5 * 1024 * 1024)
LOGIN_PASSWORD = "throwaway e2e password 4711"


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.access(f"/usr/sbin/{tool}", os.X_OK) else None)
    if path is None:
        reason = f"{tool} is not installed (Debian: apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it (.ci/run installs it)")
        pytest.skip(reason)
    return path


@dataclass
class MailSystem:
    dovecot: Dovecot
    postfix: Postfix


@pytest.fixture(scope="module")
def mail_system() -> Iterator[MailSystem]:
    """A private Dovecot with LMTP and a private Postfix delivering into it, for the module."""
    _require("msmtp", "msmtp")
    _require("swaks", "swaks")
    require_nss()
    dovecot_binary = find_dovecot()
    if dovecot_binary is None or not os.access("/usr/lib/dovecot/lmtp", os.X_OK):
        _require("dovecot-lmtp", "dovecot-imapd dovecot-lmtpd")
    postfix_binary = find_postfix() or _require("postfix", "postfix")
    assert dovecot_binary is not None
    dovecot = start_dovecot(dovecot_binary, lmtp=True)
    try:
        assert dovecot.lmtp_port is not None
        try:
            postfix = start_postfix(
                postfix_binary, domains=(DOMAIN, OPEN_DOMAIN, STRICT_DOMAIN), lmtp_port=dovecot.lmtp_port
            )
        except PostfixUnavailable as exc:
            if os.environ.get("CI"):
                pytest.fail(f"{exc}; CI must be able to run it")
            pytest.skip(str(exc))
        try:
            yield MailSystem(dovecot, postfix)
        finally:
            postfix.stop()
    finally:
        dovecot.stop()


@dataclass
class Scene:
    """One sender's home and proxy, and the people of the test, each with a Dovecot mailbox."""

    settings: config.Settings
    proxy: Proxy
    sender: ImapUser
    address: str
    users: dict[str, ImapUser]
    people: dict[str, Person]
    tmp: Path
    key_type: str


def _address(user: ImapUser, domain: str = DOMAIN) -> str:
    return f"{user.name}@{domain}"


@pytest.fixture(params=["rsa2048", "p256"])
def scene(request: pytest.FixtureRequest, mail_system: MailSystem, tmp_path: Path) -> Iterator[Scene]:
    dovecot, postfix = mail_system.dovecot, mail_system.postfix
    sender = dovecot.add_user()
    users = {name: dovecot.add_user() for name in ("bob", "carol", "dave", "erin", "frank")}
    people_dir = tmp_path / "people"
    people_dir.mkdir()
    people = {
        "bob": person(people_dir, _address(users["bob"]), "rsa2048"),
        "carol": person(people_dir, _address(users["carol"]), "rsa3072"),
        "dave": person(people_dir, _address(users["dave"]), "rsa2048"),
    }
    address = _address(sender)
    home = tmp_path / "home"
    init_home(home, address, passphrase=PassphraseSource.unencrypted(), key_type=request.param)
    with (home / "config.toml").open("a") as f:
        f.write(
            f'\n[upstream]\nhost = "127.0.0.1"\nport = {postfix.port}\nsecurity = "starttls"\n'
            f'ca_file = "{postfix.cert_path}"\ntimeout = 30\n'
            f'\n[policy.domains."{OPEN_DOMAIN}"]\npolicy = "opportunistic"\n'
        )
    settings = config.load_settings(home)
    make_certificate(settings.proxy.tls_cert, settings.proxy.tls_key)
    UserStore(settings.home / "proxy" / "users").add(address, LOGIN_PASSWORD.encode(), addresses=(address,))
    keys = KeyDirectory.from_settings(settings)
    for p in people.values():
        keys.import_file(p.cert_path)
    proxy = start_proxy(settings)
    try:
        yield Scene(settings, proxy, sender, address, users, people, tmp_path, request.param)
    finally:
        proxy.thread.stop()


# ------------------------------------------------------------------ the clients


def _msmtp(scene: Scene, message: bytes) -> subprocess.CompletedProcess[str]:
    """msmtp -t: recipients from To, Cc and Bcc (which it removes), STARTTLS, AUTH PLAIN."""
    secret = scene.tmp / "msmtp.pass"
    secret.write_text(LOGIN_PASSWORD)
    secret.chmod(0o600)
    conf = scene.tmp / "msmtprc"
    conf.write_text(
        "account default\n"
        f"host {scene.proxy.host}\nport {scene.proxy.port}\nfrom {scene.address}\n"
        f"tls on\ntls_starttls on\ntls_trust_file {scene.settings.proxy.tls_cert}\n"
        f"auth plain\nuser {scene.address}\npasswordeval cat {secret}\n"
    )
    conf.chmod(0o600)
    return subprocess.run(
        ["msmtp", "-C", str(conf), "-t"], input=message.decode(), capture_output=True, text=True, timeout=120
    )


def _swaks(scene: Scene, to: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    """swaks with STARTTLS (the proxy's certificate verified) and AUTH PLAIN; the password from the environment."""
    env = dict(os.environ, SWAKS_OPT_auth_password=LOGIN_PASSWORD)
    command = [
        "swaks", "--server", scene.proxy.host, "--port", str(scene.proxy.port),
        "--from", scene.address, "--to", ",".join(to),
        "--tls", "--tls-verify", "--tls-ca-path", str(scene.settings.proxy.tls_cert),
        "--auth", "PLAIN", "--auth-user", scene.address, *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)


def _first_message(scene: Scene) -> bytes:
    bob, carol, dave = (scene.people[n].address for n in ("bob", "carol", "dave"))
    erin = _address(scene.users["erin"], OPEN_DOMAIN)
    subject = email.header.Header(SUBJECT, "utf-8").encode()
    return (
        f"From: Sender <{scene.address}>\r\nTo: Bob <{bob}>\r\nCc: {carol}, Erin <{erin}>\r\nBcc: {dave}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <e2e-1.{scene.sender.name}@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(BODY.encode()).decode().replace("\n", "\r\n")
    ).encode()


# ------------------------------------------------------------------ reading what arrived


def _wait_for(user: ImapUser, count: int, postfix: Postfix, timeout: float = 60) -> list[bytes]:
    import time

    deadline = time.monotonic() + timeout
    while len(found := user.messages()) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(found) == count, f"{user.name}: {len(found)} message(s), expected {count}\n{postfix.log[-3000:]}"
    return [data for data, _flags in found.values()]


def _inner(decrypted: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(decrypted, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def _text_and_attachment(decrypted: bytes) -> tuple[str, bytes | None, str]:
    """The text part, the attachment (if any) and the protected Subject of a decrypted entity."""
    message = _inner(decrypted)
    text, attachment, subject = "", None, str(message.get("Subject", ""))
    for part in message.walk():
        if part.get_content_type() == "text/plain" and not part.get_filename():
            text += part.get_content()
            subject = subject or str(part.get("Subject", ""))
        elif part.get_filename() == "numbers.bin":
            attachment = part.get_payload(decode=True)
        elif part.get_content_type() == "text/rfc822-headers" or part.get("Subject"):
            subject = subject or str(part.get("Subject", ""))
    return text, attachment, subject


def _nss(scene: Scene, name: str) -> NSSReader:
    p = scene.people[name]
    return NSSReader.make(scene.tmp / "nss" / name, p.key_path, p.cert_path)


def _fetch(scene: Scene, user: ImapUser, key_path: Path, cert_path: Path) -> list[bytes]:
    """``mailcrypt fetch`` of ``user``'s INBOX into a home holding that key; the Maildir's files."""
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    home = make_fetch_home(scene.tmp / f"fetch-{user.name}", user, [SimpleNamespace(key=key, cert=cert)])
    done = run_cli(home, user)
    assert done.returncode == 0, done.stdout + done.stderr
    return [data for _folder, data in by_uid(home / "mail").values()]


# ------------------------------------------------------------------ the test


def test_msmtp_and_swaks_through_the_proxy_and_postfix_into_dovecot(scene: Scene, mail_system: MailSystem) -> None:
    postfix = mail_system.postfix
    bob, carol, dave = (scene.people[n] for n in ("bob", "carol", "dave"))
    frank = _address(scene.users["frank"], STRICT_DOMAIN)

    sent = _msmtp(scene, _first_message(scene))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    attachment = scene.tmp / "numbers.bin"
    attachment.write_bytes(ATTACHMENT)
    sent = _swaks(
        scene, [bob.address],
        "--header", f"Subject: {email.header.Header(SUBJECT, 'utf-8').encode()}",
        # Each --attach-type and --attach-name applies to the part that follows it.
        "--attach-type", "text/plain; charset=utf-8", "--attach-body", BODY,
        "--attach-type", "application/octet-stream", "--attach-name", "numbers.bin",
        "--attach", f"@{attachment}",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout[-3000:] + sent.stderr
    # A recipient without a certificate in a domain under `require`: refused at RCPT, nothing sent.
    refused = _swaks(scene, [frank], "--body", BODY)
    assert refused.returncode != 0
    # swaks marks replies read over TLS with "~" and error replies with "*".
    assert "<~* 550 5.7.1" in refused.stdout, refused.stdout

    me_key, me_cert = sender_key(scene.settings)
    bobs = _wait_for(scene.users["bob"], 2, postfix)
    carols = _wait_for(scene.users["carol"], 1, postfix)
    daves = _wait_for(scene.users["dave"], 1, postfix)
    erins = _wait_for(scene.users["erin"], 1, postfix)
    postfix.wait_for_empty_queue()
    assert _wait_for(scene.users["frank"], 0, postfix, timeout=0) == []

    # Every copy for a recipient with a certificate is S/MIME; openssl and NSS 3.87 decrypt each.
    readers = {name: _nss(scene, name) for name in ("bob", "carol", "dave")}
    for name, copies in (("bob", bobs), ("carol", carols), ("dave", daves)):
        p = scene.people[name]
        for copy in copies:
            assert is_encrypted(copy), outer_header(copy)
            assert SUBJECT.encode() not in copy and b"Gr=C3=BC=C3=9Fe" not in outer_header(copy)
            by_openssl = decrypt(copy, p.key_path, p.cert_path)
            assert by_openssl is not None, f"openssl cannot decrypt {name}'s copy"
            by_nss = readers[name].decrypt(copy)
            assert by_nss.returncode == 0, f"cmsutil -D, {name}: {by_nss.stderr.decode(errors='replace')}"
            for decrypted in (by_openssl, by_nss.stdout):
                text, attached, subject = _text_and_attachment(decrypted)
                assert text.replace("\r\n", "\n") == BODY and subject == SUBJECT
                assert attached in (None, ATTACHMENT)
    # Bob got the attachment, once; the Bcc copy is Dave's alone and nobody else's names him.
    assert sorted(_text_and_attachment(decrypt(c, bob.key_path, bob.cert_path) or b"")[1] is not None
                  for c in bobs) == [False, True]  # fmt: skip
    assert decrypt(daves[0], bob.key_path, bob.cert_path) is None
    assert decrypt(daves[0], carol.key_path, carol.cert_path) is None
    for copy in bobs + carols:
        assert dave.address.encode() not in copy
        assert dave.address.encode() not in (decrypt(copy, bob.key_path, bob.cert_path) or b"")
    # Erin's domain is opportunistic and she has no certificate: the message in clear (signed), as sent.
    (clear,) = erins
    assert not is_encrypted(clear) and b"application/pkcs7-mime" not in clear
    text, attached, subject = _text_and_attachment(clear)
    assert text.replace("\r\n", "\n") == BODY and subject == SUBJECT and attached is None

    # The sender's own copy: for an RSA sender a RecipientInfo in every envelope; an EC sender's
    # certificate can join none of these RSA recipients' envelopes (NSS 3.87 could not read them:
    # DESIGN.md §1), so it is left out, as `mailcrypt encrypt` leaves it out. Either way nothing is
    # delivered to the sender's mailbox: the sender's mail client keeps its own Sent copy.
    assert [data for data, _flags in scene.sender.messages().values()] == []
    for copy in bobs + carols + daves:
        if not scene.key_type.startswith("rsa"):
            assert decrypt(copy, me_key, me_cert) is None
            continue
        text, attached, subject = _text_and_attachment(decrypt(copy, me_key, me_cert) or b"")
        assert text.replace("\r\n", "\n") == BODY and subject == SUBJECT and attached in (None, ATTACHMENT)

    # `mailcrypt fetch` reads each recipient's mailbox back, decrypted.
    for name, count in (("bob", 2), ("carol", 1), ("dave", 1)):
        p = scene.people[name]
        fetched = _fetch(scene, scene.users[name], p.key_path, p.cert_path)
        assert len(fetched) == count, name
        for data in fetched:
            assert b"decrypted" in data.split(b"\n\n", 1)[0], data[:600]
            text, attached, subject = _text_and_attachment(data)
            assert text.replace("\r\n", "\n") == BODY and subject == SUBJECT and attached in (None, ATTACHMENT)

    # Postfix delivered everything at once: nothing deferred, bounced or left in its queue.
    assert postfix.queue() == []
    log = postfix.log
    assert "status=bounced" not in log and "status=deferred" not in log, log[-3000:]

"""The proxy end to end: smtplib -> proxy -> a recording aiosmtpd upstream, checked with openssl cms.

What the upstream receives must decrypt with ``openssl cms -decrypt`` for
every recipient and for the sender, give back the body the client sent,
hide the Subject, and never show a Bcc recipient to anyone else.
"""

from __future__ import annotations

import smtplib
import subprocess
from pathlib import Path

import pytest
from proxy_fixtures import upstream as upstream
from proxy_kit import (
    SENDER,
    Person,
    Upstream,
    copy_for,
    decrypt,
    inner_body,
    is_encrypted,
    mail,
    make_home,
    outer_header,
    person,
    recipient_info_kinds,
    sender_key,
    start_proxy,
)

BODY = b"Hello all,\r\nthe numbers are in. Gr\xc3\xbc\xc3\x9fe\r\n.a line that starts with a dot\r\n..two dots\r\n"


def message(to: str, cc: str = "", bcc: str = "", subject: str = "Quarterly secret numbers") -> bytes:
    plain = "text/plain; charset=utf-8"
    return mail(to, subject, BODY, cc=cc, bcc=bcc, message_id="<m1@example.org>", content_type=plain, encoding="8bit")


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Person]:
    d = tmp_path_factory.mktemp("people")
    return {
        "bob": person(d, "bob@example.org", "rsa2048"),
        "carol": person(d, "carol@example.net", "p256"),
        "dave": person(d, "dave@example.com", "p384"),
        "erin": person(d, "erin@open.example", "p256"),
    }


OPEN_DOMAIN = '\n[policy.domains."open.example"]\npolicy = "opportunistic"\n'


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream, people: dict[str, Person]):  # type: ignore[no-untyped-def]
    settings = make_home(
        tmp_path / "home",
        upstream_port=upstream.port,
        recipients=(people["bob"], people["carol"], people["dave"]),
        extra=OPEN_DOMAIN + '\n[policy.addresses."carol@example.net"]\nprofile = "modern"\n',
    )
    running = start_proxy(settings)
    running.settings = settings  # type: ignore[attr-defined]
    yield running
    running.thread.stop()


def test_to_cc_share_an_envelope_and_bcc_gets_its_own(tmp_path: Path, upstream: Upstream, people) -> None:  # type: ignore[no-untyped-def]
    """Bob's client is said to read key agreement: the To/Cc recipients share one envelope with the sender."""
    bob, carol, dave = people["bob"], people["carol"], people["dave"]
    settings = make_home(
        tmp_path / "home",
        upstream_port=upstream.port,
        recipients=(bob, carol, dave),
        extra=f'\n[policy.addresses."{bob.address}"]\nmixed_recipient_infos = true\n',
    )
    with start_proxy(settings) as running:
        with running.client() as client:
            msg = message(f"Bob <{bob.address}>", cc=carol.address, bcc=dave.address)
            refused = client.sendmail(SENDER, [bob.address, carol.address, dave.address], msg)
    assert refused == {}
    received = upstream.wait_for(2)
    assert len(received) == 2
    shared = next(r for r in received if sorted(r.recipients) == sorted([bob.address, carol.address]))
    own = copy_for(received, dave.address)
    me_key, me_cert = sender_key(settings)
    for copy, readers, outsiders in ((shared, (bob, carol), (dave,)), (own, (dave,), (bob, carol))):
        assert is_encrypted(copy.data)
        head = outer_header(copy.data)
        assert b"Subject: [...]" in head and b"Quarterly" not in head
        assert b"bcc" not in copy.data.lower().split(b"\r\n\r\n", 1)[0]
        assert b"numbers are in" not in copy.data
        for reader in readers:
            plain = decrypt(copy.data, reader.key_path, reader.cert_path)
            assert plain is not None, reader.address
            assert inner_body(plain) == BODY
            assert b"Subject: Quarterly secret numbers" in plain
            assert dave.address.encode() not in plain or copy is own
        mine = decrypt(copy.data, me_key, me_cert)
        assert mine is not None and inner_body(mine) == BODY
        for outsider in outsiders:
            assert decrypt(copy.data, outsider.key_path, outsider.cert_path) is None
    # Dave, a Bcc recipient, appears in no other copy, not even its envelope.
    assert dave.address.encode() not in shared.data and dave.address not in shared.recipients
    assert b"bcc" not in (decrypt(own.data, dave.key_path, dave.cert_path) or b"x").lower().split(b"\r\n\r\n")[0]


def test_key_agreement_never_shares_an_envelope_with_an_unknown_rsa_client(proxy, upstream: Upstream, people) -> None:  # type: ignore[no-untyped-def]
    """DESIGN.md §1: Bob (RSA, nothing known) gets an envelope without EC RecipientInfos; the rest share one."""
    bob, carol, dave = people["bob"], people["carol"], people["dave"]
    msg = message(f"Bob <{bob.address}>", cc=carol.address, bcc=dave.address)
    with proxy.client() as client:
        assert client.sendmail(SENDER, [bob.address, carol.address, dave.address], msg) == {}
    received = upstream.wait_for(3)
    assert sorted(r.recipients for r in received) == [[bob.address], [carol.address], [dave.address]]
    me_key, me_cert = sender_key(proxy.settings)
    bobs, carols, daves = (copy_for(received, p.address) for p in (bob, carol, dave))
    assert recipient_info_kinds(bobs.data) == ["ktri"]
    assert decrypt(bobs.data, me_key, me_cert) is None  # The sender's EC copy would make it unreadable.
    for copy, reader in ((bobs, bob), (carols, carol), (daves, dave)):
        plain = decrypt(copy.data, reader.key_path, reader.cert_path)
        assert plain is not None and inner_body(plain) == BODY
        # Bob and Carol see the same To and Cc: the split is invisible inside.
        assert f"Cc: {carol.address}".encode() in plain and b"To: Bob" in plain
    for copy in (carols, daves):  # The sender's copy rides with the EC recipients: no envelope of its own.
        assert inner_body(decrypt(copy.data, me_key, me_cert) or b"") == BODY


def test_a_p256_senders_copy_is_left_out_of_an_rsa_only_message(proxy, upstream: Upstream, people, caplog) -> None:  # type: ignore[no-untyped-def]
    """DESIGN.md §1: no envelope of the sender's own; one upstream transaction a message, and the log says so."""
    import logging

    bob = people["bob"]
    with caplog.at_level(logging.INFO, logger="proxy.handler"), proxy.client() as client:
        assert client.sendmail(SENDER, [bob.address], message(bob.address)) == {}
        assert client.sendmail(SENDER, [bob.address], message(bob.address)) == {}
        # A sender who writes to themselves (here a Bcc) is a recipient like any other.
        assert client.sendmail(SENDER, [bob.address, SENDER], message(bob.address)) == {}
    received = upstream.wait_for(4)
    assert [r.recipients for r in upstream.attempts] == [[bob.address], [bob.address], [bob.address], [SENDER]]
    me_key, me_cert = sender_key(proxy.settings)
    for copy in received[:3]:
        assert recipient_info_kinds(copy.data) == ["ktri"]
        assert inner_body(decrypt(copy.data, bob.key_path, bob.cert_path) or b"") == BODY
        assert decrypt(copy.data, me_key, me_cert) is None
    assert recipient_info_kinds(received[3].data) == ["kari"]
    assert inner_body(decrypt(received[3].data, me_key, me_cert) or b"") == BODY
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.handler" and "envelope(s)" in r.getMessage()]
    assert len(lines) == 3
    left_out = f"sender's copy ({SENDER}) left out of this message"
    assert all(left_out in line and "in 1 envelope(s)" in line for line in lines[:2])
    assert left_out not in lines[2] and "in 2 envelope(s)" in lines[2]


def test_profile_follows_every_recipient_of_the_envelope(proxy, upstream: Upstream, people) -> None:  # type: ignore[no-untyped-def]
    carol, bob = people["carol"], people["bob"]
    with proxy.client() as client:
        client.sendmail(SENDER, [carol.address], message(carol.address))
        client.sendmail(SENDER, [carol.address, bob.address], message(f"{carol.address}, {bob.address}"))
    received = upstream.wait_for(3)  # The second message: one envelope for Bob (RSA), one for Carol (EC).
    assert len(received) == 3
    # Carol alone: modern for her; but the sender's own policy says compatible, and a message has one cipher.
    assert all(b"smime-type=enveloped-data" in outer_header(r.data) for r in received)


def test_signed_inside_the_encryption(proxy, upstream: Upstream, people, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bob = people["bob"]
    with proxy.client() as client:
        client.sendmail(SENDER, [bob.address], message(bob.address))
    copy = copy_for(upstream.wait_for(1), bob.address)
    plain = decrypt(copy.data, bob.key_path, bob.cert_path)
    assert plain is not None and b"multipart/signed" in plain
    _, me_cert = sender_key(proxy.settings)
    signed = tmp_path / "signed.eml"
    signed.write_bytes(plain)
    proc = subprocess.run(
        ["openssl", "cms", "-verify", "-in", str(signed), "-CAfile", str(me_cert), "-purpose", "any"],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()


def test_require_without_certificate_is_refused_at_rcpt(proxy, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    with proxy.client() as client:
        client.ehlo()
        assert client.mail(SENDER)[0] == 250
        code, text = client.rcpt("nobody@example.org")
        assert code == 550
        assert text.startswith(b"5.7.1 <nobody@example.org>") and b"mailcrypt keys import" in text
        client.rset()
    assert upstream.received == [] and upstream.attempts == []


def test_opportunistic_domain_gets_a_plaintext_copy_alone(proxy, upstream: Upstream, people) -> None:  # type: ignore[no-untyped-def]
    bob = people["bob"]
    open_rcpt = "someone@open.example"
    msg = message(f"{bob.address}, {open_rcpt}")
    with proxy.client() as client:
        assert client.sendmail(SENDER, [bob.address, open_rcpt], msg) == {}
    received = upstream.wait_for(2)
    clear = next(r for r in received if r.recipients == [open_rcpt])
    secret = next(r for r in received if r.recipients == [bob.address])
    assert not is_encrypted(clear.data) and BODY in clear.data
    assert is_encrypted(secret.data) and b"numbers are in" not in secret.data
    # A domain without the administrator's permission still refuses.
    with proxy.client() as client, pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail(SENDER, ["x@closed.example"], msg)


def test_opportunistic_with_a_certificate_encrypts(proxy, upstream: Upstream, people, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mailcrypt.keydir import KeyDirectory

    erin = people["erin"]
    KeyDirectory.from_settings(proxy.settings).import_file(erin.cert_path)
    with proxy.client() as client:
        client.sendmail(SENDER, [erin.address], message(erin.address))
    (copy,) = upstream.wait_for(1)
    assert is_encrypted(copy.data)
    assert inner_body(decrypt(copy.data, erin.key_path, erin.cert_path) or b"") == BODY


def test_outbox_is_the_embedded_default(tmp_path: Path, people) -> None:  # type: ignore[no-untyped-def]
    bob = people["bob"]
    settings = make_home(tmp_path / "home", recipients=(bob,))
    with start_proxy(settings) as running:
        with running.client() as client:
            assert client.sendmail(SENDER, [bob.address], message(bob.address)) == {}
    # Bob's envelope alone: the sender's EC copy cannot join it (Bob's client is not known to read
    # key agreement), and the proxy puts nothing in the sender's mailbox the sender did not address.
    stored = {p.read_bytes().split(b"\r\n")[1]: p for p in (settings.outbox / "new").iterdir()}
    assert sorted(stored) == [f"X-Envelope-To: {bob.address}".encode()]
    data = stored[f"X-Envelope-To: {bob.address}".encode()].read_bytes()
    assert data.startswith(f"Return-Path: <{SENDER}>\r\nX-Envelope-To: {bob.address}\r\n".encode())
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in stored.values())
    assert inner_body(decrypt(data, bob.key_path, bob.cert_path) or b"") == BODY
    assert list((settings.outbox / "tmp").iterdir()) == []


def test_message_larger_than_the_limit_is_refused(tmp_path: Path, upstream: Upstream, people) -> None:  # type: ignore[no-untyped-def]
    bob = people["bob"]
    settings = make_home(tmp_path / "home", upstream_port=upstream.port, recipients=(bob,))
    text = (settings.home / "config.toml").read_text()
    (settings.home / "config.toml").write_text(
        text.replace('auth = "required"\n', 'auth = "required"\nmax_message_size = 2048\n')
    )
    from mailcrypt import config

    with start_proxy(config.load_settings(settings.home)) as running:
        with running.client() as client:
            client.ehlo()
            assert client.has_extn("size") and client.esmtp_features["size"] == "2048"
            big = message(bob.address) + b"x" * 4000 + b"\r\n"
            # Declared with SIZE: refused at MAIL; undeclared: refused after DATA, nothing kept.
            with pytest.raises(smtplib.SMTPSenderRefused) as declared:
                client.sendmail(SENDER, [bob.address], big)
            assert declared.value.smtp_code == 552
            assert client.mail(SENDER)[0] == 250 and client.rcpt(bob.address)[0] == 250
            assert client.data(big)[0] == 552
            assert client.noop()[0] == 250  # The session goes on.
    assert upstream.received == []


def test_pipelined_commands_right_after_the_data(proxy, upstream: Upstream, people) -> None:  # type: ignore[no-untyped-def]
    import base64
    import socket

    from proxy_kit import PASSWORD

    bob = people["bob"].address
    msg = message(bob).replace(b"\r\n.", b"\r\n..")  # dot-stuffed on the wire
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock, sock.makefile("rb") as replies:

        def expect(*codes: int) -> None:
            for code in codes:
                line = replies.readline()
                while line[3:4] == b"-":
                    line = replies.readline()
                assert line[:3] == str(code).encode(), line

        expect(220)
        token = base64.b64encode(f"\0{SENDER}\0{PASSWORD}".encode())
        sock.sendall(b"EHLO client\r\nAUTH PLAIN " + token + b"\r\n")
        expect(250, 235)
        envelope = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{bob}>\r\nDATA\r\n".encode()
        sock.sendall(envelope)
        expect(250, 250, 354)
        sock.sendall(msg + b".\r\n" + envelope)  # the next transaction in the same packet
        expect(250, 250, 250, 354)
        sock.sendall(msg + b".\r\nQUIT\r\n")
        expect(250, 221)
    received = upstream.wait_for(2)
    assert len(received) == 2 and all(r.recipients == [bob] for r in received)
    key, cert = people["bob"].key_path, people["bob"].cert_path
    assert all(inner_body(decrypt(r.data, key, cert) or b"") == BODY for r in received)


def test_upstream_starttls_is_verified(tmp_path: Path, people) -> None:  # type: ignore[no-untyped-def]
    import ssl

    from proxy.setup import make_certificate

    cert, key = tmp_path / "up.crt", tmp_path / "up.key"
    make_certificate(cert, key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    up = Upstream(tls_context=context, auth={"relay": "upstream secret"}).start()
    bob = people["bob"]
    (tmp_path / "up.pass").write_text("upstream secret\n")
    (tmp_path / "up.pass").chmod(0o600)
    trusted = make_home(
        tmp_path / "trusting",
        recipients=(bob,),
        extra=(
            f'\n[upstream]\nhost = "localhost"\nport = {up.port}\nsecurity = "starttls"\nca_file = "{cert}"\n'
            f'username = "relay"\npassword_file = "{tmp_path / "up.pass"}"\n'
        ),
    )
    untrusted = make_home(
        tmp_path / "default",
        recipients=(bob,),
        extra=f'\n[upstream]\nhost = "localhost"\nport = {up.port}\nsecurity = "starttls"\n',
    )
    try:
        for settings, ok in ((trusted, True), (untrusted, False)):
            with start_proxy(settings) as running:
                with running.client() as client:
                    if ok:
                        assert client.sendmail(SENDER, [bob.address], message(bob.address)) == {}
                    else:
                        with pytest.raises(smtplib.SMTPSenderRefused) as caught:
                            client.sendmail(SENDER, [bob.address], message(bob.address))
                        assert caught.value.smtp_code == 451 and b"CERTIFICATE_VERIFY_FAILED" in caught.value.smtp_error
        copy = copy_for(up.wait_for(1), bob.address)
        assert is_encrypted(copy.data)
    finally:
        up.stop()


def test_the_log_names_each_decision_and_never_the_content(proxy, upstream: Upstream, people, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from cryptography import x509

    from mailcrypt.pki.validate import fingerprint

    bob, dave = people["bob"], people["dave"]
    open_rcpt = "someone@open.example"
    msg = message(f"{bob.address}, {open_rcpt}", bcc=dave.address)
    with caplog.at_level(logging.INFO, logger="proxy.handler"), proxy.client() as client:
        assert client.sendmail(SENDER, [bob.address, open_rcpt, dave.address], msg) == {}
    upstream.wait_for(3)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "proxy.handler" and "envelope(s)" in r.getMessage()]
    bob_fp = fingerprint(x509.load_pem_x509_certificate(bob.cert_path.read_bytes()))[:16]
    assert f"{bob.address}: certificate sha256:{bob_fp}, profile compatible" in line
    assert f"{dave.address}: certificate sha256:" in line and "[bcc: own envelope]" in line
    assert f"{open_rcpt}: plaintext copy (no certificate;" in line
    assert "250" in line
    for secret in (b"Quarterly", b"numbers are in", b"m1@example.org"):
        assert secret.decode() not in caplog.text


def test_a_message_without_message_id_gets_one_inside_the_encryption(proxy, upstream: Upstream, people) -> None:  # type: ignore[no-untyped-def]
    """The serial number of DESIGN.md §2: fresh, in the sender's domain, signed and encrypted, and the same outside."""
    import re

    bob = people["bob"]
    msg = message(bob.address).replace(b"Message-ID: <m1@example.org>\r\n", b"")
    with proxy.client() as client:
        assert client.sendmail(SENDER, [bob.address], msg) == {}
    copy = copy_for(upstream.wait_for(1), bob.address)
    pattern = rb"\nMessage-ID: (<[0-9a-f]{32}@example\.org>)\r\n"
    outside = re.search(pattern, outer_header(copy.data))
    inside = re.search(pattern, decrypt(copy.data, bob.key_path, bob.cert_path) or b"")
    assert outside and inside and outside.group(1) == inside.group(1)


def test_the_null_sender_is_relayed_as_the_null_sender(proxy, upstream: Upstream, people) -> None:  # type: ignore[no-untyped-def]
    """Read receipts and vacation replies come from ``MAIL FROM:<>`` (RFC 5321 §4.5.5); ``<<>>`` is refused upstream."""
    bob = people["bob"]
    for sender in ("<>", ""):  # smtplib writes both as MAIL FROM:<>
        with proxy.client() as client:
            assert client.sendmail(sender, [bob.address], message(bob.address)) == {}
    received = upstream.wait_for(2)
    # aiosmtpd keeps the null reverse-path as "<>"; "<<>>" would not parse at all.
    assert [r.sender for r in received] == ["<>", "<>"]
    assert all(inner_body(decrypt(r.data, bob.key_path, bob.cert_path) or b"") == BODY for r in received)


def test_the_null_sender_goes_out_exactly_as_mail_from_null(tmp_path: Path, people) -> None:  # type: ignore[no-untyped-def]
    """On the wire: the proxy's command is ``MAIL FROM:<>``, for the recipient check and for the message."""
    from proxy_kit import LooseServer

    bob = people["bob"]
    loose = LooseServer().start()
    try:
        running = start_proxy(make_home(tmp_path / "home", upstream_port=loose.port, recipients=(bob,)))
        try:
            with running.client() as client:
                assert client.mail("")[0] == 250
                assert client.rcpt("<>")[0] == 501  # The null path is a sender only (RFC 5321 §4.1.1.3).
                assert client.rset()[0] == 250
                assert client.sendmail("", [bob.address], message(bob.address)) == {}
        finally:
            running.thread.stop()
    finally:
        loose.stop()
    mails = [c for c in loose.commands if c.startswith(b"MAIL")]
    assert mails and all(c == b"MAIL FROM:<>" or c.startswith(b"MAIL FROM:<> ") for c in mails), mails
    assert [t.sender for t in loose.delivered] == [b"<>"]

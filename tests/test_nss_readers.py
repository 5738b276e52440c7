"""Readable by every recipient's client (DESIGN.md §1), checked with NSS's own ``cmsutil``.

NSS 3.87 (Debian's ``libnss3-tools``, the S/MIME engine of many installed
Thunderbirds) rejects as bad DER a whole envelope that holds any
KeyAgreeRecipientInfo. With a P-256 sender identity the sender's own copy
used to put one into every envelope, so an RSA correspondent on such a
client could read nothing. Here a P-256 sender writes to an RSA recipient
(and an EC one) through the proxy and with ``mailcrypt encrypt``:
``cmsutil -D`` with the RSA recipient's key must decrypt that recipient's
copy, and ``openssl cms -decrypt`` every recipient's copy and the sender's
where the sender's certificate could join (beside the EC recipient); where
it could join none, it is left out, and nothing goes to the sender.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from nss import NSSReader, require_nss
from proxy_kit import (
    SENDER,
    Person,
    Upstream,
    copy_for,
    decrypt,
    inner_body,
    mail,
    make_home,
    person,
    recipient_info_kinds,
    sender_key,
    start_proxy,
)

BODY = b"Hello Bob and Carol,\r\nread this in any client.\r\n"


def message(to: str, cc: str = "") -> bytes:
    return mail(to, "for every client", BODY, cc=cc, message_id="<nss-1@example.org>", content_type="text/plain")


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Person]:
    d = tmp_path_factory.mktemp("people")
    return {"bob": person(d, "bob@example.org", "rsa2048"), "carol": person(d, "carol@example.net", "p256")}


@pytest.fixture(scope="module")
def bob_nss(tmp_path_factory: pytest.TempPathFactory, people: dict[str, Person]) -> NSSReader:
    require_nss()
    bob = people["bob"]
    return NSSReader.make(tmp_path_factory.mktemp("nss") / "bob", bob.key_path, bob.cert_path)


def _nss_reads(reader: NSSReader, copy: bytes) -> bytes:
    proc = reader.decrypt(copy)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def test_nss_reads_the_proxys_copy_for_an_rsa_recipient_of_a_p256_sender(
    tmp_path: Path, people: dict[str, Person], bob_nss: NSSReader
) -> None:
    bob, carol = people["bob"], people["carol"]
    upstream = Upstream().start()
    try:
        settings = make_home(tmp_path / "home", upstream_port=upstream.port, recipients=(bob, carol))
        running = start_proxy(settings)
        try:
            with running.client() as client:
                assert client.sendmail(SENDER, [bob.address, carol.address], message(bob.address, carol.address)) == {}
                assert client.sendmail(SENDER, [bob.address], message(bob.address)) == {}
        finally:
            running.thread.stop()
        received = upstream.wait_for(3)
    finally:
        upstream.stop()
    me_key, me_cert = sender_key(settings)
    # Whatever Bob received, his client reads: the finding of issue 14 (SEC_ERROR_BAD_DER).
    bobs = [r for r in received if bob.address in r.recipients]
    assert len(bobs) == 2
    for copy in bobs:
        assert BODY in _nss_reads(bob_nss, copy.data)
        assert inner_body(decrypt(copy.data, bob.key_path, bob.cert_path) or b"") == BODY
        assert recipient_info_kinds(copy.data) == ["ktri"] and copy.recipients == [bob.address]
    # The first message: Bob's envelope (key transport only) and Carol's, which carries the sender's copy.
    assert len(received) == 3
    first, second = received[:2], received[2:]
    carols = copy_for(first, carol.address)
    assert inner_body(decrypt(carols.data, carol.key_path, carol.cert_path) or b"") == BODY
    assert inner_body(decrypt(carols.data, me_key, me_cert) or b"") == BODY
    # The second message has no EC recipient: the sender's copy is left out, as `mailcrypt encrypt`
    # leaves it out; Bob's envelope is the only one, and nothing is addressed to the sender.
    assert [r.recipients for r in second] == [[bob.address]]
    assert decrypt(second[0].data, me_key, me_cert) is None


def _encrypt(home: Path, *args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    env["MAILCRYPT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "mailcrypt", "encrypt", *args], input=data, capture_output=True, timeout=120, env=env
    )


def test_nss_reads_what_mailcrypt_encrypt_made_for_an_rsa_recipient_of_a_p256_sender(
    tmp_path: Path, people: dict[str, Person], bob_nss: NSSReader
) -> None:
    bob, carol = people["bob"], people["carol"]
    settings = make_home(tmp_path / "home", recipients=(bob, carol))
    me_key, me_cert = sender_key(settings)
    sent = _encrypt(settings.home, "--to", bob.address, data=message(bob.address))
    assert sent.returncode == 0, sent.stderr
    assert BODY in _nss_reads(bob_nss, sent.stdout)
    assert recipient_info_kinds(sent.stdout) == ["ktri"]
    assert inner_body(decrypt(sent.stdout, bob.key_path, bob.cert_path) or b"") == BODY
    # One output is one envelope: the sender's own EC copy is left out, saying so.
    assert b"your own EC certificate (alice@example.org) is left out" in sent.stderr
    # Bob and Carol together cannot be made readable for both: refused, nothing written.
    both = _encrypt(settings.home, data=message(bob.address, carol.address))
    assert both.returncode == 2 and both.stdout == b"" and b"bob@example.org (RSA) not known" in both.stderr
    # Said to read it (policy): one envelope for all, and openssl reads every copy, the sender's too.
    with (settings.home / "config.toml").open("a") as f:
        f.write(f'\n[policy.addresses."{bob.address}"]\nmixed_recipient_infos = true\n')
    both = _encrypt(settings.home, data=message(bob.address, carol.address))
    assert both.returncode == 0, both.stderr
    assert sorted(recipient_info_kinds(both.stdout)) == ["kari", "kari", "ktri"]
    for key, cert in ((bob.key_path, bob.cert_path), (carol.key_path, carol.cert_path), (me_key, me_cert)):
        assert inner_body(decrypt(both.stdout, key, cert) or b"") == BODY, cert

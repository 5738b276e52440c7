"""One sign-then-encrypt pipeline: the proxy and ``mailcrypt encrypt`` sign a message byte for byte alike.

The same message, identity, signing time and randomness (Message-ID and
multipart boundary, through the ``rng`` parameter) go through the functions
each path really calls: for the proxy ``Senders`` (the signer it keeps per
identity) and ``make_groups``, whose plaintext copy is the signed message
that also goes into every envelope; for the command ``crypt._sign``, whose
result ``encrypt_stream`` encrypts. The proxy gets the message as SMTP hands
it over (CRLF, in a ``bytearray``), the command as a file, with LF line ends
in one case. Both must give the same signed message (for ECDSA, whose
signature value is random, all but that value): CRLF throughout, Bcc
nowhere, verified by ``openssl cms -verify``. Then the pieces: the body is
signed where it lies (a view of the SMTP buffer, not a copy), a signature
over pieces is the signature over their join, and which signatures run
inline.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import io
import random
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailcrypt.cli.crypt import _sign
from mailcrypt.cli.home import Home
from mailcrypt.config import load_settings
from mailcrypt.envelope import Signer, sign, verify
from mailcrypt.keydir import KeyDirectory, init_home
from mailcrypt.keydir.passphrase import PassphraseSource
from mailcrypt.mime import INLINE_LIMIT, ChainReader, sign_message_parts, signs_inline
from mailcrypt.mime.signed import open_signed
from mailcrypt.policy import COMPATIBLE
from proxy.groups import Plan, make_groups
from proxy.senders import Senders

SENDER = "alice@example.org"
WHEN = datetime.datetime(2026, 3, 1, 9, 30, tzinfo=datetime.UTC)

HEADER = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Bcc: eve@example.com\r\n"
    b"Subject: the numbers,\r\n"
    b" folded\r\n"
    b"Date: Sun, 01 Mar 2026 09:30:00 +0000\r\n"
)
BODY = b"Line one.\r\n\r\n--not-a-boundary\r\n" + b"x" * 500 + b"\r\nLast line.\r\n"
MESSAGES = {
    "no message-id": HEADER + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + BODY,
    "message-id, no content-type": HEADER + b"Message-ID: <fixed@example.org>\r\n\r\n" + BODY,
    "large": HEADER + b"Content-Type: text/plain\r\n\r\n" + BODY * (INLINE_LIMIT // len(BODY) + 1),
}


def rng(seed: int = 7) -> Callable[[int], bytes]:
    """The same bytes for both paths: a fresh generator with the same seed."""
    return random.Random(seed).randbytes


@pytest.fixture(scope="module", params=["p256", "rsa2048"])
def home(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Home:
    path = tmp_path_factory.mktemp(f"home-{request.param}")
    init_home(path, SENDER, passphrase=PassphraseSource.unencrypted(), key_type=request.param)
    settings = load_settings(path)
    return Home(settings, KeyDirectory.from_settings(settings), PassphraseSource.unencrypted())


def proxy_signed(home: Home, message: bytes) -> bytes:
    """What the proxy sends as the plaintext copy: the signed message its envelopes encrypt."""
    senders = Senders.load(home.keys, home.settings, home.passphrase)
    sender = senders.for_message(SENDER, [SENDER])
    assert sender.signer is not None
    plan = Plan("bob@example.net", "plaintext", None, COMPATIBLE, "the test's policy")
    (group,) = make_groups(
        bytearray(message), ["bob@example.net"], {"bob@example.net": plan}, sender, signing_time=WHEN, rng=rng()
    )
    return asyncio.run(group.render())


def command_signed(home: Home, message: bytes) -> bytes:
    """What ``mailcrypt encrypt`` hands to ``encrypt_stream``."""
    args = argparse.Namespace(sign=True, verbose=0)
    reader = _sign(args, io.BytesIO(message), home, SENDER, signing_time=WHEN, rng=rng())
    assert reader is not None
    return reader.read()


def assert_same(by_command: bytes, by_proxy: bytes, home: Home) -> None:
    """Byte for byte the same; for ECDSA, whose signature value is random, all but that value."""
    if isinstance(home.keys.identities(home.passphrase)[0].private_key, rsa.RSAPrivateKey):
        assert by_command == by_proxy  # RSA PKCS#1 v1.5 signatures are deterministic.
        return
    mark = b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
    (command_head, command_der), (proxy_head, proxy_der) = (
        (head, base64.b64decode(rest.rsplit(b"\r\n--", 1)[0]))
        for head, rest in (by_command.split(mark), by_proxy.split(mark))
    )
    # Outer header, signed entity, boundary: everything before the signature part's body.
    assert command_head == proxy_head
    (command_info,), (proxy_info,) = (
        cms.ContentInfo.load(der)["content"]["signer_infos"] for der in (command_der, proxy_der)
    )
    assert command_info["signed_attrs"].dump() == proxy_info["signed_attrs"].dump()
    assert command_info["signature"].native != proxy_info["signature"].native
    command_info["signature"] = proxy_info["signature"].native
    assert command_info.dump(force=True) == proxy_info.dump(force=True)


@pytest.mark.parametrize("name", list(MESSAGES))
def test_proxy_and_encrypt_sign_byte_for_byte_alike(home: Home, name: str, tmp_path: Path) -> None:
    message = MESSAGES[name]
    by_proxy = proxy_signed(home, message)
    assert_same(command_signed(home, message), by_proxy, home)
    # A file with Unix line ends is signed in its canonical form: the same bytes again.
    assert_same(command_signed(home, message.replace(b"\r\n", b"\n")), by_proxy, home)
    assert b"\n" not in by_proxy.replace(b"\r\n", b"")
    assert b"eve@example.com" not in by_proxy and not re.search(rb"(?im)^bcc:", by_proxy)
    inner, info = open_signed(by_proxy) or pytest.fail("not signed")
    assert info.signing_time == WHEN and info.certificate == home.keys.identities(home.passphrase)[0].certificate
    assert inner.endswith(message.split(b"\r\n\r\n", 1)[1])
    assert b"Subject: the numbers,\r\n folded\r\n" in inner
    if name == "no message-id":
        # The Message-ID made for the message comes from rng too, and is signed.
        assert b"Message-ID: <" in inner.split(b"\r\n\r\n", 1)[0]
    # OpenSSL agrees, with the sender's self-signed certificate as the trust anchor.
    path = tmp_path / "signed.eml"
    path.write_bytes(by_proxy)
    cert = next((home.settings.keys.directory / "identities").glob("*.crt"))
    proc = subprocess.run(
        ["openssl", "cms", "-verify", "-in", str(path), "-CAfile", str(cert), "-purpose", "any", "-out", "/dev/null"],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()


def test_the_body_is_signed_where_it_lies(home: Home) -> None:
    signer = Signer.from_identity(home.keys.identities(home.passphrase)[0])
    buffer = bytearray(MESSAGES["large"])
    signed = sign_message_parts(buffer, signer, signing_time=WHEN)
    body = [p for p in signed.parts if isinstance(p, memoryview)]
    assert len(body) == 1 and body[0].obj is buffer and bytes(body[0]) == MESSAGES["large"].split(b"\r\n\r\n", 1)[1]
    assert ChainReader(signed.parts).read() == bytes(signed)
    # Bare LF line ends cannot be signed where they lie: the canonical copy is.
    lf = bytearray(MESSAGES["large"].replace(b"\r\n", b"\n"))
    parts = sign_message_parts(lf, signer, signing_time=WHEN).parts
    assert not any(isinstance(p, memoryview) and p.obj is lf for p in parts)


@pytest.mark.parametrize("detached", [True, False])
def test_a_signature_over_pieces_is_the_signature_over_their_join(home: Home, detached: bool) -> None:
    signer = Signer.from_identity(home.keys.identities(home.passphrase)[0])
    pieces = [b"Content-Type: text/plain\r\n\r\n", memoryview(bytearray(BODY)), bytearray(b"end\r\n")]
    joined = b"".join(pieces)
    der = sign(pieces, signer, signing_time=WHEN, detached=detached)
    if isinstance(signer.key, rsa.RSAPrivateKey):
        # RSA PKCS#1 v1.5 is deterministic: the very same bytes.
        assert der == sign(joined, signer, signing_time=WHEN, detached=detached)
    info = verify(der, content=joined if detached else None, certificates=[signer.certificate])
    assert info.signing_time == WHEN
    if not detached:
        assert info.content == joined
    with pytest.raises(TypeError):
        sign([b"ok", "not bytes"], signer, signing_time=WHEN)  # type: ignore[list-item]


def test_which_signatures_run_inline(home: Home) -> None:
    signer = Signer.from_identity(home.keys.identities(home.passphrase)[0])
    assert signs_inline(INLINE_LIMIT, signer) is isinstance(signer.key, ec.EllipticCurvePrivateKey)
    assert signs_inline(INLINE_LIMIT + 1, signer) is False


def test_a_boundary_found_in_the_body_is_not_used(home: Home) -> None:
    signer = Signer.from_identity(home.keys.identities(home.passphrase)[0])
    draws = iter([b"\x00" * 12, b"\x01" * 12])
    taken = b"----=_mailcrypt_" + b"00" * 12
    message = MESSAGES["message-id, no content-type"] + b"--" + taken + b"\r\n"
    signed = bytes(sign_message_parts(bytearray(message), signer, signing_time=WHEN, rng=lambda n: next(draws)))
    assert b'boundary="----=_mailcrypt_' + b"01" * 12 + b'"' in signed
    assert open_signed(signed) is not None

"""The MIME layer: round trips, the outer message, header protection, openssl interop, errors."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import KeyPair
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcrypt import errors
from mailcrypt.envelope import decrypt, encrypt
from mailcrypt.mime import decrypt_file, transfer
from mailcrypt.mime import enveloped as smime
from mailcrypt.mime import headers as mh
from mailcrypt.policy import COMPATIBLE, MODERN, Profile

OpenSSL = Callable[..., subprocess.CompletedProcess[bytes]]

# ------------------------------------------------------------------ keys
# The session CA and recipients come from conftest.py: rsa2048, ec_p256, and
# rsa3072 as somebody the messages are not for.


@pytest.fixture(params=["rsa2048", "ec_p256"])
def party(request: pytest.FixtureRequest) -> KeyPair:
    return request.getfixturevalue(request.param)


PROFILES = {"compatible": COMPATIBLE, "modern": MODERN}


@pytest.fixture(params=sorted(PROFILES))
def profile(request: pytest.FixtureRequest) -> Profile:
    return PROFILES[request.param]


# ------------------------------------------------------------------ messages

HEADERS = (
    b"Return-Path: <alice@example.org>\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.org>, carol@example.net\r\n"
    b"Cc: Dave <dave@example.com>\r\n"
    b"Bcc: eve@example.org\r\n"
    b"Date: Tue, 25 Nov 2025 10:00:00 +0000\r\n"
    b"Message-ID: <1234.5678@example.org>\r\n"
)
BCC = b"Bcc: eve@example.org\r\n"

PLAIN = HEADERS + (
    b"Subject: Quarterly numbers\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Hello Bob,\r\n\r\nthe numbers are attached.\r\n"
)

UTF8 = HEADERS + (
    b"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4g4pyI?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n" + "Grüße aus Köln — ✈ 東京\r\nZeile zwei\r\n".encode()
)


def _multipart(attachment: bytes) -> bytes:
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return HEADERS + (
        b"Subject: Attachment\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="=-=-=boundary=-=-="\r\n'
        b"\r\n"
        b"This is a multi-part message in MIME format.\r\n"
        b"--=-=-=boundary=-=-=\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
        b"See attachment.\r\n"
        b"--=-=-=boundary=-=-=\r\n"
        b'Content-Type: application/octet-stream; name="data.bin"\r\n'
        b'Content-Disposition: attachment; filename="data.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + encoded + b"--=-=-=boundary=-=-=--\r\n"
    )


LONG = HEADERS + (
    b"Subject: a subject that is folded\r\n over two lines\r\n\tand a third\r\n"
    b"X-Long: " + b"x" * 1200 + b"\r\n"
    b"References: " + b" ".join(b"<%d.%s@example.org>" % (i, b"r" * 40) for i in range(30)) + b"\r\n"
    b"X-Folded: one\r\n two\r\n  three\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain;\r\n charset=us-ascii;\r\n format=flowed\r\n"
    b"\r\n" + b"y" * 2000 + b"\r\n"
)


def _without_bcc(message: bytes) -> bytes:
    return message.replace(BCC, b"")


def _header_block(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def _der(smime_message: bytes) -> bytes:
    return base64.b64decode(smime_message.split(b"\r\n\r\n", 1)[1])


def _inner(smime_message: bytes, party: KeyPair) -> bytes:
    return decrypt(_der(smime_message), [party.identity]).content


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize(
    "message",
    [PLAIN, UTF8, _multipart(os.urandom(5000)), LONG],
    ids=["plain", "utf8-8bit", "multipart", "long-headers"],
)
def test_round_trip_is_byte_exact(message: bytes, party: KeyPair, profile: Profile) -> None:
    encrypted = smime.encrypt_message(message, [party.cert], profile=profile)
    decrypted, info = smime.decrypt_message(encrypted, [party.identity])
    assert decrypted == _without_bcc(message)
    assert info.identity is party.identity
    assert info.content_type == ("authEnveloped-data" if profile.authenticated else "enveloped-data")
    assert info.cipher == profile.cipher


def test_lf_input_comes_back_canonical(party: KeyPair) -> None:
    lf = PLAIN.replace(b"\r\n", b"\n")
    decrypted, _ = smime.decrypt_message(smime.encrypt_message(lf, [party.cert]), [party.identity])
    assert decrypted == _without_bcc(PLAIN)


def test_crlf_body_is_not_touched(rsa2048: KeyPair) -> None:
    # A CRLF header block marks the message canonical: bare LF and CR in the body stay.
    message = b"From: a@example.org\r\nContent-Type: application/octet-stream\r\n\r\n\x00bare\nlf\rcr\r\n\xff"
    party = rsa2048
    decrypted, _ = smime.decrypt_message(smime.encrypt_message(message, [party.cert]), [party.identity])
    assert decrypted == message


def test_missing_content_type_is_added(ec_p256: KeyPair) -> None:
    party = ec_p256
    message = b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    encrypted = smime.encrypt_message(message, [party.cert])
    assert _inner(encrypted, party) == (
        b'From: a@example.org\r\nSubject: s\r\nContent-Type: text/plain; charset="us-ascii"; protected-headers="v1"\r\n'
        b"\r\nbody\r\n"
    )
    decrypted, _ = smime.decrypt_message(encrypted, [party.identity])
    assert decrypted == _inner(encrypted, party)


def test_inner_entity_is_the_original_with_protected_headers(rsa2048: KeyPair) -> None:
    party = rsa2048
    inner = _inner(smime.encrypt_message(LONG, [party.cert]), party)
    expected = _without_bcc(LONG).replace(
        b"format=flowed\r\n\r\n", b'format=flowed;\r\n protected-headers="v1"\r\n\r\n'
    )
    assert inner == expected


def test_streams_match_the_bytes_functions(rsa2048: KeyPair) -> None:
    party = rsa2048
    message = _multipart(os.urandom(300_000))

    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    expected = smime.encrypt_message(message, [party.cert])
    for source in (io.BytesIO(message), Pipe(message)):
        out = io.BytesIO()
        smime.encrypt_stream(source, out, [party.cert])
        # RSA padding is random, so compare the shape and the plaintext.
        assert len(out.getvalue()) == len(expected)
        assert _header_block(out.getvalue()) == _header_block(expected)
        assert smime.decrypt_message(out.getvalue(), [party.identity])[0] == _without_bcc(message)
    with decrypt_file(Pipe(expected), [party.identity]) as plain:
        assert plain.file.read() == _without_bcc(message)
        info = plain.unwrapped.layers[0].envelope
        assert info is not None and info.recipient_count == 1


def test_stream_starting_mid_file(ec_p256: KeyPair) -> None:
    party = ec_p256
    source = io.BytesIO(b"ignored prefix" + PLAIN.replace(b"\r\n", b"\n"))
    source.seek(len(b"ignored prefix"))
    out = io.BytesIO()
    smime.encrypt_stream(source, out, [party.cert])
    assert smime.decrypt_message(out.getvalue(), [party.identity])[0] == _without_bcc(PLAIN)


# ------------------------------------------------------------------ the outer message


def _check_outer(original: bytes, encrypted: bytes, smime_type: bytes) -> None:
    assert b"\n" not in encrypted.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in encrypted.replace(b"\r\n", b""), "bare CR"
    head, body = encrypted.split(b"\r\n\r\n", 1)
    fields = mh.split_fields(head + b"\r\n")
    original_fields = mh.split_fields(_header_block(original.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")))
    kept_fields = [f for f in original_fields if not f.is_mime() and f.name != "bcc"]
    assert fields[: len(kept_fields)] == [mh.Field("subject", b"Subject: [...]\r\n") if f.name == "subject" else f
                                         for f in kept_fields]
    assert [f.name for f in fields[len(kept_fields) :]] == [
        "mime-version", "content-type", "content-disposition", "content-transfer-encoding",
    ]
    assert b"Subject: [...]\r\n" in head
    for kept in (b"From: Alice <alice@example.org>\r\n", b"To: Bob <bob@example.org>, carol@example.net\r\n",
                 b"Cc: Dave <dave@example.com>\r\n", b"Date: Tue, 25 Nov 2025 10:00:00 +0000\r\n",
                 b"Message-ID: <1234.5678@example.org>\r\n"):
        assert kept in head + b"\r\n"
    assert b"eve@example.org" not in encrypted
    assert (
        b"Content-Type: application/pkcs7-mime; smime-type=" + smime_type + b'; name="smime.p7m"\r\n'
        b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64" in head
    )
    lines = body.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) == 76 for line in lines[:-2])
    assert 0 < len(lines[-2]) <= 76
    assert base64.b64decode(body, validate=False)[:1] == b"\x30"


@pytest.mark.parametrize("message", [PLAIN, UTF8, LONG, _multipart(os.urandom(10_000))])
def test_outer_message(message: bytes, rsa2048: KeyPair, profile: Profile) -> None:
    party = rsa2048
    encrypted = smime.encrypt_message(message, [party.cert], profile=profile)
    _check_outer(message, encrypted, b"authEnveloped-data" if profile.authenticated else b"enveloped-data")
    assert b"Quarterly" not in encrypted and b"Attachment" not in encrypted
    assert b"eve@example.org" not in _inner(encrypted, party)


def test_outer_message_from_lf_input(ec_p256: KeyPair) -> None:
    encrypted = smime.encrypt_message(PLAIN.replace(b"\r\n", b"\n"), [ec_p256.cert])
    _check_outer(PLAIN, encrypted, b"enveloped-data")


def test_gcm_variant_profile_is_auth_enveloped(rsa2048: KeyPair) -> None:
    profile = COMPATIBLE.with_options(cipher="aes128-gcm")
    encrypted = smime.encrypt_message(PLAIN, [rsa2048.cert], profile=profile)
    assert b"smime-type=authEnveloped-data;" in encrypted
    assert smime.decrypt_message(encrypted, [rsa2048.identity])[1].cipher == "aes128-gcm"


def test_no_subject_means_no_placeholder(rsa2048: KeyPair) -> None:
    encrypted = smime.encrypt_message(b"From: a@example.org\r\n\r\nx\r\n", [rsa2048.cert])
    assert b"Subject" not in encrypted.split(b"\r\n\r\n")[0]


def test_base64_lines_for_every_length() -> None:
    for n in list(range(0, 200)) + [57 * 1024 - 1, 57 * 1024, 57 * 1024 + 1, 57 * 3000 + 5]:
        data = os.urandom(n)
        encoder = transfer.Base64Lines()
        out = b"".join(encoder.feed(data[: n // 3]) + encoder.feed(data[n // 3 :]) + encoder.finish())
        assert out == base64.encodebytes(data).replace(b"\n", b"\r\n")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000), max_size=6))
def test_base64_lines_any_split(data: bytes, cuts: list[int]) -> None:
    encoder = transfer.Base64Lines()
    out = []
    for piece in _split(data, cuts):
        out += encoder.feed(piece)
    out += encoder.finish()
    assert b"".join(out) == base64.encodebytes(data).replace(b"\n", b"\r\n")


@settings(max_examples=60, deadline=None)
@given(
    st.binary(max_size=2000),
    st.lists(st.integers(min_value=0, max_value=3000), max_size=6),
    st.sampled_from([b"\r\n", b"\n"]),
    st.sampled_from([64, 76, 70, 10_000]),
)
def test_base64_decoder_any_split(data: bytes, cuts: list[int], eol: bytes, width: int) -> None:
    text = base64.b64encode(data)
    text = eol.join(text[i : i + width] for i in range(0, len(text), width)) + eol
    decoder = transfer.Base64Decoder()
    for piece in _split(text, cuts):
        decoder.feed(piece)
    assert decoder.finish() == data


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=500).map(lambda b: b.replace(b"\x00", b"\n")), st.lists(st.integers(0, 600), max_size=6))
def test_lf_to_crlf_any_split(data: bytes, cuts: list[int]) -> None:
    pieces = _split(data, cuts)
    expected = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert b"".join(smime._lf_to_crlf(pieces)) == expected
    assert smime._crlf_length(pieces) == len(expected)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# ------------------------------------------------------------------ header protection on the way back


def test_transit_headers_are_kept(rsa2048: KeyPair) -> None:
    party = rsa2048
    encrypted = smime.encrypt_message(PLAIN, [party.cert])
    received = (
        b"Received: from mx.example.org (mx.example.org [192.0.2.1])\r\n"
        b"\tby mail.example.org; Tue, 25 Nov 2025 10:00:01 +0000\r\n"
        b"X-Spam-Score: 0.1\r\n"
    )
    decrypted, _ = smime.decrypt_message(received + encrypted, [party.identity])
    assert decrypted == received + _without_bcc(PLAIN)


def test_trace_fields_are_compared_by_value(rsa2048: KeyPair) -> None:
    original = b"Received: from laptop by submission.example.org\r\n" + PLAIN
    encrypted = smime.encrypt_message(original, [rsa2048.cert])
    transit = b"Received: from submission.example.org by mx.example.net\r\nReturn-Path: <bounce@example.net>\r\n"
    decrypted, _ = smime.decrypt_message(transit + encrypted, [rsa2048.identity])
    # The new Received comes first; the protected Return-Path wins over the outer one.
    assert decrypted == b"Received: from submission.example.org by mx.example.net\r\n" + _without_bcc(original)


def test_outer_fields_cannot_pose_as_protected(rsa2048: KeyPair) -> None:
    # Someone on the path adds a Reply-To and a Sender outside the envelope.
    # The inner block has neither; they must not appear in the decrypted
    # message, where they would look as protected as the rest.
    encrypted = smime.encrypt_message(PLAIN, [rsa2048.cert])
    forged = b"Reply-To: attacker@evil.example\r\nSender: attacker@evil.example\r\n"
    received = b"Received: from mx.example.net by mail.example.org\r\n"
    decrypted, _ = smime.decrypt_message(received + forged + encrypted, [rsa2048.identity])
    assert b"evil.example" not in decrypted
    assert decrypted == received + _without_bcc(PLAIN)


def test_rfc9788_hp_cipher_is_protected(ec_p256: KeyPair) -> None:
    party = ec_p256
    inner = (
        b"From: a@example.org\r\nSubject: real subject\r\nHP-Outer: Subject: [...]\r\n"
        b'Content-Type: text/plain; charset=utf-8; hp="cipher"\r\n\r\nbody\r\n'
    )
    outer = b"From: a@example.org\r\nSubject: [...]\r\nX-Transit: yes\r\n" + _smime_head(b"enveloped-data")
    message = outer + _b64(encrypt(inner, [party.cert]))
    decrypted, _ = smime.decrypt_message(message, [party.identity])
    assert decrypted == b"X-Transit: yes\r\n" + inner


def test_foreign_protected_headers_suffix_left_alone(ec_p256: KeyPair) -> None:
    party = ec_p256
    inner = b'Subject: s\r\nContent-Type: text/plain; protected-headers="v1"\r\n\r\nbody\r\n'
    message = b"Subject: ...\r\n" + _smime_head(b"enveloped-data") + _b64(encrypt(inner, [party.cert]))
    assert smime.decrypt_message(message, [party.identity])[0] == inner


def test_unprotected_inner_entity(rsa2048: KeyPair) -> None:
    # Thunderbird without header protection: the inner part holds only its MIME headers.
    party = rsa2048
    inner = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nhi\r\n"
    outer = b"From: a@example.org\r\nSubject: plain subject\r\n" + _smime_head(b"enveloped-data")
    decrypted, _ = smime.decrypt_message(outer + _b64(encrypt(inner, [party.cert])), [party.identity])
    assert decrypted == b"From: a@example.org\r\nSubject: plain subject\r\nMIME-Version: 1.0\r\n" + inner


def test_inner_entity_without_headers(rsa2048: KeyPair) -> None:
    party = rsa2048
    outer = b"From: a@example.org\r\n" + _smime_head(b"enveloped-data")
    decrypted, _ = smime.decrypt_message(outer + _b64(encrypt(b"just text\r\n", [party.cert])), [party.identity])
    assert decrypted == b"From: a@example.org\r\nMIME-Version: 1.0\r\n\r\njust text\r\n"


def _smime_head(kind: bytes, encoding: bytes = b"base64") -> bytes:
    return (
        b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=" + kind
        + b'; name="smime.p7m"\r\nContent-Transfer-Encoding: ' + encoding + b"\r\n\r\n"
    )


def _b64(der: bytes) -> bytes:
    return base64.encodebytes(der).replace(b"\n", b"\r\n")


# ------------------------------------------------------------------ other encodings of the body


def test_binary_transfer_encoding(rsa2048: KeyPair) -> None:
    party = rsa2048
    der = _der(smime.encrypt_message(PLAIN, [party.cert]))
    message = b"To: bob@example.org\r\n" + _smime_head(b"enveloped-data", b"binary") + der
    assert smime.decrypt_message(message, [party.identity])[0] == _without_bcc(PLAIN)


def test_old_style_content_type_and_lf_lines(ec_p256: KeyPair) -> None:
    party = ec_p256
    der = _der(smime.encrypt_message(PLAIN, [party.cert]))
    message = (
        b'Content-Type: application/x-pkcs7-mime; name="smime.p7m"\n'
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(der) + b"\n\n"
    )
    assert smime.decrypt_message(message, [party.identity])[0] == _without_bcc(PLAIN)


# ------------------------------------------------------------------ openssl interop


@pytest.mark.parametrize("message", [PLAIN, _multipart(os.urandom(20_000))], ids=["plain", "multipart"])
def test_openssl_decrypts_our_output(message: bytes, party: KeyPair, profile: Profile, openssl: OpenSSL) -> None:
    encrypted = smime.encrypt_message(message, [party.cert], profile=profile)
    plaintext = openssl("cms", "-decrypt", "-inkey", party.key_path, "-recip", party.cert_path, input=encrypted).stdout
    assert plaintext == _inner(encrypted, party)
    assert plaintext.startswith(_header_block(_without_bcc(message)).split(b"Content-Type")[0])


@pytest.mark.parametrize("cipher", ["-aes256", "-aes-256-gcm", "-aes128"])
def test_we_decrypt_openssl_output(cipher: str, party: KeyPair, tmp_path: Path, openssl: OpenSSL) -> None:
    inner = b"Content-Type: text/plain; charset=utf-8\r\n\r\nHallo \xc3\xa4 from openssl\r\n" + b"z" * 5000 + b"\r\n"
    source = tmp_path / "inner.txt"
    source.write_bytes(inner)
    encrypted = openssl(
        "cms", "-encrypt", cipher, "-in", source, "-from", "Alice <alice@example.org>",
        "-to", "bob@example.org", "-subject", "From openssl", party.cert_path,
    ).stdout
    assert b"\r\n" not in encrypted  # openssl writes LF line ends on Unix.
    decrypted, info = smime.decrypt_message(encrypted, [party.identity])
    assert decrypted == (
        b"To: bob@example.org\r\nFrom: Alice <alice@example.org>\r\nSubject: From openssl\r\n"
        b"MIME-Version: 1.0\r\n" + inner
    )
    assert info.content_type == ("authEnveloped-data" if "gcm" in cipher else "enveloped-data")


# ------------------------------------------------------------------ errors


def test_not_smime_is_not_encrypted_error(rsa2048: KeyPair) -> None:
    with pytest.raises(errors.NotEncryptedError):
        smime.decrypt_message(PLAIN, [rsa2048.identity])
    signed = b"From: a@example.org\r\n" + _smime_head(b"signed-data") + b"MIIB\r\n"
    with pytest.raises(errors.NotEncryptedError):
        smime.decrypt_message(signed, [rsa2048.identity])
    with pytest.raises(errors.NotEncryptedError):
        smime.decrypt_message(b"", [rsa2048.identity])


@pytest.mark.parametrize(
    "body",
    [
        b"!!!! this is not base64 ****\r\n",
        b"MIIB\r\nMI-B\r\n",
        b"MIIBAA==\r\nMIIB\r\n",  # data after the padding
        b"MIIBA\r\n",  # a lone sixth bit group
        b"",
        b"\r\n\r\n",
    ],
)
def test_garbage_base64_is_cms_parse_error(body: bytes, rsa2048: KeyPair) -> None:
    message = b"From: a@example.org\r\n" + _smime_head(b"enveloped-data") + body
    with pytest.raises(errors.CMSParseError):
        smime.decrypt_message(message, [rsa2048.identity])


def test_garbage_inside_real_base64(rsa2048: KeyPair) -> None:
    party = rsa2048
    encrypted = smime.encrypt_message(_multipart(os.urandom(200_000)), [party.cert])
    cut = len(encrypted) // 2
    with pytest.raises(errors.CMSParseError):
        smime.decrypt_message(encrypted[:cut] + b"*" + encrypted[cut + 1 :], [party.identity])


def test_flipped_gcm_tag_fails_streaming_decrypt(rsa2048: KeyPair, tmp_path: Path) -> None:
    party = rsa2048
    encrypted = smime.encrypt_message(_multipart(os.urandom(400_000)), [party.cert], profile=MODERN)
    head = encrypted.split(b"\r\n\r\n", 1)[0]
    der = bytearray(_der(encrypted))
    assert der[-18:-16] == b"\x04\x10"  # RFC 5083 §2.1: the mac OCTET STRING comes last.
    der[-1] ^= 0x01
    tampered = head + b"\r\n\r\n" + _b64(bytes(der))
    with pytest.raises(errors.DecryptionFailed):
        decrypt_file(io.BytesIO(tampered), [party.identity], destination=tmp_path / "out.eml")
    assert os.listdir(tmp_path) == []
    with pytest.raises(errors.DecryptionFailed):
        smime.decrypt_message(tampered, [party.identity])


def test_wrong_identity(rsa2048: KeyPair, ec_p256: KeyPair, rsa3072: KeyPair) -> None:
    encrypted = smime.encrypt_message(PLAIN, [rsa2048.cert])
    with pytest.raises(errors.NoMatchingIdentity):
        smime.decrypt_message(encrypted, [rsa3072.identity, ec_p256.identity])


def test_huge_header_block_is_refused(rsa2048: KeyPair) -> None:
    message = b"X-Big: " + b"a" * (mh.HEADER_LIMIT + 10) + b"\r\n\r\nbody"
    with pytest.raises(errors.MessageError):
        smime.encrypt_message(message, [rsa2048.cert])


def test_argument_types(rsa2048: KeyPair) -> None:
    party = rsa2048
    with pytest.raises(TypeError):
        smime.encrypt_message("text", [party.cert])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        smime.encrypt_message(PLAIN, party.cert)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        smime.encrypt_message(PLAIN, [party.cert], profile="modern")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        smime.encrypt_stream(io.StringIO("x"), io.BytesIO(), [party.cert])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        smime.decrypt_message(PLAIN, party.identity)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decrypt_file(io.StringIO("x"), [party.identity])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decrypt_file(io.BytesIO(PLAIN), [party.identity], verify=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        smime.recipient_addresses("To: a@b")  # type: ignore[arg-type]


# ------------------------------------------------------------------ recipient addresses


def test_recipient_addresses() -> None:
    block = (
        b"From: Alice <alice@example.org>\r\n"
        b"To: Bob <bob@example.org>, \"Carol, C.\" <carol@example.net>,\r\n"
        b"  BOB@example.org\r\n"
        b"Cc: undisclosed-recipients:;, dave@example.com\r\n"
        b"Bcc: eve@example.org\r\n"
        b"Cc: =?UTF-8?Q?Fr=C3=A9d?= <fred@example.org>\r\n"
        b"\r\n"
        b"To: not-a-header@example.org\r\n"
    )
    assert smime.recipient_addresses(block) == [
        "bob@example.org", "carol@example.net", "dave@example.com", "fred@example.org",
    ]
    assert smime.recipient_addresses(block.replace(b"\r\n", b"\n")) == smime.recipient_addresses(block)
    assert smime.recipient_addresses(b"Subject: none\r\n") == []


def test_header_helpers_are_lossless() -> None:
    for block in (_header_block(LONG), b"A: b\r\n c\rd\r\nX: y", b" leading continuation\r\nA: b\r\n"):
        assert b"".join(f.raw for f in mh.split_fields(block)) == block


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    return iter([data[i : i + size] for i in range(0, len(data), size)])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_read_header_block_any_chunking(size: int) -> None:
    cases = {
        b"A: b\r\nC: d\r\n\r\nbody\r\n": (b"A: b\r\nC: d\r\n", b"\r\n", b"body\r\n"),
        b"A: b\nC: d\n\nbody\n": (b"A: b\nC: d\n", b"\n", b"body\n"),
        b"\r\nbody": (b"", b"\r\n", b"body"),
        b"no header here\r\n\r\nx": (b"", b"", b"no header here\r\n\r\nx"),
        b"A: only headers\r\n": (b"A: only headers\r\n", b"", b""),
    }
    for message, expected in cases.items():
        chunks = _chunks(message, size)
        header, sep, rest = mh.read_header_block(chunks, ValueError)
        assert (header, sep, rest + b"".join(chunks)) == expected


def test_content_type_parameters() -> None:
    fields = mh.split_fields(
        b'Content-Type: Application/PKCS7-MIME;\r\n\tsmime-type="enveloped-data"; Name=smime.p7m\r\n'
    )
    assert mh.content_type(fields) == ("application/pkcs7-mime", {"smime-type": "enveloped-data", "name": "smime.p7m"})


class _Recorder(io.BytesIO):
    """A file that remembers the largest read and write, to show both directions stream."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__(data)
        self.largest_read = 0
        self.largest_write = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.largest_read = max(self.largest_read, len(data))
        return data

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.largest_write = max(self.largest_write, len(data))
        return super().write(data)


def test_both_directions_stream(ec_p256: KeyPair, tmp_path: Path) -> None:
    party = ec_p256
    message = _multipart(os.urandom(6 << 20))
    destination = tmp_path / "out.eml"
    for original in (message, message.replace(b"\r\n", b"\n")):
        source, sink = _Recorder(original), _Recorder()
        smime.encrypt_stream(source, sink, [party.cert], profile=MODERN)
        assert source.largest_read <= 1 << 20 and sink.largest_write <= 1 << 20
        encrypted = _Recorder(sink.getvalue())
        # Decryption holds the envelope's DER once and never the plaintext: that goes to the file.
        tracemalloc.start()
        try:
            with decrypt_file(encrypted, [party.identity], destination=destination) as plain:
                plain.publish()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert encrypted.largest_read <= 1 << 20
        assert peak < len(message) * 1.5, peak
        assert destination.read_bytes() == _without_bcc(message)

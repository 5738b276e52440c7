"""Acceptance tests of the envelope core against real ``openssl cms``.

Both directions (STYLE.md §6): what ``mailcrypt.envelope.encrypt`` writes
must decrypt with ``openssl cms -decrypt``, and what ``openssl cms -encrypt``
writes (DER, BER from ``-stream``, PEM) must decrypt with ours. OpenSSL 3 is
on every machine, so nothing here skips. The keys are the session's
throwaway recipients from ``conftest.py``.
"""

from __future__ import annotations

import base64
import itertools
import os
from pathlib import Path

import pytest

from mailcrypt import errors
from mailcrypt.envelope import decrypt, encrypt, open_envelope
from mailcrypt.envelope.codec import CONTEXT, UNIVERSAL, children, octet_chunks, read_element
from mailcrypt.envelope.fingerprint import envelope_digest
from mailcrypt.policy import COMPATIBLE, CONTENT_CIPHERS, MODERN, Policy

# Binary content on purpose: bare LF, CRLF, NUL and high bytes must survive
# both tools unchanged (we always pass -binary to openssl).
CONTENT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\nbare LF\n\x00\xff end\r\n"

CIPHERS = ("aes128-cbc", "aes256-cbc", "aes128-gcm", "aes256-gcm")
RSA_TYPES = ("rsa2048", "rsa3072", "rsa4096")
EC_TYPES = ("ec_p256", "ec_p384")

# Key-management variants per key type: profile options and the
# key_management string our reader must report for them.
RSA_VARIANTS = (
    ({"rsa_padding": "pkcs1v15"}, "rsa-pkcs1v15"),
    ({"rsa_padding": "oaep", "oaep_hash": "sha1"}, "rsa-oaep-sha1"),
    ({"rsa_padding": "oaep", "oaep_hash": "sha256"}, "rsa-oaep-sha256"),
)
EC_VARIANTS = (
    ({"ecdh_kdf_hash": "sha1"}, "ecdh-sha1kdf-aes256-wrap"),
    ({"ecdh_kdf_hash": "sha256"}, "ecdh-sha256kdf-aes256-wrap"),
)

OUR_CASES = [
    pytest.param(cipher, key_type, options, km, id=f"{cipher}-{key_type}-{km}")
    for cipher in CIPHERS
    for key_type, (options, km) in itertools.chain(
        itertools.product(RSA_TYPES, RSA_VARIANTS), itertools.product(EC_TYPES, EC_VARIANTS)
    )
]


class _Files:
    """Numbered scratch files in a test's tmp_path."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def new(self, suffix: str, data: bytes | None = None) -> Path:
        self.count += 1
        path = self.directory / f"f{self.count}{suffix}"
        if data is not None:
            path.write_bytes(data)
        return path


@pytest.fixture
def files(tmp_path: Path) -> _Files:
    return _Files(tmp_path)


def openssl_decrypt(openssl, files: _Files, envelope: bytes, kp, *, inform: str = "DER") -> bytes:
    src = files.new(".cms", envelope)
    out = files.new(".out")
    openssl(
        "cms", "-decrypt", "-binary", "-inform", inform, "-in", src,
        "-inkey", kp.key_path, "-recip", kp.cert_path, "-out", out,
    )  # fmt: skip
    return out.read_bytes()


def openssl_encrypt(openssl, files: _Files, content: bytes, *args: str | Path, outform: str = "DER") -> bytes:
    """``openssl cms -encrypt`` with ``args`` (cipher, -recip, -keyopt ...)."""
    src = files.new(".txt", content)
    out = files.new(".cms")
    openssl("cms", "-encrypt", "-binary", "-in", src, "-outform", outform, "-out", out, *args)
    return out.read_bytes()


def dearmor(pem: bytes) -> bytes:
    """The DER inside one PEM block (what ``-outform PEM`` writes)."""
    lines = pem.strip().splitlines()
    assert lines[0].startswith(b"-----BEGIN ") and lines[-1].startswith(b"-----END ")
    return base64.b64decode(b"".join(lines[1:-1]), validate=True)


def content_octets(envelope: bytes) -> list[memoryview]:
    """The encryptedContent OCTET STRING pieces of an envelope (no originatorInfo)."""
    buf = memoryview(envelope)
    top = read_element(buf, 0, len(buf))
    _oid, explicit = children(buf, top)
    (body,) = children(buf, explicit)
    eci = [t for t in children(buf, body) if t.is_(UNIVERSAL, 16)][0]
    octets = list(children(buf, eci))[2]
    assert octets.is_(CONTEXT, 0)
    return octet_chunks(buf, octets)


# --- ours -> openssl ---------------------------------------------------------


@pytest.mark.parametrize(("cipher", "key_type", "options", "key_management"), OUR_CASES)
def test_ours_decrypts_with_openssl(openssl, files, keypairs, cipher, key_type, options, key_management):
    kp = keypairs[key_type]
    profile = COMPATIBLE.with_options(cipher=cipher, **options)
    envelope = encrypt(CONTENT, [kp.cert], profile=profile)

    assert openssl_decrypt(openssl, files, envelope, kp) == CONTENT
    # And ours agrees on what it wrote.
    result = decrypt(envelope, [kp.identity])
    assert result.content == CONTENT
    assert result.info.cipher == cipher
    assert result.info.key_management == key_management
    assert result.info.content_type == ("authEnveloped-data" if cipher.endswith("gcm") else "enveloped-data")


@pytest.mark.parametrize("profile", [COMPATIBLE, MODERN], ids=lambda p: p.name)
@pytest.mark.parametrize("key_type", RSA_TYPES + EC_TYPES)
def test_profiles_decrypt_with_openssl(openssl, files, keypairs, profile, key_type):
    kp = keypairs[key_type]
    envelope = encrypt(CONTENT, [kp.cert], profile=profile)
    assert openssl_decrypt(openssl, files, envelope, kp) == CONTENT
    info = decrypt(envelope, [kp.identity]).info
    assert info.cipher == profile.cipher
    if kp.is_rsa:
        expected = "rsa-pkcs1v15" if profile.rsa_padding == "pkcs1v15" else f"rsa-oaep-{profile.oaep_hash}"
    else:
        expected = f"ecdh-{profile.ecdh_kdf_hash}kdf-{profile.key_wrap}"
    assert info.key_management == expected


def test_empty_content_decrypts_with_openssl(openssl, files, rsa2048, ec_p256):
    for profile in (COMPATIBLE, MODERN):
        envelope = encrypt(b"", [rsa2048.cert, ec_p256.cert], profile=profile)
        assert openssl_decrypt(openssl, files, envelope, rsa2048) == b""
        assert openssl_decrypt(openssl, files, envelope, ec_p256) == b""


@pytest.mark.parametrize("profile", [COMPATIBLE, MODERN], ids=lambda p: p.name)
def test_25_recipients(openssl, files, many_recipients, profile):
    envelope = encrypt(CONTENT, [kp.cert for kp in many_recipients], profile=profile)
    # OpenSSL as the first, the middle and the last recipient.
    for kp in (many_recipients[0], many_recipients[12], many_recipients[-1]):
        assert openssl_decrypt(openssl, files, envelope, kp) == CONTENT
    # Ours as each of them, alone.
    for kp in many_recipients:
        result = decrypt(envelope, [kp.identity])
        assert result.content == CONTENT
        assert result.info.identity is kp.identity
        assert result.info.recipient_count == 25
    # All identities at once, last first: the first identity that matches wins.
    reversed_ids = [kp.identity for kp in reversed(many_recipients)]
    assert decrypt(envelope, reversed_ids).info.identity is many_recipients[-1].identity


# --- openssl -> ours ---------------------------------------------------------

OPENSSL_CIPHERS = {
    "-aes-128-cbc": "aes128-cbc",
    "-aes-256-cbc": "aes256-cbc",
    "-aes-128-gcm": "aes128-gcm",
    "-aes-256-gcm": "aes256-gcm",
}


def _all_identities(keypairs):
    return [kp.identity for kp in keypairs.values()]


@pytest.mark.parametrize("flag", OPENSSL_CIPHERS)
@pytest.mark.parametrize("key_type", ["rsa2048", "rsa4096", "ec_p256", "ec_p384"])
def test_openssl_ciphers_decrypt_with_ours(openssl, files, keypairs, flag, key_type):
    kp = keypairs[key_type]
    envelope = openssl_encrypt(openssl, files, CONTENT, flag, "-recip", kp.cert_path)
    result = decrypt(envelope, _all_identities(keypairs))
    assert result.content == CONTENT
    assert result.info.cipher == OPENSSL_CIPHERS[flag]
    assert result.info.identity is kp.identity
    assert result.info.recipient_count == 1
    if kp.is_rsa:
        assert result.info.key_management == "rsa-pkcs1v15"
    else:
        # OpenSSL's default KDF is the SHA-1 X9.63 KDF; the wrap size follows the cipher.
        assert result.info.key_management.startswith("ecdh-sha1kdf-aes")


@pytest.mark.parametrize(
    ("keyopts", "key_management"),
    [
        (("rsa_padding_mode:oaep",), "rsa-oaep-sha1"),
        (("rsa_padding_mode:oaep", "rsa_oaep_md:sha256"), "rsa-oaep-sha256"),
        (("rsa_padding_mode:oaep", "rsa_oaep_md:sha384", "rsa_mgf1_md:sha384"), "rsa-oaep-sha384"),
        (("rsa_padding_mode:oaep", "rsa_oaep_md:sha256", "rsa_mgf1_md:sha1"), "rsa-oaep-sha256-mgf1-sha1"),
        (("rsa_padding_mode:pkcs1",), "rsa-pkcs1v15"),
    ],
    ids=["oaep-sha1", "oaep-sha256", "oaep-sha384", "oaep-sha256-mgf1-sha1", "pkcs1"],
)
@pytest.mark.parametrize("flag", ["-aes-256-cbc", "-aes-256-gcm"])
def test_openssl_rsa_paddings_decrypt_with_ours(openssl, files, keypairs, rsa3072, keyopts, key_management, flag):
    keyopt_args = [arg for opt in keyopts for arg in ("-keyopt", opt)]
    envelope = openssl_encrypt(openssl, files, CONTENT, flag, "-recip", rsa3072.cert_path, *keyopt_args)
    result = decrypt(envelope, _all_identities(keypairs))
    assert result.content == CONTENT
    assert result.info.key_management == key_management
    assert result.info.identity is rsa3072.identity


@pytest.mark.parametrize(
    ("kdf", "key_type"), [("sha1", "ec_p256"), ("sha256", "ec_p256"), ("sha384", "ec_p384"), ("sha512", "ec_p384")]
)
def test_openssl_ecdh_kdfs_decrypt_with_ours(openssl, files, keypairs, kdf, key_type):
    kp = keypairs[key_type]
    envelope = openssl_encrypt(
        openssl, files, CONTENT, "-aes-256-cbc", "-recip", kp.cert_path, "-keyopt", f"ecdh_kdf_md:{kdf}"
    )
    result = decrypt(envelope, _all_identities(keypairs))
    assert result.content == CONTENT
    assert result.info.key_management == f"ecdh-{kdf}kdf-aes256-wrap"
    assert result.info.identity is kp.identity


@pytest.mark.parametrize("flag", ["-aes-128-cbc", "-aes-256-gcm"])
@pytest.mark.parametrize("key_type", ["rsa2048", "ec_p384"])
def test_openssl_keyid_decrypts_with_ours(openssl, files, keypairs, flag, key_type):
    kp = keypairs[key_type]
    envelope = openssl_encrypt(openssl, files, CONTENT, flag, "-keyid", "-recip", kp.cert_path)
    result = decrypt(envelope, _all_identities(keypairs))
    assert result.content == CONTENT
    assert result.info.identity is kp.identity


@pytest.mark.parametrize("flag", ["-aes-128-cbc", "-aes-256-gcm"])
def test_openssl_stream_ber_decrypts_with_ours(openssl, files, keypairs, flag):
    rsa, ec = keypairs["rsa2048"], keypairs["ec_p256"]
    envelope = openssl_encrypt(
        openssl, files, CONTENT, "-stream", flag, "-recip", rsa.cert_path, "-recip", ec.cert_path
    )
    # -stream writes indefinite lengths: the outer SEQUENCE is 30 80.
    assert envelope[:2] == b"\x30\x80"
    for kp in (rsa, ec):
        result = decrypt(envelope, [kp.identity])
        assert result.content == CONTENT
        assert result.info.recipient_count == 2
        env = open_envelope(envelope, [kp.identity])
        # The replay digest from the parts the reader located is the one of a separate walk.
        assert env.digest() == envelope_digest(envelope)
        assert b"".join(env.chunks(7)) == CONTENT


@pytest.mark.parametrize("flag", ["-aes-256-cbc", "-aes-128-gcm"])
def test_openssl_pem_decrypts_with_ours(openssl, files, keypairs, flag):
    kp = keypairs["ec_p256"]
    pem = openssl_encrypt(openssl, files, CONTENT, flag, "-recip", kp.cert_path, outform="PEM")
    assert pem.startswith(b"-----BEGIN CMS-----")
    # The core reads DER/BER only; PEM armor belongs to the layer above it.
    with pytest.raises(errors.NotEncryptedError):
        decrypt(pem, [kp.identity])
    result = decrypt(dearmor(pem), _all_identities(keypairs))
    assert result.content == CONTENT
    assert result.info.identity is kp.identity


def test_openssl_several_recipients_reports_matching_identity(openssl, files, keypairs, many_recipients):
    """OpenSSL encrypts to five of ours; each identity list reports the one that matched."""
    chosen = [keypairs["rsa3072"], keypairs["ec_p384"], many_recipients[3], many_recipients[7], keypairs["rsa4096"]]
    recip_args = [a for kp in chosen for a in ("-recip", kp.cert_path)]
    envelope = openssl_encrypt(openssl, files, CONTENT, "-aes-256-gcm", *recip_args)
    outsiders = [keypairs["rsa2048"].identity, keypairs["ec_p256"].identity, many_recipients[0].identity]
    for kp in chosen:
        result = decrypt(envelope, [*outsiders, kp.identity, many_recipients[24].identity])
        assert result.content == CONTENT
        assert result.info.identity is kp.identity
        assert result.info.recipient_count == 5
    with pytest.raises(errors.NoMatchingIdentity) as exc_info:
        decrypt(envelope, outsiders)
    assert len(exc_info.value.recipients) == 5
    assert exc_info.value.tried == tuple(i.label for i in outsiders)


def test_openssl_default_cipher_3des_is_read_only(openssl, files, rsa2048):
    """``openssl cms -encrypt`` without a cipher flag writes 3DES-CBC.

    RFC 8551 §2.7 lets receivers keep reading it; the policy decides, and
    no profile can write it.
    """
    envelope = openssl_encrypt(openssl, files, CONTENT, "-recip", rsa2048.cert_path)
    result = decrypt(envelope, [rsa2048.identity])
    assert result.content == CONTENT
    assert result.info.cipher == "des-ede3-cbc"
    env = open_envelope(envelope, [rsa2048.identity])
    assert b"".join(env.chunks(5)) == CONTENT
    aes_only = Policy(content_ciphers=frozenset(CONTENT_CIPHERS))
    with pytest.raises(errors.PolicyViolation) as exc_info:
        decrypt(envelope, [rsa2048.identity], policy=aes_only)
    assert exc_info.value.oid == "1.2.840.113549.3.7"  # des-ede3-cbc
    with pytest.raises(ValueError):
        COMPATIBLE.with_options(cipher="des-ede3-cbc")


# --- large messages ----------------------------------------------------------

BIG = 3 * 1024 * 1024 + 5  # not a multiple of the block size or of openssl's 4096-byte chunks


@pytest.fixture(scope="module")
def big_content() -> bytes:
    return os.urandom(BIG)


@pytest.mark.parametrize("profile", [COMPATIBLE, MODERN], ids=lambda p: p.name)
def test_large_message_ours_to_openssl(openssl, files, rsa2048, ec_p384, big_content, profile):
    envelope = encrypt(big_content, [rsa2048.cert, ec_p384.cert], profile=profile)
    assert openssl_decrypt(openssl, files, envelope, rsa2048) == big_content
    assert openssl_decrypt(openssl, files, envelope, ec_p384) == big_content


@pytest.mark.parametrize("stream", [False, True], ids=["der", "stream-ber"])
@pytest.mark.parametrize("flag", ["-aes-256-cbc", "-aes-256-gcm"])
def test_large_message_openssl_to_ours(openssl, files, rsa2048, ec_p256, big_content, stream, flag):
    args = ["-stream"] if stream else []
    envelope = openssl_encrypt(
        openssl, files, big_content, *args, flag, "-recip", rsa2048.cert_path, "-recip", ec_p256.cert_path
    )
    pieces = content_octets(envelope)
    if stream:
        # Constructed OCTET STRING: many segments, each decrypted in turn.
        assert len(pieces) > 100
    else:
        assert len(pieces) == 1
    assert decrypt(envelope, [rsa2048.identity]).content == big_content
    # Streaming with chunk sizes that straddle openssl's segment and the AES block.
    for size in (1000, 4096, 65537, 1 << 20):
        env = open_envelope(envelope, [ec_p256.identity])
        out = list(env.chunks(size))
        assert b"".join(out) == big_content
        assert len(out) > 1
        assert max(len(p) for p in out) <= size + 16


def test_large_streamed_writer_to_openssl(openssl, files, rsa4096, big_content):
    """EnvelopeWriter fed in uneven chunks: OpenSSL reads the result."""
    from mailcrypt.envelope import EnvelopeWriter

    for profile in (COMPATIBLE, MODERN):
        writer = EnvelopeWriter([rsa4096.cert], content_length=len(big_content), profile=profile)
        parts = [writer.header()]
        pos = 0
        for step in itertools.cycle((1, 15, 4096, 100_003, 17)):
            if pos >= len(big_content):
                break
            parts.append(writer.update(big_content[pos : pos + step]))
            pos += step
        parts.append(writer.finish())
        assert openssl_decrypt(openssl, files, b"".join(parts), rsa4096) == big_content

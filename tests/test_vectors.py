"""Interop vectors: CMS envelopes made by OpenSSL and pyca/cryptography, decrypted by mailcrypt.

Each ``tests/vectors/<name>.vec`` file is one case (STYLE.md §6): a header of
``key: value`` lines, a blank line, and the CMS bytes as a PEM block labelled
``CMS``. ``tests/vectors_gen/make_vectors.py`` made them and records in every
header the exact command or call used; these tests never run it.

The header keys read here:

- ``expect``: ``success``, ``no-match``, ``integrity``, ``malformed`` or
  ``unsupported``; each failure maps to exactly one exception class, and a
  subclass does not count (``error`` may name a different ``errors`` class
  for ``malformed``, e.g. ``NotEncryptedError``).
- ``identity``: comma-separated key names; ``keys/<name>.key`` and
  ``keys/<name>.crt`` make one identity each, passed in that order.
- ``matched-identity``, ``plaintext``, ``content-type``, ``cipher``,
  ``key-management``, ``recipient-count``: what a success must report.
- ``oid``: the algorithm an ``unsupported`` error must name.

The keys in ``tests/vectors/keys/`` are throwaway test keys made for these
vectors; they protect nothing.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailcrypt import errors
from mailcrypt.envelope import decrypt, identity_from_key, open_envelope

VECTORS = Path(__file__).resolve().parent / "vectors"

EXPECTED_ERROR = {
    "no-match": errors.NoMatchingIdentity,
    "integrity": errors.DecryptionFailed,
    "malformed": errors.CMSParseError,
    "unsupported": errors.UnsupportedAlgorithm,
}
# ``error:`` may override the class for these expectations only.
ERROR_OVERRIDES = {"malformed": {"CMSParseError", "NotEncryptedError"}}

REQUIRED = {"expect", "tool", "command", "identity"}
SUCCESS_REQUIRED = {"plaintext", "matched-identity"}
KNOWN = REQUIRED | SUCCESS_REQUIRED | {
    "error", "content-type", "cipher", "key-management", "recipient-count", "oid",
    "derived-from", "modification", "note",
}


@dataclass(frozen=True)
class Vector:
    name: str
    header: dict[str, str]
    data: bytes

    @property
    def expect(self) -> str:
        return self.header["expect"]

    @property
    def identity_names(self) -> list[str]:
        return [n.strip() for n in self.header["identity"].split(",")]

    @property
    def expected_error(self) -> type[errors.MailcryptError]:
        cls = EXPECTED_ERROR[self.expect]
        if "error" in self.header:
            name = self.header["error"]
            assert name in ERROR_OVERRIDES.get(self.expect, set()), f"{self.name}: error {name!r} not allowed here"
            cls = getattr(errors, name)
        return cls


def load_vector(path: Path) -> Vector:
    """Parse one .vec file; a malformed file fails the test that reads it."""
    text = path.read_text(encoding="ascii")
    head, sep, body = text.partition("\n\n")
    assert sep, f"{path.name}: no blank line after the header"
    header: dict[str, str] = {}
    for line in head.splitlines():
        key, colon, value = line.partition(": ")
        assert colon and key not in header, f"{path.name}: bad header line {line!r}"
        header[key] = value.strip()
    missing = REQUIRED - header.keys()
    assert not missing, f"{path.name}: header lacks {sorted(missing)}"
    assert not header.keys() - KNOWN, f"{path.name}: unknown header keys {sorted(header.keys() - KNOWN)}"
    expect = header["expect"]
    assert expect == "success" or expect in EXPECTED_ERROR, f"{path.name}: bad expect {expect!r}"
    if expect == "success":
        assert not SUCCESS_REQUIRED - header.keys(), f"{path.name}: success needs {sorted(SUCCESS_REQUIRED)}"
    lines = body.strip().splitlines()
    assert lines[0] == "-----BEGIN CMS-----" and lines[-1] == "-----END CMS-----", f"{path.name}: no CMS PEM block"
    data = base64.b64decode("".join(lines[1:-1]), validate=True)
    return Vector(path.stem, header, data)


def vector_paths() -> list[Path]:
    return sorted(VECTORS.glob("*.vec"))


def vector_params(expect: str | None = None) -> list:
    out = []
    for path in vector_paths():
        vec = load_vector(path)
        if expect is None or vec.expect == expect:
            out.append(pytest.param(vec, id=vec.name))
    return out


@functools.cache
def key_and_cert(name: str) -> tuple[object, x509.Certificate]:
    key = serialization.load_pem_private_key((VECTORS / "keys" / f"{name}.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((VECTORS / "keys" / f"{name}.crt").read_bytes())
    return key, cert


def identities_for(vec: Vector) -> list:
    return [identity_from_key(*key_and_cert(name)) for name in vec.identity_names]


def check_success(vec: Vector, identities: list, content: bytes, info) -> None:
    h = vec.header
    expected = (VECTORS / h["plaintext"]).read_bytes()
    assert type(content) is bytes
    assert content == expected, f"{vec.name}: plaintext differs ({len(content)} bytes, expected {len(expected)})"
    matched = identities[vec.identity_names.index(h["matched-identity"])]
    assert info.identity is matched, f"{vec.name}: identity {info.identity!r}, expected {h['matched-identity']}"
    if "content-type" in h:
        assert info.content_type == h["content-type"]
    if "cipher" in h:
        assert info.cipher == h["cipher"]
    if "key-management" in h:
        assert info.key_management == h["key-management"]
    if "recipient-count" in h:
        assert info.recipient_count == int(h["recipient-count"])


def check_error(vec: Vector, identities: list, exc: BaseException) -> None:
    expected = vec.expected_error
    assert type(exc) is expected, f"{vec.name}: raised {type(exc).__name__}, expected exactly {expected.__name__}"
    if vec.expect == "no-match":
        assert len(exc.tried) == len(identities), f"{vec.name}: tried {exc.tried!r}"
        if "recipient-count" in vec.header:
            assert len(exc.recipients) == int(vec.header["recipient-count"]), (
                f"{vec.name}: recipients {exc.recipients!r}"
            )
    if "oid" in vec.header:
        assert exc.oid == vec.header["oid"]


@pytest.mark.parametrize("vec", vector_params())
def test_vector_decrypt(vec: Vector) -> None:
    identities = identities_for(vec)
    if vec.expect == "success":
        result = decrypt(vec.data, identities)
        check_success(vec, identities, result.content, result.info)
        return
    with pytest.raises(vec.expected_error) as caught:
        decrypt(vec.data, identities)
    check_error(vec, identities, caught.value)


def _stream(vec: Vector, identities: list) -> tuple[object, bytes]:
    env = open_envelope(vec.data, identities)
    info = env.info
    # A small chunk size so that even the short vectors cross several chunk boundaries.
    chunks = list(env.chunks(size=100))
    assert all(type(c) is bytes for c in chunks)
    return info, b"".join(chunks)


@pytest.mark.parametrize("vec", vector_params())
def test_vector_open_envelope_streaming(vec: Vector) -> None:
    identities = identities_for(vec)
    if vec.expect == "success":
        info, content = _stream(vec, identities)
        check_success(vec, identities, content, info)
        return
    # The error may come from open_envelope() or only once the chunks are exhausted (a GCM tag,
    # CBC padding or a truncated stream is only known at the end); either way it is the same class.
    with pytest.raises(vec.expected_error) as caught:
        _stream(vec, identities)
    check_error(vec, identities, caught.value)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda t: t.__name__)
def test_vector_decrypt_accepts_byte_buffers(wrap) -> None:
    vec = load_vector(VECTORS / "openssl-stream-multi-aes256-gcm.vec")
    identities = identities_for(vec)
    result = decrypt(wrap(vec.data), identities)
    check_success(vec, identities, result.content, result.info)


def test_vectors_cover_every_expectation() -> None:
    # An empty or partial vectors directory must fail loudly, not turn into zero parametrized tests.
    counts: dict[str, int] = {}
    for path in vector_paths():
        vec = load_vector(path)
        counts[vec.expect] = counts.get(vec.expect, 0) + 1
        for name in vec.identity_names:
            assert (VECTORS / "keys" / f"{name}.key").is_file(), f"{vec.name}: no key {name}"
            assert (VECTORS / "keys" / f"{name}.crt").is_file(), f"{vec.name}: no certificate {name}"
        if "plaintext" in vec.header:
            assert (VECTORS / vec.header["plaintext"]).is_file()
    assert set(counts) == {"success", *EXPECTED_ERROR}, counts
    assert counts["success"] >= 40, counts


def test_vector_keys_are_throwaway_test_keys() -> None:
    # Only the generator's self-signed test certificates belong here (STYLE.md §6: never commit real keys).
    for crt in sorted((VECTORS / "keys").glob("*.crt")):
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        (cn,) = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert cn.value == f"mailcrypt test vector {crt.stem}"
        assert cert.issuer == cert.subject

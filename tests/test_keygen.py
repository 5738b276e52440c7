"""Key generation and key files: certificates that OpenSSL accepts, files that stay private.

Covers ``mailcrypt.keydir.keygen`` (the certificate profile, the 0600 writers),
``mailcrypt.keydir.keyfiles`` (reading certificates, keys and PKCS#12 back, with one
clear error per failure) and the ``mailcrypt keys generate`` command run as a
real process. The envelope core is not needed here: OpenSSL does the
encrypting and decrypting.
"""

from __future__ import annotations

import datetime
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailcrypt import errors
from mailcrypt.addresses import normalize_address
from mailcrypt.keydir import keyfiles, keygen
from mailcrypt.pki import certificate_addresses

MAILCRYPT = [sys.executable, "-m", "mailcrypt"]
OPENSSL = shutil.which("openssl")
KEY_TYPES = ["rsa2048", "rsa3072", "rsa4096", "p256", "p384"]
NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
PASSPHRASE = "correct horse battery staple 7"


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any MAILCRYPT_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    env.update(extra)
    return env


def openssl(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    assert OPENSSL, "OpenSSL 3 is required on every machine (STYLE.md §6)"
    proc = subprocess.run([OPENSSL, *args], input=input, capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def mailcrypt(*args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MAILCRYPT, *args], cwd=cwd, env=env or clean_env(), capture_output=True, timeout=120, **kwargs
    )


@pytest.fixture(autouse=True)
def _no_passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (keyfiles.PASSPHRASE_ENV, keyfiles.P12_PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def identities() -> dict[str, tuple]:
    """One identity per key type, generated once for the whole session."""
    return {kt: keygen.generate_identity(f"{kt}@example.org", key_type=kt, now=NOW) for kt in KEY_TYPES}


@pytest.fixture(scope="session")
def identity_files(identities, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """The session identities as files: an encrypted PKCS#8 key (0600) and a PEM certificate."""
    directory = tmp_path_factory.mktemp("identities")
    files = {}
    for kt, (key, cert) in identities.items():
        key_path, cert_path = directory / f"{kt}.key", directory / f"{kt}.crt"
        keygen.write_private_key(key_path, key, passphrase=PASSPHRASE.encode())
        keygen.write_certificate(cert_path, cert)
        files[kt] = (key_path, cert_path)
    return files


# ---------------------------------------------------------------- the certificate profile


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_certificate_profile(identities, key_type: str) -> None:
    key, cert = identities[key_type]
    address = f"{key_type}@example.org"
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == address
    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)

    ext = cert.extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.RFC822Name) == [address]
    basic = ext.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    if key_type.startswith("rsa"):
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == int(key_type[3:])
        assert usage.value.key_encipherment and not usage.value.key_agreement
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == {"p256": "secp256r1", "p384": "secp384r1"}[key_type]
        assert usage.value.key_agreement and not usage.value.key_encipherment
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert aki.key_identifier == ski.digest

    assert cert.not_valid_before_utc == NOW - datetime.timedelta(hours=1)
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=730)


def test_validity_days_and_default_now() -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    _, cert = keygen.generate_identity("a@example.org", key_type="p256", days=10)
    assert before - datetime.timedelta(hours=1, seconds=1) <= cert.not_valid_before_utc
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=10, hours=1)


def test_serial_numbers_are_random() -> None:
    serials = {keygen.generate_identity("a@example.org", key_type="p256")[1].serial_number for _ in range(3)}
    assert len(serials) == 3
    assert all(s.bit_length() > 64 for s in serials)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_openssl_shows_the_extensions(identity_files, key_type: str) -> None:
    _, cert_path = identity_files[key_type]
    text = openssl("x509", "-in", str(cert_path), "-noout", "-text").decode()
    assert "X509v3 Basic Constraints: critical" in text and "CA:FALSE" in text
    assert "X509v3 Key Usage: critical" in text
    if key_type.startswith("rsa"):
        assert "Digital Signature, Key Encipherment" in text
        assert "sha256WithRSAEncryption" in text
    else:
        assert "Digital Signature, Key Agreement" in text
        assert "ecdsa-with-SHA256" in text
    assert "E-mail Protection" in text
    assert f"email:{key_type}@example.org" in text
    assert "X509v3 Subject Key Identifier" in text and "X509v3 Authority Key Identifier" in text
    purposes = openssl("x509", "-in", str(cert_path), "-noout", "-purpose").decode()
    assert "S/MIME signing : Yes" in purposes
    # OpenSSL's "S/MIME encryption" purpose looks for keyEncipherment only, which
    # an EC key must not carry (RFC 8813); ECDH needs keyAgreement instead.
    expected = "Yes" if key_type.startswith("rsa") else "No"
    assert f"S/MIME encryption : {expected}" in purposes


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_openssl_cms_encrypts_to_and_decrypts_with_generated_identity(
    identity_files, key_type: str, tmp_path: Path
) -> None:
    key_path, cert_path = identity_files[key_type]
    message = b"To: someone@example.org\r\nSubject: test\r\n\r\nhello from openssl\r\n"
    p7m = tmp_path / "msg.p7m"
    openssl("cms", "-encrypt", "-aes256", "-out", str(p7m), str(cert_path), input=message)
    # The passphrase travels in the environment, never in argv.
    env = clean_env(KEYPASS=PASSPHRASE)
    plain = openssl(
        "cms", "-decrypt", "-in", str(p7m), "-recip", str(cert_path), "-inkey", str(key_path),
        "-passin", "env:KEYPASS", env=env,
    )
    assert plain == message


# ---------------------------------------------------------------- addresses and arguments


@pytest.mark.parametrize(
    "address,expected",
    [
        ("alice@example.org", "alice@example.org"),
        ("Alice.Smith+tag@Example.ORG", "Alice.Smith+tag@example.org"),
        ("bob@bücher.example", "bob@xn--bcher-kva.example"),
        ("o'neil@mail.example.co.uk", "o'neil@mail.example.co.uk"),
    ],
)
def test_normalize_address(address: str, expected: str) -> None:
    assert normalize_address(address) == expected


@pytest.mark.parametrize(
    "address",
    ["alice", "@example.org", "alice@", "alice@localhost", "a b@example.org", "ali..ce@example.org",
     ".alice@example.org", "al/ice@example.org", "alice@exa_mple.org", "Alice <alice@example.org>",
     "jörg@example.org", "alice@-example.org", ""],
)
def test_bad_addresses_are_usage_errors(address: str) -> None:
    with pytest.raises(errors.UsageError):
        keygen.generate_identity(address, key_type="p256")


def test_bad_key_type_and_days() -> None:
    with pytest.raises(errors.UsageError, match="key type"):
        keygen.generate_identity("a@example.org", key_type="dsa1024")
    for days in (0, -1, keygen.MAX_DAYS + 1):
        with pytest.raises(errors.UsageError, match="days"):
            keygen.generate_identity("a@example.org", key_type="p256", days=days)
    with pytest.raises(TypeError):
        keygen.generate_identity("a@example.org", key_type="p256", now=datetime.datetime(2026, 1, 1))


# ---------------------------------------------------------------- writers


def test_key_file_is_0600_encrypted_pkcs8(identities, tmp_path: Path) -> None:
    key, _ = identities["p256"]
    path = tmp_path / "k.pem"
    keygen.write_private_key(path, key, passphrase=PASSPHRASE.encode())
    assert path.stat().st_mode & 0o777 == 0o600
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert PASSPHRASE.encode() not in pem
    loaded = serialization.load_pem_private_key(pem, PASSPHRASE.encode())
    assert loaded.private_numbers() == key.private_numbers()
    assert sorted(os.listdir(tmp_path)) == ["k.pem"]


def test_unencrypted_key_and_certificate_modes(identities, tmp_path: Path) -> None:
    key, cert = identities["p256"]
    keygen.write_private_key(tmp_path / "k.pem", key, passphrase=None)
    keygen.write_certificate(tmp_path / "c.pem", cert)
    assert (tmp_path / "k.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "c.pem").stat().st_mode & 0o777 == 0o644
    assert x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes()) == cert


def test_writers_refuse_to_overwrite_unless_forced(identities, tmp_path: Path) -> None:
    key, cert = identities["p256"]
    other_key, other_cert = identities["p384"]
    keygen.write_private_key(tmp_path / "k.pem", key, passphrase=None)
    keygen.write_certificate(tmp_path / "c.pem", cert)
    before = (tmp_path / "k.pem").read_bytes(), (tmp_path / "c.pem").read_bytes()
    with pytest.raises(errors.ConfigError, match="already exists"):
        keygen.write_private_key(tmp_path / "k.pem", other_key, passphrase=None)
    with pytest.raises(errors.ConfigError, match="already exists"):
        keygen.write_certificate(tmp_path / "c.pem", other_cert)
    assert ((tmp_path / "k.pem").read_bytes(), (tmp_path / "c.pem").read_bytes()) == before
    keygen.write_private_key(tmp_path / "k.pem", other_key, passphrase=None, force=True)
    keygen.write_certificate(tmp_path / "c.pem", other_cert, force=True)
    assert (tmp_path / "k.pem").read_bytes() != before[0]
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["c.pem", "k.pem"]


def test_empty_passphrase_is_refused(identities, tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        keygen.write_private_key(tmp_path / "k.pem", identities["p256"][0], passphrase=b"")
    assert not (tmp_path / "k.pem").exists()


# ---------------------------------------------------------------- reading key files back


def test_load_certificates_pem_bundle_and_der(identities, tmp_path: Path) -> None:
    certs = [identities[kt][1] for kt in ("p256", "rsa2048")]
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    assert keyfiles.load_certificates(bundle) == certs
    der = tmp_path / "one.der"
    der.write_bytes(certs[0].public_bytes(serialization.Encoding.DER))
    assert keyfiles.load_certificates(der) == certs[:1]


def test_load_certificates_errors_name_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_bytes(b"not a certificate")
    with pytest.raises(errors.ConfigError, match="junk.crt"):
        keyfiles.load_certificates(junk)
    with pytest.raises(errors.ConfigError, match="missing.crt: no such file"):
        keyfiles.load_certificates(tmp_path / "missing.crt")
    with pytest.raises(errors.ConfigError, match="is a directory"):
        keyfiles.load_certificates(tmp_path)


def test_load_encrypted_key(identity_files, identities, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_path, _ = identity_files["p384"]
    expected = identities["p384"][0].private_numbers()
    with pytest.raises(errors.ConfigError, match="is encrypted") as info:
        keyfiles.load_private_key(key_path)
    assert str(key_path) in str(info.value)
    assert keyfiles.load_private_key(key_path, passphrase=PASSPHRASE.encode()).private_numbers() == expected

    password_file = tmp_path / "pass"
    password_file.write_text(PASSPHRASE + "\n")
    password_file.chmod(0o600)
    assert keyfiles.load_private_key(key_path, password_file=password_file).private_numbers() == expected

    monkeypatch.setenv(keyfiles.PASSPHRASE_ENV, PASSPHRASE)
    assert keyfiles.load_private_key(key_path).private_numbers() == expected

    monkeypatch.setenv(keyfiles.PASSPHRASE_ENV, "wrong passphrase 123")
    with pytest.raises(errors.ConfigError, match="wrong passphrase") as info:
        keyfiles.load_private_key(key_path)
    assert "wrong passphrase 123" not in str(info.value)


def test_load_der_key(identities, tmp_path: Path) -> None:
    key = identities["rsa2048"][0]
    path = tmp_path / "k.der"
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(der)
    assert keyfiles.load_private_key(path).private_numbers() == key.private_numbers()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_readable_by_others_is_refused(identity_files, tmp_path: Path, mode: int) -> None:
    src, _ = identity_files["p256"]
    path = tmp_path / "loose.key"
    shutil.copyfile(src, path)
    path.chmod(mode)
    with pytest.raises(errors.ConfigError, match=f"chmod 600 {path}"):
        keyfiles.load_private_key(path, passphrase=PASSPHRASE.encode())


def test_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_text("secret\n")
    path.chmod(0o644)
    with pytest.raises(errors.ConfigError, match="chmod 600"):
        keyfiles.passphrase_from(path, "UNUSED_VARIABLE")
    path.chmod(0o600)
    assert keyfiles.passphrase_from(path, "UNUSED_VARIABLE") == b"secret"
    path.write_text("\n")
    with pytest.raises(errors.ConfigError, match="empty"):
        keyfiles.passphrase_from(path, "UNUSED_VARIABLE")


def test_key_pair_must_match(identity_files, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keyfiles.PASSPHRASE_ENV, PASSPHRASE)
    key_path, _ = identity_files["p256"]
    _, other_cert = identity_files["p384"]
    with pytest.raises(errors.ConfigError, match="no certificate for the key"):
        keyfiles.load_key_pair(key_path, other_cert)


def test_key_pair_from_bundle_picks_the_matching_certificate(
    identity_files, identities, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(keyfiles.PASSPHRASE_ENV, PASSPHRASE)
    key_path, _ = identity_files["p256"]
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(identity_files[kt][1].read_bytes() for kt in ("p384", "p256")))
    assert keyfiles.load_key_pair(key_path, bundle).certificate == identities["p256"][1]


def test_certificates_for_an_address(identities) -> None:
    _, named = keygen.generate_identity("Dora.X@Example.org", key_type="p256")
    key = identities["p256"][0]
    legacy_name = x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "old@example.net")])
    legacy = (
        x509.CertificateBuilder().subject_name(legacy_name).issuer_name(legacy_name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certs = [named, legacy]
    assert certificate_addresses(named) == ["Dora.X@example.org"]
    assert certificate_addresses(legacy) == ["old@example.net"]
    # RFC 5280 §7.5: domains compare case-insensitively, local parts exactly.
    assert keyfiles.certificates_for("Dora.X@EXAMPLE.ORG", certs) == [named]
    assert keyfiles.certificates_for("dora.x@example.org", certs) == []
    assert keyfiles.certificates_for("old@Example.NET", certs) == [legacy]
    assert keyfiles.certificates_for("nobody@example.org", certs) == []


def _p12(identities, kt: str, password: bytes | None) -> bytes:
    key, cert = identities[kt]
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return pkcs12.serialize_key_and_certificates(b"test", key, cert, None, enc)


def test_load_pkcs12_password_sources(identities, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "id.p12"
    path.write_bytes(_p12(identities, "rsa2048", b"p12-secret"))
    with pytest.raises(errors.ConfigError, match="needs a password"):
        keyfiles.load_pkcs12(path)  # pytest's stdin is not a terminal: no prompt
    password_file = tmp_path / "pw"
    password_file.write_bytes(b"p12-secret\r\n")
    password_file.chmod(0o600)
    pair = keyfiles.load_pkcs12(path, password_file=password_file)
    assert pair.certificate == identities["rsa2048"][1]
    monkeypatch.setenv(keyfiles.P12_PASSWORD_ENV, "p12-secret")
    assert keyfiles.load_pkcs12(path).certificate == identities["rsa2048"][1]
    monkeypatch.setenv(keyfiles.P12_PASSWORD_ENV, "nope-wrong")
    with pytest.raises(errors.ConfigError, match="wrong password") as info:
        keyfiles.load_pkcs12(path)
    assert "nope-wrong" not in str(info.value) and "id.p12" in str(info.value)


def test_load_pkcs12_without_password_and_from_openssl(identities, identity_files, tmp_path: Path) -> None:
    path = tmp_path / "open.p12"
    path.write_bytes(_p12(identities, "p256", None))
    assert keyfiles.load_pkcs12(path).certificate == identities["p256"][1]

    key_path, cert_path = identity_files["p384"]
    made = tmp_path / "openssl.p12"
    env = clean_env(KEYPASS=PASSPHRASE, OUTPASS="from-openssl")
    openssl("pkcs12", "-export", "-inkey", str(key_path), "-in", str(cert_path), "-passin", "env:KEYPASS",
            "-passout", "env:OUTPASS", "-out", str(made), env=env)
    password_file = tmp_path / "pw"
    password_file.write_text("from-openssl")
    password_file.chmod(0o600)
    assert keyfiles.load_pkcs12(made, password_file=password_file).certificate == identities["p384"][1]

    junk = tmp_path / "junk.p12"
    junk.write_bytes(b"\x30\x03\x02\x01\x03")
    with pytest.raises(errors.ConfigError, match="junk.p12"):
        keyfiles.load_pkcs12(junk, password_file=password_file)


# ---------------------------------------------------------------- mailcrypt keys generate


def _listing(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()}


def test_cli_generate_with_passphrase_from_env(tmp_path: Path) -> None:
    proc = mailcrypt("keys", "generate", "Alice@Example.ORG", "--key-type", "p256", "--days", "30", "-o", ".",
                     cwd=tmp_path, env=clean_env(MAILCRYPT_PASSPHRASE=PASSPHRASE))
    assert proc.returncode == 0, proc.stderr
    assert _listing(tmp_path) == {"Alice@example.org.key": 0o600, "Alice@example.org.crt": 0o644}
    assert b"Alice@example.org.key" in proc.stdout and b"encrypted" in proc.stdout
    for blob in (proc.stdout, proc.stderr, (tmp_path / "Alice@example.org.key").read_bytes()):
        assert PASSPHRASE.encode() not in blob
    cert = x509.load_pem_x509_certificate((tmp_path / "Alice@example.org.crt").read_bytes())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=30, hours=1)
    key = openssl("pkey", "-in", str(tmp_path / "Alice@example.org.key"), "-passin", "env:MAILCRYPT_PASSPHRASE",
                  env=clean_env(MAILCRYPT_PASSPHRASE=PASSPHRASE))
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_cli_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    out.mkdir()
    args = ("keys", "generate", "bob@example.org", "--key-type", "p256", "--no-passphrase", "-o", str(out))
    assert mailcrypt(*args, cwd=tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = mailcrypt(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("mailcrypt: error: ") and b"--force" in proc.stderr
    assert b"Traceback" not in proc.stderr and proc.stderr.count(b"\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # Only one of the two files present is enough to refuse, and nothing is written.
    (out / "bob@example.org.crt").unlink()
    assert mailcrypt(*args, cwd=tmp_path).returncode == 2
    assert sorted(os.listdir(out)) == ["bob@example.org.key"]
    proc = mailcrypt(*args, "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "bob@example.org.key").read_bytes() != before["bob@example.org.key"]
    assert _listing(out) == {"bob@example.org.key": 0o600, "bob@example.org.crt": 0o644}


def test_cli_generate_needs_a_passphrase_source(tmp_path: Path) -> None:
    proc = mailcrypt("keys", "generate", "carol@example.org", "--key-type", "p256", "-o", ".", cwd=tmp_path,
                     stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert b"--no-passphrase" in proc.stderr and b"MAILCRYPT_PASSPHRASE" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_cli_generate_passphrase_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o644)
    args = ("keys", "generate", "dave@example.org", "--key-type", "p256", "-o", ".", "--passphrase-file", str(secret))
    proc = mailcrypt(*args, cwd=tmp_path)
    assert proc.returncode == 2 and f"chmod 600 {secret}".encode() in proc.stderr
    secret.chmod(0o600)
    proc = mailcrypt(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert PASSPHRASE.encode() not in proc.stdout + proc.stderr
    key = keyfiles.load_private_key(tmp_path / "dave@example.org.key", password_file=secret)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    # --no-passphrase and a passphrase file contradict each other.
    proc = mailcrypt(*args, "--no-passphrase", "--force", cwd=tmp_path)
    assert proc.returncode == 2


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "generate", "not-an-address", "--no-passphrase"),
        ("keys", "generate", "e@example.org", "--no-passphrase", "--days", "0"),
        ("keys", "generate", "e@example.org", "--no-passphrase", "--days", "soon"),
        ("keys", "generate", "e@example.org", "--no-passphrase", "--key-type", "ed25519"),
        ("keys", "generate", "e@example.org", "--no-passphrase", "-o", "no/such/dir"),
        # There is deliberately no way to put a passphrase in argv.
        ("keys", "generate", "e@example.org", "--passphrase", PASSPHRASE),
        ("keys",),
    ],
)
def test_cli_generate_usage_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = mailcrypt(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


def test_cli_generate_prompts_on_a_terminal(tmp_path: Path) -> None:
    """With a terminal on stdin and no other source, the passphrase is asked for twice."""
    master, slave = pty.openpty()
    # A new session has no controlling terminal, so getpass uses the pty on
    # stdin instead of whatever terminal runs the tests.
    proc = subprocess.Popen(
        [*MAILCRYPT, "keys", "generate", "erin@example.org", "--key-type", "p256", "-o", "."],
        cwd=tmp_path, env=clean_env(), stdin=slave, stdout=subprocess.PIPE, stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        transcript = _answer(master, [(b"Passphrase for the new key: ", PASSPHRASE),
                                      (b"Same passphrase again: ", PASSPHRASE)])
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0, transcript
    assert PASSPHRASE.encode() not in transcript + stdout  # no echo
    password_file = tmp_path / "pw"
    password_file.write_text(PASSPHRASE)
    password_file.chmod(0o600)
    keyfiles.load_private_key(tmp_path / "erin@example.org.key", password_file=password_file)


def _answer(master: int, dialogue: list[tuple[bytes, str]]) -> bytes:
    """Wait for each prompt on the pty and type the answer; return all that was shown."""
    seen = b""
    for prompt, answer in dialogue:
        deadline = time.monotonic() + 30
        while prompt not in seen:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    seen += os.read(master, 1024)
                except OSError:
                    break
        seen = seen.replace(prompt, b"<prompt>", 1)
        os.write(master, answer.encode() + b"\n")
    return seen


@pytest.mark.parametrize("damage", ["dmp1", "dmq1", "iqmp", "d", "e"])
def test_a_damaged_rsa_key_is_refused(identities, tmp_path: Path, damage: str) -> None:
    # Keys load without OpenSSL's primality test (keyfiles.private_key_from);
    # the consistency of the numbers is still checked, so a damaged file is a
    # ConfigError and never a key that computes wrong results.
    key, _ = identities["rsa3072"]
    n = key.private_numbers()
    values = {"p": n.p, "q": n.q, "d": n.d, "dmp1": n.dmp1, "dmq1": n.dmq1, "iqmp": n.iqmp}
    public = n.public_numbers
    if damage == "e":
        public = rsa.RSAPublicNumbers(65539, public.n)
    else:
        values[damage] += 2
    numbers = rsa.RSAPrivateNumbers(**values, public_numbers=public)
    bad = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    path = tmp_path / "damaged.pem"
    keygen.write_private_key(path, bad, passphrase=None)
    with pytest.raises(errors.ConfigError, match="damaged"):
        keyfiles.load_private_key(path)
    good = tmp_path / "good.pem"
    keygen.write_private_key(good, key, passphrase=None)
    assert keyfiles.load_private_key(good).private_numbers() == n

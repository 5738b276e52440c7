"""Shared fixtures: a throwaway CA and recipient keys, made once per session.

Every key here is generated when the test session starts and is thrown away
when it ends; none is ever committed (STYLE.md §6). Key generation is
session-scoped so it does not dominate test time: RSA-4096 alone takes about
a second. Each recipient is also written as PEM files into a session
temporary directory, so ``openssl cms`` can use the same keys.
"""

from __future__ import annotations

import datetime
import os
import secrets
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import settings as hypothesis_settings

from mailcrypt.envelope import Identity, identity_from_key

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# ------------------------------------------------------------------ hypothesis: reproducible, and random in CI

# The property tests (test_bad_input.py) run derandomised by default: the same
# examples every run, so a failure is the same on every machine. .ci/run runs them
# once more with MAILCRYPT_HYPOTHESIS=random, new examples each time, under a seed
# printed at the start and the end of the run (pytest_report_header,
# pytest_terminal_summary) so that a failure can be run again with
# --hypothesis-seed. Settings objects made at import take their defaults from
# the profile loaded here, before any test module is imported.
HYPOTHESIS_ENV = "MAILCRYPT_HYPOTHESIS"
hypothesis_settings.register_profile("derandomized", derandomize=True, database=None)
hypothesis_settings.register_profile("random", derandomize=False, database=None, print_blob=True)
_HYPOTHESIS_PROFILE = os.environ.get(HYPOTHESIS_ENV) or "derandomized"
if _HYPOTHESIS_PROFILE not in ("derandomized", "random"):
    raise pytest.UsageError(f"{HYPOTHESIS_ENV}={_HYPOTHESIS_PROFILE!r}: use derandomized (the default) or random")
hypothesis_settings.load_profile(_HYPOTHESIS_PROFILE)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """In the random profile, pick the run's seed unless --hypothesis-seed names one.

    It runs before hypothesis' own pytest_configure, which reads the option
    and seeds every property test with it.
    """
    if _HYPOTHESIS_PROFILE == "random" and config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(secrets.randbits(32))


def _hypothesis_line(config: pytest.Config) -> str:
    seed = config.getoption("hypothesis_seed", None)
    if _HYPOTHESIS_PROFILE != "random":
        return f"hypothesis: profile derandomized (set {HYPOTHESIS_ENV}=random for new examples)"
    return (
        f"hypothesis: profile random, seed {seed} "
        f"(again: {HYPOTHESIS_ENV}=random pytest --hypothesis-seed={seed} ...)"
    )


def pytest_report_header(config: pytest.Config) -> str:
    return _hypothesis_line(config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if _HYPOTHESIS_PROFILE == "random":
        terminalreporter.write_line(_hypothesis_line(config))

_NOW = datetime.datetime.now(datetime.UTC)
_NOT_BEFORE = _NOW - datetime.timedelta(days=1)
_NOT_AFTER = _NOW + datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertificateAuthority:
    """The session's certificate authority."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_path: Path


@dataclass(frozen=True)
class KeyPair:
    """One recipient: private key, certificate, their PEM files and the Identity."""

    name: str
    email: str
    key: PrivateKey
    cert: x509.Certificate
    key_path: Path
    cert_path: Path
    identity: Identity

    @property
    def is_rsa(self) -> bool:
        return isinstance(self.key, rsa.RSAPrivateKey)


def _name(common_name: str, email: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailcrypt test"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


def _write_pem(directory: Path, stem: str, key: PrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    key_path = directory / f"{stem}.key.pem"
    cert_path = directory / f"{stem}.cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture(autouse=True)
def _no_real_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test, and every process it starts, away from the user's real mailcrypt home.

    The default home is $XDG_CONFIG_HOME/mailcrypt; it points into the test's
    temporary tree, where it does not exist unless a test creates it. Tests
    that want a home pass --home or MAILCRYPT_HOME themselves.
    """
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg-config"))
    monkeypatch.delenv("MAILCRYPT_HOME", raising=False)


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session directory holding the PEM files of the CA and every recipient."""
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="session")
def test_ca(pki_dir: Path) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("mailcrypt throwaway test CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = pki_dir / "ca.cert.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(key, cert, cert_path)


def _key_usage(*, encipherment: bool, agreement: bool, signature: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature,
        content_commitment=False,
        key_encipherment=encipherment,
        data_encipherment=False,
        key_agreement=agreement,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


MakeKeyPair = Callable[..., KeyPair]


@pytest.fixture(scope="session")
def make_keypair(test_ca: CertificateAuthority, pki_dir: Path) -> MakeKeyPair:
    """Factory for recipients signed by the session CA.

    ``make_keypair(name, key)`` gives the usual S/MIME certificate (e-mail
    SAN, keyUsage keyEncipherment for RSA or keyAgreement for EC, EKU
    emailProtection, SKI). ``key_usage`` overrides the keyUsage extension
    (``"signing"``: digitalSignature only, a signer's certificate; ``None``
    leaves it out); ``ski=False`` leaves out the SKI and
    ``ski=b"..."`` writes that value instead of the RFC 5280 method-1 hash.
    """
    made: set[str] = set()

    def make(
        name: str, key: PrivateKey, *, key_usage: x509.KeyUsage | None | str = "default", ski: bool | bytes = True
    ) -> KeyPair:
        if name in made:
            raise ValueError(f"key pair {name!r} made twice")
        made.add(name)
        email = f"{name}@example.test"
        public = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name, email))
            .issuer_name(test_ca.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOT_BEFORE)
            .not_valid_after(_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(test_ca.key.public_key()), critical=False
            )
        )
        if key_usage == "default":
            is_rsa = isinstance(key, rsa.RSAPrivateKey)
            key_usage = _key_usage(encipherment=is_rsa, agreement=not is_rsa)
        elif key_usage == "signing":
            key_usage = _key_usage(encipherment=False, agreement=False, signature=True)
        if key_usage is not None:
            builder = builder.add_extension(key_usage, critical=True)
        if isinstance(ski, bytes):
            builder = builder.add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
        elif ski:
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        cert = builder.sign(test_ca.key, hashes.SHA256())
        key_path, cert_path = _write_pem(pki_dir, name, key, cert)
        return KeyPair(name, email, key, cert, key_path, cert_path, identity_from_key(key, cert))

    return make


def _rsa(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@pytest.fixture(scope="session")
def rsa2048(make_keypair: MakeKeyPair) -> KeyPair:
    return make_keypair("rsa2048", _rsa(2048))


@pytest.fixture(scope="session")
def rsa3072(make_keypair: MakeKeyPair) -> KeyPair:
    return make_keypair("rsa3072", _rsa(3072))


@pytest.fixture(scope="session")
def rsa4096(make_keypair: MakeKeyPair) -> KeyPair:
    return make_keypair("rsa4096", _rsa(4096))


@pytest.fixture(scope="session")
def ec_p256(make_keypair: MakeKeyPair) -> KeyPair:
    return make_keypair("ec-p256", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="session")
def ec_p384(make_keypair: MakeKeyPair) -> KeyPair:
    return make_keypair("ec-p384", ec.generate_private_key(ec.SECP384R1()))


KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "ec_p256", "ec_p384")


@pytest.fixture(scope="session")
def keypairs(
    rsa2048: KeyPair, rsa3072: KeyPair, rsa4096: KeyPair, ec_p256: KeyPair, ec_p384: KeyPair
) -> dict[str, KeyPair]:
    """Every standard recipient by fixture name (see ``KEY_TYPES``)."""
    return {"rsa2048": rsa2048, "rsa3072": rsa3072, "rsa4096": rsa4096, "ec_p256": ec_p256, "ec_p384": ec_p384}


@pytest.fixture(scope="session")
def many_recipients(make_keypair: MakeKeyPair) -> Sequence[KeyPair]:
    """25 recipients for one message: RSA-2048, with every fifth one EC P-256."""
    out = []
    for i in range(25):
        if i % 5 == 3:
            out.append(make_keypair(f"many{i:02d}-ec", ec.generate_private_key(ec.SECP256R1())))
        else:
            out.append(make_keypair(f"many{i:02d}-rsa", _rsa(2048)))
    return tuple(out)


@pytest.fixture(scope="session")
def openssl() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run ``openssl`` with arguments; fail the test with its stderr on error.

    OpenSSL 3 is on every machine (STYLE.md §6): a missing binary is a
    failure, never a skip.
    """

    def run(*args: str | Path, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, timeout=120)
        if check and proc.returncode != 0:
            command = " ".join(map(str, args))
            pytest.fail(f"openssl {command} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
        return proc

    return run


# ------------------------------------------------------------------ Dovecot (the fetcher's IMAP peer)


@pytest.fixture(scope="session")
def dovecot():  # type: ignore[no-untyped-def]
    """A private Dovecot on loopback for the session (``tests/dovecot.py``).

    Without Dovecot installed the IMAP tests skip with a reason on a
    developer's machine; under CI (``CI`` set) that is a failure, never a
    skip (STYLE.md §6): ``.ci/run`` installs dovecot-imapd.
    """
    import os

    from dovecot import find_dovecot, start_dovecot

    binary = find_dovecot()
    if binary is None:
        reason = "dovecot is not installed (Debian: apt-get install dovecot-imapd)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it (.ci/run installs it)")
        pytest.skip(reason)
    server = start_dovecot(binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def imap_user(dovecot):  # type: ignore[no-untyped-def]
    """A fresh user with an empty mailbox on the session's Dovecot."""
    return dovecot.add_user()


# ------------------------------------------------------------------ CI: no silent skips


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI (``CI`` set, as ``.ci/run`` does), a skipped test fails the run.

    Every component a test needs (Dovecot, openssl, the corpus, the PKITS
    data) is installed by ``.ci/run``, so a skip there means a missing install
    step or a guard that forgot to fail: the run must not look green.
    """
    import os

    if not os.environ.get("CI") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        names = ", ".join(report.nodeid for report in skipped[:10])
        reporter.write_line(f"CI is set and {len(skipped)} test(s) were skipped: {names}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

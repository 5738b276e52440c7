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
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
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


# The nine keyUsage bits in the order of RFC 5280 §4.2.1.3.
_KEY_USAGE_BITS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def key_usage(*bits: str) -> x509.KeyUsage:
    """A keyUsage extension with the named bits set and every other one clear (RFC 5280 §4.2.1.3)."""
    unknown = set(bits) - set(_KEY_USAGE_BITS)
    if unknown:
        raise ValueError(f"no such keyUsage bit: {sorted(unknown)}")
    return x509.KeyUsage(**{bit: bit in bits for bit in _KEY_USAGE_BITS})


def certificate(
    subject: x509.Name,
    key: CertificateIssuerPrivateKeyTypes,
    *,
    issuer: x509.Name | None = None,
    issuer_key: CertificateIssuerPrivateKeyTypes | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    serial: int | None = None,
    not_before: datetime.datetime = _NOT_BEFORE,
    not_after: datetime.datetime = _NOT_AFTER,
) -> x509.Certificate:
    """A certificate for ``key``'s public half, signed with SHA-256.

    Without ``issuer`` and ``issuer_key`` it is self-signed. ``extensions`` are
    (extension, critical) pairs, written in that order; ``serial`` defaults to
    a random one, the validity to the session CA's.
    """
    if (issuer is None) != (issuer_key is None):
        raise ValueError("give both issuer and issuer_key, or neither for a self-signed certificate")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key if issuer_key is None else issuer_key, hashes.SHA256())


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
    extensions = [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (key_usage("key_cert_sign", "crl_sign"), True),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
    ]
    cert = certificate(name, key, extensions=extensions)
    cert_path = pki_dir / "ca.cert.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(key, cert, cert_path)


#: The keyUsage of the usual recipient: an RSA key transports the content key, an EC key agrees on one;
#: and of a signer's certificate.
KEY_USAGE = {
    "rsa": key_usage("key_encipherment"),
    "ec": key_usage("key_agreement"),
    "signing": key_usage("digital_signature"),
}

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
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.SubjectAlternativeName([x509.RFC822Name(email)]), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(test_ca.key.public_key()), False),
        ]
        if key_usage == "default":
            key_usage = KEY_USAGE["rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"]
        elif key_usage == "signing":
            key_usage = KEY_USAGE["signing"]
        if key_usage is not None:
            extensions.append((key_usage, True))
        if isinstance(ski, bytes):
            extensions.append((x509.SubjectKeyIdentifier(ski), False))
        elif ski:
            extensions.append((x509.SubjectKeyIdentifier.from_public_key(public), False))
        cert = certificate(
            _name(name, email), key, issuer=test_ca.cert.subject, issuer_key=test_ca.key, extensions=extensions
        )
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

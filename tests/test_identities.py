"""Our own identities: PKCS#12 import (openssl, modern and -legacy), keys at rest, renewal, passphrases.

Messages are encrypted by ``openssl cms`` to the imported certificates and
opened with what ``KeyDirectory.identities`` returns, so an identity counts as
imported only once it really decrypts. A distinctive passphrase and PKCS#12
password are used throughout and looked for in every log record and error.
"""

from __future__ import annotations

import datetime
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from openssl_pki import PKI, Made, openssl

from mailcrypt import config, errors
from mailcrypt.envelope import decrypt
from mailcrypt.keydir import KeyDirectory, init_home, keygen
from mailcrypt.keydir.passphrase import PASSPHRASE_ENV, PassphraseSource
from mailcrypt.pki import certificate_addresses, validate

PASSPHRASE = "Zebra-Passphrase-7c1e9f-Never-Shown"
P12_PASSWORD = "Quokka-P12-Password-4b2d8a-Never-Shown"
MESSAGE = b"Content-Type: text/plain\r\n\r\nfor your eyes only\r\n"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.setenv("MAILCRYPT_P12_PASSWORD", P12_PASSWORD)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("openssl-identities"))


@pytest.fixture(scope="module")
def root(pki: PKI) -> Made:
    return pki.root("Identity Root")


@pytest.fixture(scope="module")
def made(pki: PKI, root: Made) -> dict[str, Made]:
    return {
        "rsa": pki.issue("me-rsa", ca=root, key="rsa2048", emails=("me@example.org",)),
        "ec": pki.issue("me-ec", ca=root, key="p256", emails=("me@example.org",)),
        "p384": pki.issue("me-p384", ca=root, key="p384", emails=("me@example.org",)),
        "expired": pki.issue(
            "me-expired", ca=root, emails=("me@example.org",), start="20200101000000Z", end="20210101000000Z"
        ),
        "rsa1024": pki.issue("me-rsa1024", ca=root, key="rsa1024", emails=("me@example.org",)),
    }


@pytest.fixture
def kd(tmp_path: Path) -> KeyDirectory:
    return KeyDirectory(tmp_path / "keys")


def cms_encrypt(cert: Path, tmp_path: Path) -> bytes:
    """A DER EnvelopedData made by openssl cms for ``cert``."""
    plain = tmp_path / "plain.txt"
    plain.write_bytes(MESSAGE)
    return openssl("cms", "-encrypt", "-binary", "-aes256", "-in", plain, "-outform", "DER", cert)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- PKCS#12 import


@pytest.mark.parametrize("legacy", [False, True], ids=["modern", "legacy"])
@pytest.mark.parametrize("kind", ["rsa", "ec", "p384"])
def test_pkcs12_from_openssl_imports_and_decrypts(
    kd: KeyDirectory, pki: PKI, made: dict[str, Made], tmp_path: Path, kind: str, legacy: bool
) -> None:
    p12 = pki.pkcs12(made[kind], P12_PASSWORD, legacy=legacy)
    info = pki.pkcs12_info(p12, P12_PASSWORD)
    assert ("pbeWithSHA1And40BitRC2-CBC" in info) if legacy else ("AES-256-CBC" in info)
    result = kd.import_file(p12, passphrase=PassphraseSource())
    (entry,) = result.imported
    assert entry.kind == "identity" and entry.addresses == ("me@example.org",)
    key_file = kd.path / "identities" / f"{entry.fingerprint}.key"
    assert mode(key_file) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    # The stored key is ordinary encrypted PKCS#8: openssl opens it with the passphrase.
    assert b"BEGIN PRIVATE KEY" in openssl("pkey", "-in", key_file, "-passin", f"env:{PASSPHRASE_ENV}")
    identities = kd.identities(PassphraseSource())
    assert [i.certificate for i in identities] == [made[kind].certificate]
    assert decrypt(cms_encrypt(made[kind].cert, tmp_path), identities).content == MESSAGE


def test_pkcs12_with_chain_and_password_file(
    kd: KeyDirectory, pki: PKI, made: dict[str, Made], root: Made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILCRYPT_P12_PASSWORD")
    p12 = pki.pkcs12(made["rsa"], P12_PASSWORD, legacy=True, chain=root)
    password_file = tmp_path / "p12.pass"
    password_file.write_text(P12_PASSWORD + "\n")
    password_file.chmod(0o600)
    (entry,) = kd.import_file(p12, passphrase=PassphraseSource(), password_file=password_file).imported
    assert entry.fingerprint == validate.fingerprint(made["rsa"].certificate)


def test_wrong_pkcs12_password(kd: KeyDirectory, pki: PKI, made: dict[str, Made], monkeypatch) -> None:
    p12 = pki.pkcs12(made["ec"], P12_PASSWORD)
    monkeypatch.setenv("MAILCRYPT_P12_PASSWORD", "not-the-password")
    with pytest.raises(errors.ConfigError, match="wrong password, or not a PKCS#12 file"):
        kd.import_file(p12, passphrase=PassphraseSource())
    assert kd.list() == []


def test_expired_pkcs12_is_kept_to_read_old_mail(
    kd: KeyDirectory, pki: PKI, made: dict[str, Made], tmp_path: Path
) -> None:
    result = kd.import_file(pki.pkcs12(made["expired"], P12_PASSWORD), passphrase=PassphraseSource())
    (note,) = result.notes
    assert "expired on 2021-01-01 00:00 UTC: kept to decrypt mail, not used for new mail" in note
    assert kd.sender_certificate("me@example.org") is None
    identities = kd.identities(PassphraseSource())
    assert decrypt(cms_encrypt(made["expired"].cert, tmp_path), identities).content == MESSAGE


def test_small_rsa_pkcs12_is_refused(kd: KeyDirectory, pki: PKI, made: dict[str, Made]) -> None:
    with pytest.raises(errors.InvalidRecipient, match="RSA key of 1024 bits; at least 2048 bits are required"):
        kd.import_file(pki.pkcs12(made["rsa1024"], P12_PASSWORD), passphrase=PassphraseSource())
    assert list((kd.path / "identities").iterdir()) == []


def test_importing_the_same_pkcs12_twice(kd: KeyDirectory, pki: PKI, made: dict[str, Made]) -> None:
    p12 = pki.pkcs12(made["ec"], P12_PASSWORD)
    kd.import_file(p12, passphrase=PassphraseSource())
    again = kd.import_file(p12, passphrase=PassphraseSource())
    assert again.imported == () and len(again.unchanged) == 1


def test_own_certificate_imported_as_recipient_then_identity(kd: KeyDirectory, pki: PKI, made: dict[str, Made]) -> None:
    kd.import_file(made["ec"].cert)
    kd.import_file(pki.pkcs12(made["ec"], P12_PASSWORD), passphrase=PassphraseSource())
    assert [e.kind for e in kd.list()] == ["identity"]
    assert not any((kd.path / "certs").iterdir())


# ---------------------------------------------------------------- keys at rest


def test_group_readable_key_is_refused(kd: KeyDirectory) -> None:
    key, cert = keygen.generate_identity("me@example.org", key_type="p256")
    entry = kd.add_identity(key, cert, passphrase=PassphraseSource())
    key_file = kd.path / "identities" / f"{entry.fingerprint}.key"
    assert mode(key_file) == 0o600
    key_file.chmod(0o644)
    with pytest.raises(errors.ConfigError) as info:
        kd.identities(PassphraseSource())
    assert str(info.value) == (
        f"private key {key_file} is readable by other users (mode 0644); expected mode 0600: run chmod 600 {key_file}"
    )


def test_no_passphrase_source(kd: KeyDirectory, monkeypatch: pytest.MonkeyPatch) -> None:
    key, cert = keygen.generate_identity("me@example.org", key_type="p256")
    kd.add_identity(key, cert, passphrase=PassphraseSource())
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(errors.ConfigError) as info:
        kd.identities(PassphraseSource(interactive=False))
    assert "is encrypted and needs a passphrase: set MAILCRYPT_PASSPHRASE" in str(info.value)
    with pytest.raises(errors.ConfigError, match="needs a passphrase to be stored encrypted"):
        kd.add_identity(
            *keygen.generate_identity("me@example.org", key_type="p256"), passphrase=PassphraseSource(interactive=False)
        )


def test_wrong_passphrase(kd: KeyDirectory, monkeypatch: pytest.MonkeyPatch) -> None:
    kd.add_identity(*keygen.generate_identity("me@example.org", key_type="p256"), passphrase=PassphraseSource())
    monkeypatch.setenv(PASSPHRASE_ENV, "a different passphrase")
    with pytest.raises(errors.ConfigError, match="wrong passphrase, or the key is damaged"):
        kd.identities(PassphraseSource())


def test_passphrase_file_from_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV)
    home = tmp_path / "home"
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    init_home(home, "me@example.org", key_type="p256", passphrase=PassphraseSource(file=secret), passphrase_file=secret)
    settings = config.load_settings(home)
    assert settings.keys.passphrase_file == secret
    kd = KeyDirectory.from_settings(settings)
    assert len(kd.identities(PassphraseSource.from_settings(settings, interactive=False))) == 1
    secret.chmod(0o640)
    with pytest.raises(errors.ConfigError) as info:
        PassphraseSource.from_settings(settings).get("a key")
    assert f"{home / 'config.toml'}: keys.passphrase_file" in str(info.value)
    assert "readable by other users (mode 0640)" in str(info.value)


def test_prompt_only_on_a_terminal(kd: KeyDirectory, monkeypatch: pytest.MonkeyPatch) -> None:
    kd.add_identity(*keygen.generate_identity("me@example.org", key_type="p256"), passphrase=PassphraseSource())
    monkeypatch.delenv(PASSPHRASE_ENV)
    asked: list[str] = []

    def fake_terminal(prompt: str) -> str:
        asked.append(prompt)
        return PASSPHRASE

    identities = kd.identities(PassphraseSource(interactive=True, prompt=fake_terminal))
    assert len(identities) == 1 and len(asked) == 1 and asked[0].startswith("Passphrase for the private key of me@")


# ---------------------------------------------------------------- renewal and init


def test_old_identities_stay_after_renewal(kd: KeyDirectory, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    old_key, old_cert = keygen.generate_identity(
        "me@example.org", key_type="rsa2048", now=now - datetime.timedelta(days=400), days=365
    )
    kd.add_identity(old_key, old_cert, passphrase=PassphraseSource())
    new_key, new_cert = keygen.generate_identity("me@example.org", key_type="p256", now=now)
    kd.add_identity(new_key, new_cert, passphrase=PassphraseSource())
    identities = kd.identities(PassphraseSource())
    assert [i.certificate for i in identities] == [new_cert, old_cert]  # newest first
    assert kd.sender_certificate("me@example.org") == new_cert
    # Mail encrypted to the old (now expired) certificate still opens.
    old_pem = tmp_path / "old.pem"
    old_pem.write_bytes(kd.export(validate.fingerprint(old_cert)))
    opened = decrypt(cms_encrypt(old_pem, tmp_path), identities)
    assert opened.content == MESSAGE and opened.info.identity.certificate == old_cert
    # Identities are not removed by address, only deliberately by fingerprint.
    with pytest.raises(errors.UsageError, match="kept so old mail stays readable"):
        kd.remove("me@example.org")
    (gone,) = kd.remove(validate.fingerprint(old_cert)[:16])
    assert gone.kind == "identity"
    assert not (kd.path / "identities" / f"{gone.fingerprint}.key").exists()
    assert [i.certificate for i in kd.identities(PassphraseSource())] == [new_cert]


def test_init_creates_a_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = init_home(home, "Me@Example.ORG", key_type="p256", passphrase=PassphraseSource())
    assert result.encrypted and result.config_file == home / "config.toml"
    assert result.identity.addresses == ("Me@example.org",)
    settings = config.load_settings(home)
    assert settings.identity.address == "Me@example.org"
    assert mode(home) == 0o700 and mode(home / "keys") == 0o700
    kd = KeyDirectory.from_settings(settings)
    (identity,) = kd.identities(PassphraseSource())
    assert certificate_addresses(identity.certificate) == ["Me@example.org"]
    for path in (home / "keys" / "identities").glob("*.key"):
        assert mode(path) == 0o600 and path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(errors.ConfigError, match="already exists: this home is already set up"):
        init_home(home, "me@example.org", passphrase=PassphraseSource())


def test_init_without_passphrase_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV)
    home = tmp_path / "home"
    with caplog.at_level(logging.WARNING):
        result = init_home(home, "robot@example.org", key_type="p256", passphrase=PassphraseSource.unencrypted())
    assert not result.encrypted
    assert any("WITHOUT a passphrase" in r.getMessage() for r in caplog.records)
    (key_file,) = (home / "keys" / "identities").glob("*.key")
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----") and mode(key_file) == 0o600
    # Unattended: decrypting needs no passphrase at all.
    assert (
        len(KeyDirectory.from_settings(config.load_settings(home)).identities(PassphraseSource(interactive=False))) == 1
    )


def test_init_refuses_bad_input_and_leaves_no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.UsageError, match="not an e-mail address"):
        init_home(tmp_path / "a", "nobody", passphrase=PassphraseSource())
    with pytest.raises(errors.UsageError, match="unknown key type"):
        init_home(tmp_path / "b", "me@example.org", key_type="rsa512", passphrase=PassphraseSource())
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(errors.ConfigError, match="needs a passphrase"):
        init_home(tmp_path / "c", "me@example.org", passphrase=PassphraseSource(interactive=False))
    assert not any(p.name == "config.toml" for p in tmp_path.rglob("*"))


# ---------------------------------------------------------------- secrets never leak


def test_passphrase_and_password_never_appear_in_errors_or_logs(
    tmp_path: Path, pki: PKI, made: dict[str, Made], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    kd = KeyDirectory(tmp_path / "keys")

    def attempt(action) -> None:  # type: ignore[no-untyped-def]
        try:
            result = action()
            seen.append(repr(result))
        except errors.MailcryptError as exc:
            seen.extend([str(exc), repr(exc), repr(exc.__cause__), repr(exc.__context__)])

    source = PassphraseSource()
    p12 = pki.pkcs12(made["rsa"], P12_PASSWORD, legacy=True)
    attempt(lambda: kd.import_file(p12, passphrase=source))
    attempt(lambda: kd.identities(source))
    seen.append(repr(source))
    seen.append(source.describe())
    # Wrong passphrase, wrong PKCS#12 password, unreadable passphrase file, group-readable key.
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE[::-1])
    attempt(lambda: kd.identities(PassphraseSource()))
    monkeypatch.setenv("MAILCRYPT_P12_PASSWORD", P12_PASSWORD + "x")
    attempt(lambda: kd.import_file(pki.pkcs12(made["ec"], P12_PASSWORD), passphrase=PassphraseSource()))
    monkeypatch.delenv(PASSPHRASE_ENV)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    secret.chmod(0o644)
    attempt(lambda: kd.identities(PassphraseSource(file=secret)))
    secret.chmod(0o600)
    (key_file,) = (kd.path / "identities").glob("*.key")
    key_file.chmod(0o644)
    attempt(lambda: kd.identities(PassphraseSource(file=secret)))
    key_file.chmod(0o600)
    attempt(lambda: kd.identities(PassphraseSource(file=secret)))

    assert len(seen) > 10
    logged = [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    assert any("passphrase for" in m for m in logged)  # the source is logged, not the value
    for text in seen + logged:
        assert PASSPHRASE not in text and PASSPHRASE[::-1] not in text
        assert P12_PASSWORD not in text


def test_identity_certificate_file_is_plain_pem(kd: KeyDirectory) -> None:
    key, cert = keygen.generate_identity("me@example.org", key_type="p256")
    entry = kd.add_identity(key, cert, passphrase=PassphraseSource())
    crt = kd.path / "identities" / f"{entry.fingerprint}.crt"
    assert x509.load_pem_x509_certificate(crt.read_bytes()) == cert
    assert os.path.exists(crt) and mode(crt) == 0o644

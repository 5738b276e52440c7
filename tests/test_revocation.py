"""Revocation against real services on 127.0.0.1: ``openssl ocsp`` and CRLs over ``http.server``.

The CA, its certificates, revocations and CRLs are made with the ``openssl``
command (``revocation_kit``); the responder is a real ``openssl ocsp``
process. Cases: good, revoked and unknown by OCSP; good, revoked and stale
by CRL; a dead responder under soft-fail and hard-fail, and the CRL it
falls back to; a responder that is not authorised; answers kept on disk and
used once both services are gone; and the edges: ``validate_chain``,
``verify`` (exit 5), ``encrypt`` (exit 3), the proxy's 550 at RCPT, the
fetcher's status field.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openssl_pki import openssl
from proxy_kit import SENDER, make_home, start_proxy
from revocation_kit import OCSPResponder, RevocationWorld, make_world

from mailcrypt import config, errors
from mailcrypt.fetch import MessageProcessor
from mailcrypt.keydir import init_home
from mailcrypt.keydir.passphrase import PassphraseSource
from mailcrypt.pki import OnlineRevocationChecker, RevocationStatus, validate_chain
from mailcrypt.pki.ocsp import build_request, check_response
from mailcrypt.pki.online import fetch
from mailcrypt.policy import DEFAULT_POLICY
from mailcrypt.state import ReplayGuard, Store

MAILCRYPT = [sys.executable, "-m", "mailcrypt"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RevocationWorld]:
    made = make_world(tmp_path_factory.mktemp("revocation"))
    yield made
    made.stop()


def status(
    world: RevocationWorld, name: str, *, mode: str = "soft-fail", cache: Path | None = None
) -> RevocationStatus:
    checker = OnlineRevocationChecker(cache, mode=mode, timeout=3)
    return checker.status(world.certs[name].certificate, world.root.certificate, now=datetime.now(UTC))


def assert_unavailable(answer: RevocationStatus, mode: str, reason: str) -> None:
    """No answer about the certificate: it blocks under hard-fail only, and ``reason`` says why."""
    assert answer.state == "unavailable"
    assert answer.blocking is (mode == "hard-fail")
    assert reason in answer.reason


# ------------------------------------------------------------------ the checker


def test_ocsp_good(world: RevocationWorld) -> None:
    answer = status(world, "good")
    assert (answer.state, answer.blocking) == ("good", False)
    assert answer.source == f"OCSP {world.responder.url}"


def test_ocsp_revoked(world: RevocationWorld) -> None:
    answer = status(world, "revoked")
    assert (answer.state, answer.blocking) == ("revoked", True)
    assert answer.source.startswith("OCSP ") and "keyCompromise" in answer.reason


@pytest.mark.parametrize("mode", ["soft-fail", "hard-fail"])
def test_ocsp_unknown_is_unavailable(world: RevocationWorld, mode: str) -> None:
    assert_unavailable(status(world, "unknown", mode=mode), mode, "does not know the certificate")


@pytest.mark.parametrize("mode", ["soft-fail", "hard-fail"])
def test_responder_down(world: RevocationWorld, mode: str) -> None:
    started = time.monotonic()
    answer = status(world, "down", mode=mode)
    assert time.monotonic() - started < 3
    assert_unavailable(answer, mode, "unreachable")
    assert world.dead_url in answer.reason


def test_crl_good_and_revoked(world: RevocationWorld) -> None:
    good = status(world, "crl-good")
    assert (good.state, good.source) == ("good", f"CRL {world.crls.url}root.crl")
    revoked = status(world, "crl-revoked")
    assert (revoked.state, revoked.blocking) == ("revoked", True)
    assert "keyCompromise" in revoked.reason


@pytest.mark.parametrize("mode", ["soft-fail", "hard-fail"])
def test_stale_crl_answers_nothing(world: RevocationWorld, mode: str) -> None:
    reason = "stale (its nextUpdate 2020-01-02 00:00 UTC has passed)"
    assert_unavailable(status(world, "stale", mode=mode), mode, reason)


def test_dead_responder_falls_back_to_the_crl(world: RevocationWorld) -> None:
    answer = status(world, "fallback", mode="hard-fail")
    assert (answer.state, answer.source) == ("good", f"CRL {world.crls.url}root.crl")


def test_responder_without_ocsp_signing_is_not_authorised(world: RevocationWorld) -> None:
    # An end-entity certificate of the same CA signs the answers: RFC 6960 §4.2.2.2 wants id-kp-OCSPSigning.
    rogue = OCSPResponder(world.pki, world.root, world.certs["crl-good"])
    world.extra.append(rogue)
    cert, issuer = world.certs["good"].certificate, world.root.certificate
    nonce = os.urandom(16)
    der = fetch(rogue.url, body=build_request(cert, issuer, nonce), timeout=3, limit=1 << 20)
    with pytest.raises(errors.RevocationUnavailable, match="not authorised"):
        check_response(
            der, cert, issuer, nonce=nonce, now=datetime.now(UTC), policy=DEFAULT_POLICY, source=rogue.url
        )
    # The same answer is taken from the delegated responder the CA made for it.
    der = fetch(world.responder.url, body=build_request(cert, issuer, nonce), timeout=3, limit=1 << 20)
    answer = check_response(
        der, cert, issuer, nonce=nonce, now=datetime.now(UTC), policy=DEFAULT_POLICY, source=world.responder.url
    )
    assert answer.state == "good"
    # A response to another request (another nonce) is refused.
    with pytest.raises(errors.RevocationUnavailable, match="nonce"):
        check_response(
            der, cert, issuer, nonce=b"x" * 16, now=datetime.now(UTC), policy=DEFAULT_POLICY, source="r"
        )


def test_cached_answers_are_used_without_network(tmp_path: Path) -> None:
    own = make_world(tmp_path / "pki")
    cache = tmp_path / "cache"
    names = ("good", "revoked", "crl-good", "crl-revoked")
    try:
        before = {n: status(own, n, cache=cache).state for n in names}
    finally:
        own.stop()
    assert before == {"good": "good", "revoked": "revoked", "crl-good": "good", "crl-revoked": "revoked"}
    for path in cache.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    # Both services are gone: without the cache nothing can be known ...
    assert status(own, "good").state == "unavailable"
    # ... and a new checker (a new process, as far as memory goes) answers from the disk alone.
    after = {n: status(own, n, cache=cache).state for n in names}
    assert after == before


def test_validate_chain_refuses_a_revoked_path(world: RevocationWorld) -> None:
    now = datetime.now(UTC)
    anchors = [world.root.certificate]
    soft = OnlineRevocationChecker(None, mode="soft-fail")
    hard = OnlineRevocationChecker(None, mode="hard-fail")
    revoked = validate_chain(world.certs["revoked"].certificate, anchors=anchors, now=now, revocation=soft)
    assert (revoked.status, revoked.revoked) == ("invalid", True)
    assert "is revoked" in revoked.reason
    unknown = validate_chain(world.certs["unknown"].certificate, anchors=anchors, now=now, revocation=soft)
    assert unknown.status == "valid" and "not checked" in unknown.reason
    unknown = validate_chain(world.certs["unknown"].certificate, anchors=anchors, now=now, revocation=hard)
    assert (unknown.status, unknown.revoked) == ("invalid", False)
    good = validate_chain(world.certs["good"].certificate, anchors=anchors, now=now, revocation=hard)
    assert good.status == "valid"


# ------------------------------------------------------------------ configuration


def _home(directory: Path, world: RevocationWorld, revocation: str) -> Path:
    init_home(directory, SENDER, passphrase=PassphraseSource.unencrypted(), key_type="p256")
    _set(directory, world, revocation)
    return directory


def _set(home: Path, world: RevocationWorld, revocation: str) -> Path:
    text = (home / "config.toml").read_text()
    head, _, rest = text.partition("trust_anchors = ")
    rest = rest.split("\n", 1)[1]
    while rest.startswith("revocation"):
        rest = rest.split("\n", 1)[1]
    anchors = f'trust_anchors = ["{world.root.cert}"]\nrevocation = "{revocation}"\nrevocation_timeout = 2\n'
    (home / "config.toml").write_text(head + anchors + rest)
    return home


def test_configuration(tmp_path: Path, world: RevocationWorld) -> None:
    from mailcrypt.keydir import KeyDirectory

    home = _home(tmp_path / "home", world, "hard-fail")
    settings = config.load_settings(home)
    assert (settings.keys.revocation, settings.keys.revocation_timeout) == ("hard-fail", 2.0)
    checker = KeyDirectory.from_settings(settings).revocation
    assert isinstance(checker, OnlineRevocationChecker) and checker.mode == "hard-fail"
    assert KeyDirectory.from_settings(config.load_settings(_set(home, world, "off"))).revocation is None
    _set(home, world, "sometimes")
    with pytest.raises(errors.ConfigError, match="revocation"):
        config.load_settings(home)


# ------------------------------------------------------------------ the edges


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}


def _signed_by(world: RevocationWorld, name: str, directory: Path) -> Path:
    made = world.certs[name]
    body = directory / f"{name}-body.txt"
    body.write_bytes(b"Content-Type: text/plain\r\n\r\nhello from a signer\r\n")
    signed = openssl("cms", "-sign", "-signer", made.cert, "-inkey", made.key, "-in", body, "-crlfeol")
    path = directory / f"{name}.eml"
    path.write_bytes(f"From: {name}@revocation.test\r\nSubject: signed\r\n".encode() + signed)
    return path


def test_verify_exits_5_for_a_revoked_signer(tmp_path: Path, world: RevocationWorld) -> None:
    home = _home(tmp_path / "home", world, "soft-fail")
    good = subprocess.run(
        [*MAILCRYPT, "--home", str(home), "verify", str(_signed_by(world, "good", tmp_path))],
        capture_output=True, env=_env(), timeout=120,
    )
    assert good.returncode == 0, good.stderr
    assert b"certificate chain: valid" in good.stdout
    revoked = subprocess.run(
        [*MAILCRYPT, "--home", str(home), "verify", str(_signed_by(world, "crl-revoked", tmp_path))],
        capture_output=True, env=_env(), timeout=120,
    )
    assert revoked.returncode == 5, revoked.stderr
    assert b"is revoked" in revoked.stderr and b"keyCompromise" in revoked.stderr


def test_encrypt_exits_3_for_a_revoked_recipient(tmp_path: Path, world: RevocationWorld) -> None:
    # The certificate was imported before it was revoked (with revocation off); it is refused at use.
    home = _home(tmp_path / "home", world, "off")
    for name in ("good", "revoked"):
        imported = subprocess.run(
            [*MAILCRYPT, "--home", str(home), "keys", "import", str(world.certs[name].cert)],
            capture_output=True, env=_env(), timeout=120,
        )
        assert imported.returncode == 0, imported.stderr
    _set(home, world, "soft-fail")
    message = tmp_path / "message.eml"
    message.write_bytes(b"From: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
    args = [*MAILCRYPT, "--home", str(home), "encrypt", "--no-sign", str(message), "-o", str(tmp_path / "out")]
    good = subprocess.run([*args, "--to", "good@revocation.test"], capture_output=True, env=_env(), timeout=120)
    assert good.returncode == 0, good.stderr
    revoked = subprocess.run([*args, "--to", "revoked@revocation.test"], capture_output=True, env=_env(), timeout=120)
    assert revoked.returncode == 3, revoked.stderr
    assert b"is revoked" in revoked.stderr


def test_proxy_refuses_a_revoked_recipient_at_rcpt(tmp_path: Path, world: RevocationWorld) -> None:
    settings = make_home(tmp_path / "home")
    _set(settings.home, world, "off")
    from mailcrypt.keydir import KeyDirectory

    keys = KeyDirectory.from_settings(config.load_settings(settings.home))
    for name in ("good", "revoked", "unknown"):
        keys.import_file(world.certs[name].cert)
    proxy = start_proxy(config.load_settings(_set(settings.home, world, "soft-fail")))
    try:
        with proxy.client() as client:
            client.ehlo()
            assert client.mail(SENDER)[0] == 250
            code, text = client.rcpt("revoked@revocation.test")
            assert code == 550, text
            assert text.startswith(b"5.7.1") and b"is revoked" in text
            # Soft-fail: a certificate whose status nobody knows still receives mail.
            assert client.rcpt("unknown@revocation.test")[0] == 250
            assert client.rcpt("good@revocation.test")[0] == 250
            client.rset()
    finally:
        proxy.thread.stop()


def test_fetcher_marks_a_revoked_signer(tmp_path: Path, world: RevocationWorld) -> None:
    raw = _signed_by(world, "revoked", tmp_path).read_bytes()
    with Store.open(tmp_path / "state.db") as store:
        processor = MessageProcessor(
            [],
            guard=ReplayGuard(store),
            trust_anchors=[world.root.certificate],
            revocation=OnlineRevocationChecker(None),
        )
        outcome = processor.process(raw, source="test")
    head = outcome.data.split(b"\r\n\r\n", 1)[0]
    assert b"signature valid; signer revoked" in head
    assert b"is revoked" in head

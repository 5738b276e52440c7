"""``mailcrypt fetch`` against a real Dovecot: every kind of message ends up where it belongs.

One mailbox receives, by IMAP APPEND, mail encrypted by ``openssl cms``
(each content cipher, each key type, RSA PKCS#1 v1.5 and OAEP), by
mailcrypt (compatible and modern, signed inside and not), signed-only mail
(detached and opaque), plain mail and broken mail. After one fetch the
Maildir holds the right plaintext with the right status for each; the
broken ones are in Quarantine, byte for byte as the server has them under
the status fields. A second run delivers nothing new, and the server's
messages and flags are untouched.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from fetch_helpers import by_uid, lf, make_home, plain, run_cli, status, strip_status

from mailcrypt.envelope import Signer
from mailcrypt.mime import enveloped as smime
from mailcrypt.mime import signed as smime_signed
from mailcrypt.policy import COMPATIBLE, MODERN

NOW = datetime.datetime.now(datetime.UTC)


def openssl_encrypted(openssl, tmp: Path, subject: str, cipher: str, cert: Path, *keyopts: str) -> bytes:  # type: ignore[no-untyped-def]
    src = tmp / f"{subject.replace(' ', '_')}.txt"
    src.write_bytes(f"Content-Type: text/plain\r\n\r\nsecret of {subject}\r\n".encode())
    out = tmp / f"{subject.replace(' ', '_')}.p7m"
    args = [arg for opt in keyopts for arg in ("-keyopt", opt)]
    openssl(
        "cms", "-encrypt", "-in", src, "-out", out, cipher, "-recip", cert, *args,
        "-from", "sender@example.test", "-to", "me@example.test", "-subject", subject,
    )
    return out.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def stranger(make_keypair):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    return make_keypair(f"stranger-{id(object())}", ec.generate_private_key(ec.SECP256R1()))


def test_every_kind_of_message(tmp_path, imap_user, openssl, rsa2048, rsa3072, ec_p256, ec_p384, stranger) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, [rsa2048, rsa3072, ec_p256, ec_p384])
    expected: list[tuple[str, str, bytes]] = []  # (folder, status prefix, text that must be in the file)
    messages: list[bytes] = []

    def add(message: bytes, folder: str, state: str, text: bytes) -> None:
        messages.append(message)
        expected.append((folder, state, text))

    add(plain("plain one"), "", "plain", b"hello")
    for cipher in ("-aes-128-cbc", "-aes-192-cbc", "-aes-256-cbc", "-aes-128-gcm", "-aes-192-gcm", "-aes-256-gcm"):
        subject = f"openssl {cipher} rsa2048"
        add(openssl_encrypted(openssl, tmp_path, subject, cipher, rsa2048.cert_path), "", "decrypted; not signed",
            f"secret of {subject}".encode())
    for name, kp, opts in (
        ("rsa3072 oaep", rsa3072, ("rsa_padding_mode:oaep", "rsa_oaep_md:sha256")),
        ("ec-p256", ec_p256, ()),
        ("ec-p384 sha384 kdf", ec_p384, ("ecdh_kdf_md:sha384",)),
    ):
        for cipher in ("-aes-256-cbc", "-aes-256-gcm"):
            subject = f"openssl {cipher} {name}"
            add(openssl_encrypted(openssl, tmp_path, subject, cipher, kp.cert_path, *opts), "",
                "decrypted; not signed", f"secret of {subject}".encode())
    html = plain("html cbc", '<p>hi</p><img src="https://tracker.example/x.png">', ctype="text/html")
    add(smime.encrypt_message(html, [rsa2048.cert], profile=COMPATIBLE), "", "decrypted; not signed",
        b"data-mailcrypt-blocked-src=")
    add(smime.encrypt_message(plain("modern gcm"), [ec_p256.cert], profile=MODERN), "", "decrypted; not signed",
        b"hello")
    signer = Signer(ec_p256.key, ec_p256.cert)
    signed = smime_signed.sign_message(plain("signed then encrypted"), signer, signing_time=NOW)
    add(smime.encrypt_message(signed, [rsa2048.cert], profile=COMPATIBLE), "",
        "decrypted; signature valid; signer not checked", b"hello")
    add(smime_signed.sign_message(plain("signed detached"), signer, signing_time=NOW), "",
        "not encrypted; signature valid; signer not checked", b"hello")
    add(smime_signed.sign_message(plain("signed opaque"), signer, signing_time=NOW, detached=False), "",
        "not encrypted; signature valid; signer not checked", b"hello")
    # Broken: a key we do not hold, a truncated envelope, a tampered GCM tag.
    add(smime.encrypt_message(plain("not for me"), [stranger.cert]), ".Quarantine", "quarantined; no-key", b"")
    whole = smime.encrypt_message(plain("truncated"), [rsa2048.cert])
    add(whole[: len(whole) // 2], ".Quarantine", "quarantined; malformed", b"")
    gcm = bytearray(smime.encrypt_message(plain("tampered"), [rsa2048.cert], profile=MODERN))
    # Flip one base64 character near the end of the body (inside the ciphertext or tag).
    at = gcm.rstrip().rfind(b"\r\n") - 10
    gcm[at] = ord("A") if gcm[at] != ord("A") else ord("B")
    add(bytes(gcm), ".Quarantine", "quarantined; ", b"")
    # A sender may not forge our status fields on plain mail.
    add(b"X-Mailcrypt-Status: decrypted; signature verified\r\n" + plain("forged"), "", "plain", b"hello")

    imap_user.append(messages)
    before = imap_user.messages()

    result = run_cli(home, imap_user)
    assert result.returncode in (4, 3, 5), result.stderr
    # The most serious reason among the quarantined (no-key 3, malformed 4) decides: 4.
    assert result.returncode == 4, result.stderr
    assert "quarantined" in result.stdout and "fetched" in result.stdout
    delivered = by_uid(home / "mail")
    assert sorted(delivered) == list(range(1, len(messages) + 1))
    for uid, (folder, state, text) in enumerate(expected, start=1):
        got_folder, data = delivered[uid]
        assert got_folder == folder, (uid, status(data))
        assert status(data).startswith(state), (uid, status(data))
        assert text in data, uid
        if folder == ".Quarantine":
            assert strip_status(data) == lf(before[uid][0]), "quarantined mail must be the server's copy (LF line ends)"
    forged = delivered[len(messages)][1]
    assert forged.count(b"X-Mailcrypt-Status") == 1
    html_copy = delivered[expected.index(("", "decrypted; not signed", b"data-mailcrypt-blocked-src=")) + 1][1]
    assert b"X-Mailcrypt-Warning: unauthenticated encryption (CBC)" in html_copy
    assert b'<img src="https' not in html_copy
    signed_copy = next(d for f, d in delivered.values() if b"signed then encrypted" in d)
    assert b"X-Mailcrypt-Signer: " in signed_copy and b"X-Mailcrypt-Signing-Time: " in signed_copy
    assert b"X-Mailcrypt-Key: sha256:" in signed_copy and b"X-Mailcrypt-Cipher: aes256-cbc" in signed_copy
    plain_copy = delivered[1][1]
    assert strip_status(plain_copy) == lf(before[1][0]), "plain mail is copied unchanged (LF line ends)"

    # The server is untouched: same messages, same (no) flags.
    assert imap_user.messages() == before

    again = run_cli(home, imap_user)
    assert again.returncode == 0, again.stderr
    assert by_uid(home / "mail") == delivered
    files = sum(1 for _ in (home / "mail").rglob("*,U=*"))
    assert files == len(messages)


def test_replay_is_quarantined(tmp_path, imap_user, rsa2048, ec_p256) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, [rsa2048])
    encrypted = smime.encrypt_message(plain("once only"), [rsa2048.cert])
    signer = Signer(ec_p256.key, ec_p256.cert)
    signed = smime.encrypt_message(smime_signed.sign_message(plain("signed once"), signer, signing_time=NOW),
                                   [rsa2048.cert])
    # The signed one is re-encrypted for the replay: a new envelope, the same signature.
    resent = smime.encrypt_message(smime_signed.sign_message(plain("x"), signer, signing_time=NOW), [rsa2048.cert])
    del resent
    imap_user.append([encrypted, encrypted, signed])
    first = run_cli(home, imap_user)
    assert first.returncode == 5, first.stderr
    assert "replay" in first.stderr
    delivered = by_uid(home / "mail")
    assert delivered[1][0] == "" and status(delivered[1][1]).startswith("decrypted")
    assert delivered[2][0] == ".Quarantine" and status(delivered[2][1]).startswith("quarantined; replay")
    assert delivered[3][0] == ""
    # The same signed message again in a later run, in a fresh envelope: still a replay.
    inner = smime.decrypt_message(signed, [rsa2048.identity])[0]
    imap_user.append(smime.encrypt_message(inner, [rsa2048.cert]))
    second = run_cli(home, imap_user)
    assert second.returncode == 5
    assert status(by_uid(home / "mail")[4][1]).startswith("quarantined; replay")


def test_tampered_mail_leaves_no_plaintext_anywhere(tmp_path, imap_user, rsa2048, ec_p256) -> None:  # type: ignore[no-untyped-def]
    """A flipped GCM tag, and CBC with valid padding around a broken signature: quarantined as the server has them.

    Neither leaves a file in any tmp/, and the words of their plaintext are
    nowhere under the home: not in the Maildir, not in the state store.
    """
    from tamper import cbc_with_bad_signature, tampered_gcm

    secret = "never-to-be-seen-7f3a"
    body = "".join(f"{i:06d} {secret}\r\n" for i in range(20_000))
    home = make_home(tmp_path / "home", imap_user, [rsa2048])
    signer = Signer(ec_p256.key, ec_p256.cert)
    gcm = tampered_gcm(plain("tampered gcm", body), rsa2048.cert)
    cbc = cbc_with_bad_signature(smime_signed.sign_message(plain("cbc", body), signer, signing_time=NOW), rsa2048.cert)
    imap_user.append([gcm, cbc])
    before = imap_user.messages()

    result = run_cli(home, imap_user)
    assert result.returncode == 5, result.stderr  # bad-signature (5) outranks integrity (4)
    delivered = by_uid(home / "mail")
    assert delivered[1][0] == ".Quarantine" and status(delivered[1][1]).startswith("quarantined; integrity")
    assert delivered[2][0] == ".Quarantine" and status(delivered[2][1]).startswith("quarantined; bad-signature")
    for uid in (1, 2):
        assert strip_status(delivered[uid][1]) == lf(before[uid][0]), "quarantined mail must be the server's copy"
    assert [p for p in (home / "mail").rglob("tmp/*")] == []
    for path in home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert imap_user.messages() == before


def test_stale_signed_mail_is_quarantined(tmp_path, imap_user, rsa2048, ec_p256) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, [rsa2048])
    signer = Signer(ec_p256.key, ec_p256.cert)
    old = smime_signed.sign_message(plain("old"), signer, signing_time=NOW - datetime.timedelta(days=40))
    imap_user.append(smime.encrypt_message(old, [rsa2048.cert]))
    result = run_cli(home, imap_user)
    assert result.returncode == 5
    folder, data = by_uid(home / "mail")[1]
    assert folder == ".Quarantine" and status(data).startswith("quarantined; stale")


def test_large_folder_is_decrypted_in_worker_processes(tmp_path, imap_user, rsa2048, ec_p256) -> None:  # type: ignore[no-untyped-def]
    """Past ``parallel_from`` (64) new messages the workers decrypt; order, replays and counts hold."""
    home = make_home(tmp_path / "home", imap_user, [rsa2048, ec_p256])
    mail = [smime.encrypt_message(plain(f"bulk {i}"), [rsa2048.cert if i % 2 else ec_p256.cert]) for i in range(90)]
    mail[70] = mail[3]  # a replay inside the same batch as nothing else: across batches
    mail[5] = mail[4]  # a replay inside one batch
    imap_user.append(mail)
    result = run_cli(home, imap_user)
    assert result.returncode == 5, result.stderr
    delivered = by_uid(home / "mail")
    assert sorted(delivered) == list(range(1, 91))
    quarantined = sorted(uid for uid, (folder, _data) in delivered.items() if folder == ".Quarantine")
    assert quarantined == [6, 71]
    for uid, (folder, data) in delivered.items():
        if folder == "":
            assert status(data).startswith("decrypted") and f"Subject: bulk {uid - 1}".encode() in data
    assert run_cli(home, imap_user).returncode == 0

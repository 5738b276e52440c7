"""``X-Mailcrypt-Status`` and the other status fields, against a real Dovecot: one vocabulary, no forgeries.

Without trust anchors a valid signature's signer is "not checked" (never
"not trusted" beside a chain that was never checked); with the session CA
as anchor, a signing certificate it issued is "trusted" and one not fit for
signing is "not trusted". Signer names are RFC 4514 with ``emailAddress=``.
X-Mailcrypt-* fields a message brings along are renamed
``X-Mailcrypt-Original-*`` in delivered and quarantined copies, below ours.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from fetch_helpers import by_uid, make_home, plain, run_cli, status

from mailcrypt.envelope import Signer
from mailcrypt.mime import enveloped as smime
from mailcrypt.mime import signed as smime_signed

NOW = datetime.datetime.now(datetime.UTC)


def _fields(data: bytes) -> list[tuple[str, str]]:
    """The (unfolded) header fields of a delivered file, in order."""
    header = data.split(b"\n\n", 1)[0].decode()
    out: list[tuple[str, str]] = []
    for line in header.split("\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        else:
            name, _, value = line.partition(":")
            out.append((name, value.strip()))
    return out


def _mail(signers: list[Signer], recipient) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [
        smime.encrypt_message(
            smime_signed.sign_message(plain(f"signed {i}"), signer, signing_time=NOW), [recipient.cert]
        )
        for i, signer in enumerate(signers)
    ]


def test_without_anchors_the_signer_is_not_checked(tmp_path: Path, imap_user, rsa2048, ec_p256) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, [rsa2048])
    imap_user.append(_mail([Signer(ec_p256.key, ec_p256.cert)], rsa2048))
    result = run_cli(home, imap_user)
    assert result.returncode == 0, result.stdout + result.stderr
    data = by_uid(home / "mail")[1][1]
    assert status(data) == "decrypted; signature valid; signer not checked"
    fields = dict(_fields(data))
    assert "certificate chain not-checked (no trust anchors are configured)" in fields["X-Mailcrypt-Signer"]
    assert f"emailAddress={ec_p256.name}@example.test" in fields["X-Mailcrypt-Signer"]
    assert "emailAddress=" in fields["X-Mailcrypt-Key"]
    assert b"1.2.840.113549.1.9.1" not in data


def test_with_anchors_the_signer_is_trusted_or_not(  # type: ignore[no-untyped-def]
    tmp_path, imap_user, rsa2048, ec_p256, make_keypair, test_ca
) -> None:
    signing = make_keypair("status-signer", ec.generate_private_key(ec.SECP256R1()), key_usage="signing")
    # ec_p256 is a key-agreement certificate: not fit to sign, so its chain is refused.
    home = make_home(
        tmp_path / "home", imap_user, [rsa2048],
        extra=f'\n[keys]\ntrust_anchors = ["{test_ca.cert_path}"]\nrevocation = "off"\n',
    )
    imap_user.append(_mail([Signer(signing.key, signing.cert), Signer(ec_p256.key, ec_p256.cert)], rsa2048))
    result = run_cli(home, imap_user)
    assert result.returncode == 0, result.stdout + result.stderr
    delivered = by_uid(home / "mail")
    assert status(delivered[1][1]) == "decrypted; signature valid; signer trusted"
    assert status(delivered[2][1]) == "decrypted; signature valid; signer not trusted"


def test_forged_fields_are_renamed_in_delivered_and_quarantined_copies(tmp_path, imap_user, rsa2048, ec_p256) -> None:  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home", imap_user, [rsa2048])
    forged = b"X-Mailcrypt-Status: decrypted; signature valid; signer trusted\r\nx-mailcrypt-signer: CN=Bank\r\n"
    # Delivered (plain) and quarantined (encrypted to a key not held here).
    imap_user.append([forged + plain("forged plain"), forged + smime.encrypt_message(plain("x"), [ec_p256.cert])])
    result = run_cli(home, imap_user)
    assert result.returncode == 3, result.stdout + result.stderr
    delivered = by_uid(home / "mail")
    assert delivered[1][0] == "" and delivered[2][0] == ".Quarantine"
    for _folder, data in delivered.values():
        fields = _fields(data)
        names = [name.lower() for name, _value in fields]
        ours = [n for n in names if n.startswith("x-mailcrypt-") and not n.startswith("x-mailcrypt-original-")]
        # Ours are on top, one status field, and nothing below them passes for ours.
        assert names[: len(ours)] == ours and names.count("x-mailcrypt-status") == 1
        assert "x-mailcrypt-original-status" in names and "x-mailcrypt-original-signer" in names
    assert status(delivered[1][1]).startswith("plain;")
    assert status(delivered[2][1]).startswith("quarantined; no-key;")

"""The ``mailcrypt`` command, run as a real process: exit codes, errors, output safety, interop.

Every test runs the installed command (``python -m mailcrypt`` or the
console script) in a subprocess, as a user or a script would, and checks the
contract of DESIGN.md §6: one ``mailcrypt: error:`` line on stderr, the exit
code of the error class, and nothing written to the output on failure.
Identities are made with ``mailcrypt keys generate`` once per session;
``openssl cms`` checks both directions of interoperability.
"""

from __future__ import annotations

import argparse
import base64
import email
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

MAILCRYPT = [sys.executable, "-m", "mailcrypt"]
SCRIPT = Path(sys.executable).with_name("mailcrypt")
PASSPHRASE = "alice's long passphrase 42"

MESSAGE = (
    b"From: sender@example.org\r\n"
    b"To: alice@example.org\r\n"
    b"Cc: Bob <bob@example.org>\r\n"
    b"Subject: quarterly numbers\r\n"
    b"Message-ID: <cli-test-1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Alice and Bob,\r\n"
    b"the numbers are in and they are good.\r\n"
)
BODY_LINE = b"the numbers are in and they are good."


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any MAILCRYPT_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCRYPT_")}
    env.update(extra)
    return env


def run(*args: str | Path, cwd: Path, input: bytes | None = None, env: dict[str, str] | None = None,
        command: list[str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*(command or MAILCRYPT), *map(str, args)], cwd=cwd, input=input, capture_output=True,
        env=env if env is not None else clean_env(), timeout=120,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def assert_error(proc: subprocess.CompletedProcess[bytes], code: int, *needles: str) -> str:
    """The process failed with ``code``, one error line on stderr, and printed nothing on stdout."""
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, stderr
    assert proc.stdout == b""
    assert stderr.startswith("mailcrypt: error: "), stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in stderr
    return stderr


def run_openssl(*args: str | Path, input: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    proc = subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


@dataclass(frozen=True)
class Ident:
    address: str
    key: Path
    cert: Path
    passphrase: str | None

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(**({"MAILCRYPT_PASSPHRASE": self.passphrase} if self.passphrase else {}), **extra)

    def decrypt_args(self) -> tuple[str, ...]:
        return ("--key", str(self.key), "--cert", str(self.cert))


@pytest.fixture(scope="session")
def ids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ident]:
    """alice (RSA-2048, encrypted key), bob (P-256) and carol (P-384, nobody writes to her)."""
    directory = tmp_path_factory.mktemp("cli-ids")
    specs = {"alice": ("rsa2048", PASSPHRASE), "bob": ("p256", None), "carol": ("p384", None)}
    out = {}
    for name, (key_type, passphrase) in specs.items():
        address = f"{name}@example.org"
        ident = Ident(address, directory / f"{address}.key", directory / f"{address}.crt", passphrase)
        extra = () if passphrase else ("--no-passphrase",)
        proc = run("keys", "generate", address, "--key-type", key_type, "-o", directory, *extra,
                   cwd=directory, env=ident.env())
        assert proc.returncode == 0, proc.stderr
        out[name] = ident
    return out


@pytest.fixture()
def msg(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE)
    return path


def encrypt(tmp_path: Path, ids: dict[str, Ident], *names: str, extra: tuple[str, ...] = ()) -> bytes:
    certs = [a for n in names for a in ("--cert", str(ids[n].cert))]
    proc = run("encrypt", *certs, *extra, input=MESSAGE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def der_of(smime_message: bytes) -> bytes:
    return email.message_from_bytes(smime_message).get_payload(decode=True)


def with_der(smime_message: bytes, der: bytes) -> bytes:
    """The same S/MIME message with its CMS body replaced by ``der``."""
    sep = b"\r\n\r\n" if b"\r\n\r\n" in smime_message else b"\n\n"
    head = smime_message.split(sep, 1)[0]
    newline = sep[: len(sep) // 2]
    body = base64.encodebytes(der).replace(b"\n", newline)
    return head + sep + body


def assert_plaintext(output: bytes) -> None:
    assert BODY_LINE in output
    assert b"quarterly numbers" in output


# ---------------------------------------------------------------- startup and usage


def test_help_lists_the_commands(tmp_path: Path) -> None:
    # How fast it starts is measured by benchmarks/startup.py (target 150 ms), not asserted here.
    for command in ([str(SCRIPT)], MAILCRYPT):
        proc = run("--help", cwd=tmp_path, command=command)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(b"usage: mailcrypt")
        for word in (b"encrypt", b"decrypt", b"keys", b"exit status"):
            assert word in proc.stdout


def test_cli_module_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys, mailcrypt.cli\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('cryptography', 'asn1crypto')"
        " or m in ('mailcrypt.envelope', 'mailcrypt.mime.enveloped',"
        " 'mailcrypt.keydir.keygen', 'mailcrypt.keydir.keyfiles')]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == b"[]"


def _leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command path under ``parser``, e.g. ``("keys", "generate")``."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return [path]
    return [leaf for name, sub in groups[0].choices.items() for leaf in _leaf_commands(sub, (*path, name))]


def _handler_of(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> str:
    for name in path:
        group = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = group.choices[name]
    return str(parser.get_default("run"))


def test_every_subcommand_names_a_handler_and_the_parser_builds_again() -> None:
    """Each registered subcommand resolves to a function of its handler module, and importing those
    modules (``mailcrypt.cli.keys`` shares its name with its argument module) does not break the
    next parser built in the same process, as a second ``main()`` call builds it."""
    from mailcrypt import cli

    leaves = _leaf_commands(cli._build_parser())
    assert {leaf[0] for leaf in leaves} == {
        "init", "encrypt", "decrypt", "verify", "keys", "proxy", "users", "fetch", "quarantine"
    }
    assert len(leaves) == 16
    runs = {leaf: _handler_of(cli._build_parser(), leaf) for leaf in leaves}
    for leaf, target in runs.items():
        assert callable(cli._resolve(target)), (leaf, target)
    rebuilt = cli._build_parser()
    assert {leaf: _handler_of(rebuilt, leaf) for leaf in _leaf_commands(rebuilt)} == runs
    assert rebuilt.parse_args(["keys", "list", "--json"]).run == "keys:list_"


def test_version_and_subcommand_help(tmp_path: Path) -> None:
    proc = run("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(b"mailcrypt ")
    for sub in (("encrypt",), ("decrypt",), ("keys", "generate")):
        proc = run(*sub, "--help", cwd=tmp_path)
        assert proc.returncode == 0 and b"exit status" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [(), ("frobnicate",), ("encrypt", "--cipher", "des-cbc"), ("encrypt", "--profile", "fast"),
     ("decrypt", "--key"), ("encrypt", "a", "b"), ("keys", "generate")],
)
def test_argparse_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == b"" and b"usage:" in proc.stderr and b"Traceback" not in proc.stderr


# ---------------------------------------------------------------- configuration errors: exit 2


def test_missing_input_file(tmp_path: Path, ids: dict[str, Ident]) -> None:
    proc = run("encrypt", "--cert", ids["bob"].cert, "nonexistent.eml", cwd=tmp_path)
    assert_error(proc, 2, "nonexistent.eml")
    proc = run("decrypt", *ids["bob"].decrypt_args(), "nonexistent.p7m", "-o", "out.eml", cwd=tmp_path)
    assert_error(proc, 2, "nonexistent.p7m")
    assert os.listdir(tmp_path) == []


def test_bad_certificate_files(tmp_path: Path, msg: Path) -> None:
    assert_error(run("encrypt", "--cert", "missing.crt", msg, cwd=tmp_path), 2, "missing.crt")
    junk = tmp_path / "junk.crt"
    junk.write_text("hello")
    assert_error(run("encrypt", "--cert", junk, msg, cwd=tmp_path), 2, "junk.crt")


def test_output_directory_must_exist(tmp_path: Path, ids: dict[str, Ident], msg: Path) -> None:
    proc = run("encrypt", "--cert", ids["bob"].cert, msg, "-o", tmp_path / "nodir" / "out", cwd=tmp_path)
    assert_error(proc, 2, "does not exist")


def test_decrypt_identity_arguments(tmp_path: Path, ids: dict[str, Ident]) -> None:
    bob = ids["bob"]
    assert_error(run("decrypt", "--key", bob.key, cwd=tmp_path), 2, "--cert")
    # No key files and no home: the error says how to make one.
    assert_error(run("decrypt", cwd=tmp_path), 2, "mailcrypt init")
    proc = run("decrypt", "--key", bob.key, "--cert", ids["carol"].cert, cwd=tmp_path)
    assert_error(proc, 2, "no certificate for the key")


def test_key_file_readable_by_others(tmp_path: Path, ids: dict[str, Ident]) -> None:
    loose = tmp_path / "loose.key"
    shutil.copyfile(ids["bob"].key, loose)
    loose.chmod(0o644)
    proc = run("decrypt", "--key", loose, "--cert", ids["bob"].cert, cwd=tmp_path)
    assert_error(proc, 2, f"chmod 600 {loose}")


def test_encrypted_key_passphrase_errors(tmp_path: Path, ids: dict[str, Ident]) -> None:
    alice = ids["alice"]
    assert_error(run("decrypt", *alice.decrypt_args(), cwd=tmp_path), 2, "is encrypted", "--password-file")
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the passphrase at all\n")
    wrong.chmod(0o600)
    proc = run("decrypt", *alice.decrypt_args(), "--password-file", wrong, cwd=tmp_path)
    stderr = assert_error(proc, 2, "wrong passphrase", str(alice.key))
    assert "not the passphrase" not in stderr
    proc = run("decrypt", *alice.decrypt_args(), cwd=tmp_path, env=clean_env(MAILCRYPT_PASSPHRASE="nope nope"))
    assert "nope nope" not in assert_error(proc, 2, "wrong passphrase")


def test_pkcs12_wrong_password(tmp_path: Path, ids: dict[str, Ident]) -> None:
    p12 = _export_p12(tmp_path, ids["alice"], "p12 secret")
    proc = run("decrypt", "--p12", p12, cwd=tmp_path, env=clean_env(MAILCRYPT_P12_PASSWORD="guess"))
    assert "guess" not in assert_error(proc, 2, "wrong password", str(p12))
    assert_error(run("decrypt", "--p12", p12, cwd=tmp_path), 2, "needs a password")
    assert_error(run("decrypt", "--p12", tmp_path / "none.p12", cwd=tmp_path), 2, "none.p12")


def _export_p12(tmp_path: Path, ident: Ident, password: str) -> Path:
    out = tmp_path / f"{ident.address}.p12"
    env = clean_env(KEYPASS=ident.passphrase or "", OUTPASS=password)
    passin = ("-passin", "env:KEYPASS") if ident.passphrase else ()
    run_openssl("pkcs12", "-export", "-inkey", ident.key, "-in", ident.cert, *passin,
                "-passout", "env:OUTPASS", "-out", out, env=env)
    return out


# ---------------------------------------------------------------- recipients: exit 3


def test_to_without_matching_certificate(tmp_path: Path, ids: dict[str, Ident], msg: Path) -> None:
    proc = run("encrypt", "--cert", ids["bob"].cert, "--to", "carol@example.org", msg, "-o", "out", cwd=tmp_path)
    assert_error(proc, 3, "carol@example.org")
    assert sorted(os.listdir(tmp_path)) == ["message.eml"]


def test_recipients_from_to_and_cc_need_certificates(tmp_path: Path, msg: Path) -> None:
    # Without --cert the certificates come from the home's key directory ...
    assert_error(run("encrypt", msg, cwd=tmp_path), 2, "mailcrypt init")
    # ... and an address without one there is "no key for this message".
    home = tmp_path / "home"
    env = clean_env(MAILCRYPT_HOME=str(home))
    assert run("init", "me@example.org", "--key-type", "p256", "--no-passphrase", cwd=tmp_path, env=env).returncode == 0
    assert_error(run("encrypt", msg, cwd=tmp_path, env=env), 3, "alice@example.org")


def test_to_selects_among_the_certificates(tmp_path: Path, ids: dict[str, Ident]) -> None:
    out = encrypt(tmp_path, ids, "alice", "bob", extra=("--to", "bob@EXAMPLE.org"))
    proc = run("decrypt", *ids["bob"].decrypt_args(), input=out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_plaintext(proc.stdout)
    proc = run("decrypt", *ids["alice"].decrypt_args(), input=out, cwd=tmp_path, env=ids["alice"].env())
    assert_error(proc, 3)


def test_rsa_and_ec_recipients_share_one_only_when_said_to(tmp_path: Path, ids: dict[str, Ident], msg: Path) -> None:
    """DESIGN.md §1: NSS 3.87 cannot read an envelope holding any EC RecipientInfo; one output is one envelope."""
    alice, bob = ids["alice"], ids["bob"]
    proc = run("encrypt", "--cert", alice.cert, "--cert", bob.cert, msg, "-o", "sent.p7m", cwd=tmp_path)
    assert_error(proc, 2, "alice@example.org (RSA) not known to read")
    assert b"--mixed-recipient-infos" in proc.stderr and not (tmp_path / "sent.p7m").exists()
    # The sender's own EC certificate is left out, with a warning, rather than refused.
    proc = run("encrypt", "--cert", alice.cert, "--cert", bob.cert, "--from", bob.address, msg, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert b"warning: your own EC certificate (bob@example.org) is left out" in proc.stderr
    assert run("decrypt", *bob.decrypt_args(), input=proc.stdout, cwd=tmp_path).returncode == 3
    plain = run("decrypt", *alice.decrypt_args(), input=proc.stdout, cwd=tmp_path, env=alice.env())
    assert plain.returncode == 0, plain.stderr


# ---------------------------------------------------------------- end to end


def test_end_to_end_two_recipients(tmp_path: Path, ids: dict[str, Ident], msg: Path) -> None:
    alice, bob = ids["alice"], ids["bob"]
    # Alice (RSA) and Bob (EC) in one envelope: said to be readable by both (DESIGN.md §1).
    proc = run("encrypt", "--cert", alice.cert, "--cert", bob.cert, "--mixed-recipient-infos", msg, "-o", "sent.p7m",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    sent = (tmp_path / "sent.p7m").read_bytes()
    assert b"application/pkcs7-mime" in sent and b"enveloped-data" in sent
    assert BODY_LINE not in sent
    assert (tmp_path / "sent.p7m").stat().st_mode & 0o777 == 0o600

    for ident in (alice, bob):
        out = tmp_path / f"{ident.address}.eml"
        proc = run("decrypt", *ident.decrypt_args(), "sent.p7m", "-o", out, cwd=tmp_path, env=ident.env())
        assert proc.returncode == 0, proc.stderr
        assert_plaintext(out.read_bytes())
        assert out.stat().st_mode & 0o777 == 0o600

    # The same message opens with OpenSSL for both recipients.
    for ident in (alice, bob):
        passin = ("-passin", "env:MAILCRYPT_PASSPHRASE") if ident.passphrase else ()
        plain = run_openssl("cms", "-decrypt", "-in", tmp_path / "sent.p7m", "-recip", ident.cert,
                            "-inkey", ident.key, *passin, env=ident.env())
        assert BODY_LINE in plain
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert leftovers == []


def test_stdin_stdout_and_verbose(tmp_path: Path, ids: dict[str, Ident]) -> None:
    sent = encrypt(tmp_path, ids, "bob")
    assert sent.startswith(b"MIME-Version") or b"Content-Type: application/pkcs7-mime" in sent
    proc = run("-v", "decrypt", *ids["carol"].decrypt_args(), *ids["bob"].decrypt_args(), input=sent, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_plaintext(proc.stdout)
    assert b"decrypted with" in proc.stderr and b"bob@example.org" in proc.stderr
    # "-" names stdin and stdout explicitly; -v after the command works as well.
    proc = run("decrypt", "-v", *ids["bob"].decrypt_args(), "-", "-o", "-", input=sent, cwd=tmp_path)
    assert proc.returncode == 0 and BODY_LINE in proc.stdout and b"decrypted with" in proc.stderr


@pytest.mark.parametrize("extra,content_type", [
    (("--profile", "modern"), b"authEnveloped-data"),
    (("--cipher", "aes128-gcm"), b"authEnveloped-data"),
    (("--cipher", "aes128-cbc", "--rsa-padding", "oaep"), b"enveloped-data"),
])
def test_profiles_decrypt_with_openssl(tmp_path: Path, ids: dict[str, Ident], extra, content_type) -> None:
    alice, bob = ids["alice"], ids["bob"]
    sent = encrypt(tmp_path, ids, "alice", "bob", extra=(*extra, "--mixed-recipient-infos"))
    assert b"smime-type=" + content_type in sent.replace(b'"', b"")
    (tmp_path / "sent.p7m").write_bytes(sent)
    plain = run_openssl("cms", "-decrypt", "-in", tmp_path / "sent.p7m", "-recip", bob.cert, "-inkey", bob.key)
    assert BODY_LINE in plain
    plain = run_openssl("cms", "-decrypt", "-in", tmp_path / "sent.p7m", "-recip", alice.cert, "-inkey", alice.key,
                        "-passin", "env:MAILCRYPT_PASSPHRASE", env=alice.env())
    assert BODY_LINE in plain
    proc = run("decrypt", *alice.decrypt_args(), input=sent, cwd=tmp_path, env=alice.env())
    assert proc.returncode == 0, proc.stderr
    assert_plaintext(proc.stdout)


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_decrypt_what_openssl_encrypted(tmp_path: Path, ids: dict[str, Ident], msg: Path, who: str) -> None:
    ident = ids[who]
    sent = run_openssl("cms", "-encrypt", "-aes256", "-in", msg, ident.cert)
    proc = run("decrypt", *ident.decrypt_args(), input=sent, cwd=tmp_path, env=ident.env())
    assert proc.returncode == 0, proc.stderr
    assert BODY_LINE in proc.stdout


def test_decrypt_with_pkcs12(tmp_path: Path, ids: dict[str, Ident]) -> None:
    sent = encrypt(tmp_path, ids, "alice")
    p12 = _export_p12(tmp_path, ids["alice"], "p12 secret")
    proc = run("decrypt", "--p12", p12, input=sent, cwd=tmp_path, env=clean_env(MAILCRYPT_P12_PASSWORD="p12 secret"))
    assert proc.returncode == 0, proc.stderr
    assert_plaintext(proc.stdout)
    password_file = tmp_path / "p12.pass"
    password_file.write_text("p12 secret\n")
    password_file.chmod(0o600)
    # The PKCS#12 identity comes after one that does not match: identities are tried in order.
    proc = run("decrypt", *ids["carol"].decrypt_args(), "--p12", p12, "--password-file", password_file, "-v",
               input=sent, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_plaintext(proc.stdout)
    assert b"alice@example.org" in proc.stderr


# ---------------------------------------------------------------- failures write nothing


def _failures(tmp_path: Path, ids: dict[str, Ident]) -> dict[str, tuple[bytes, int]]:
    """Inputs that must fail to decrypt for bob, and the exit code each must give."""
    to_bob_gcm = encrypt(tmp_path, ids, "bob", extra=("--profile", "modern"))
    der = der_of(to_bob_gcm)
    tampered_tag = der[:-1] + bytes([der[-1] ^ 0x01])
    # The GCM ciphertext ends just before the 16-byte tag and its 2-byte header.
    inside = len(der) - 30
    tampered_body = der[:inside] + bytes([der[inside] ^ 0x80]) + der[inside + 1:]
    return {
        "wrong key": (encrypt(tmp_path, ids, "carol"), 3),
        "not encrypted": (MESSAGE, 4),
        "tampered tag": (with_der(to_bob_gcm, tampered_tag), 4),
        "tampered ciphertext": (with_der(to_bob_gcm, tampered_body), 4),
        "truncated": (with_der(to_bob_gcm, der[: len(der) * 2 // 3]), 4),
        "not base64 DER": (with_der(to_bob_gcm, b"\x30\x80garbage"), 4),
    }


def test_failures_leave_no_output(tmp_path: Path, ids: dict[str, Ident]) -> None:
    bob = ids["bob"]
    for name, (data, code) in _failures(tmp_path, ids).items():
        work = tmp_path / name.replace(" ", "-")
        work.mkdir()
        (work / "in.p7m").write_bytes(data)
        # To stdout: nothing at all is printed.
        proc = run("decrypt", *bob.decrypt_args(), "in.p7m", cwd=work)
        assert_error(proc, code)
        # To a new file: it is not created.
        proc = run("decrypt", *bob.decrypt_args(), "in.p7m", "-o", "out.eml", cwd=work)
        assert_error(proc, code)
        assert sorted(os.listdir(work)) == ["in.p7m"], name
        # Over an existing file: it is left as it was.
        (work / "out.eml").write_bytes(b"previous content\n")
        proc = run("decrypt", *bob.decrypt_args(), "-o", "out.eml", input=data, cwd=work)
        assert_error(proc, code)
        assert (work / "out.eml").read_bytes() == b"previous content\n"
        assert sorted(os.listdir(work)) == ["in.p7m", "out.eml"], name


def _large_tampered(ids: dict[str, Ident]) -> dict[str, tuple[bytes, int]]:
    """A 3 MB AES-GCM message with a flipped tag, and AES-CBC with valid padding around a broken signature.

    Both decrypt in many chunks before the check that fails: plaintext exists
    in the command's temporary file and must never reach the output.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from tamper import cbc_with_bad_signature, tampered_gcm

    from mailcrypt.envelope import Signer
    from mailcrypt.mime import sign_message

    bob = ids["bob"]
    cert = x509.load_pem_x509_certificate(bob.cert.read_bytes())
    key = load_pem_private_key(bob.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    big = MESSAGE + BODY_LINE * (3_000_000 // len(BODY_LINE))
    signed = sign_message(big, Signer(key, cert), signing_time=datetime.now(UTC))
    return {
        "large tampered gcm": (tampered_gcm(big, cert), 4),
        "cbc bad inner signature": (cbc_with_bad_signature(signed, cert), 5),
    }


def test_large_tampered_messages_leave_no_output(tmp_path: Path, ids: dict[str, Ident]) -> None:
    bob = ids["bob"]
    for name, (data, code) in _large_tampered(ids).items():
        work = tmp_path / name.replace(" ", "-")
        work.mkdir()
        (work / "in.p7m").write_bytes(data)
        proc = run("decrypt", *bob.decrypt_args(), "in.p7m", cwd=work)
        assert_error(proc, code)  # exit code, and not one byte on stdout
        proc = run("decrypt", *bob.decrypt_args(), "in.p7m", "-o", "out.eml", cwd=work)
        assert_error(proc, code)
        # Neither the output nor the temporary file it would have been renamed from.
        assert sorted(os.listdir(work)) == ["in.p7m"], name


def test_encrypt_failure_leaves_existing_output(tmp_path: Path, ids: dict[str, Ident], msg: Path) -> None:
    out = tmp_path / "out.p7m"
    out.write_bytes(b"keep me\n")
    proc = run("encrypt", "--cert", ids["bob"].cert, "--to", "nobody@example.org", msg, "-o", out, cwd=tmp_path)
    assert_error(proc, 3, "nobody@example.org")
    assert out.read_bytes() == b"keep me\n"
    assert sorted(os.listdir(tmp_path)) == ["message.eml", "out.p7m"]


def test_unexpected_error_is_one_line_and_writes_nothing(
    tmp_path: Path, ids: dict[str, Ident], msg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A bug below the command line gives exit 1 and one line; the traceback only with -v.

    No real input makes the MIME layer crash, so the crash is injected.
    """
    from mailcrypt import cli
    from mailcrypt.cli import crypt

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(crypt, "encrypt_stream", crash)
    argv = ["encrypt", "--cert", str(ids["bob"].cert), str(msg), "-o", str(tmp_path / "out.p7m")]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mailcrypt: error: internal error: RuntimeError: injected fault")
    assert captured.err.count("\n") == 1
    assert cli.main(["-v", *argv]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["message.eml"]

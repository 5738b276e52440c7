"""The ``mailcrypt`` command: argument parsing, exit codes and safe output.

This module turns the command line of DESIGN.md §6 into calls to the MIME
layer (``mailcrypt.smime``), the key generator and the key-file readers, and
turns every ``MailcryptError`` into one line on stderr and its exit code.
Output is written to a temporary file and only moved into place (or copied
to stdout) once the whole command has succeeded, so a failure never leaves
partial plaintext or ciphertext behind.

It does no cryptography itself. At module level it imports only argparse,
os and sys, so that ``mailcrypt --help`` starts fast; everything heavy is
imported inside the command that needs it.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]

_EXIT_STATUS = """\
exit status:
  0  success
  2  usage or configuration error (bad option, unreadable file, wrong passphrase)
  3  no key for this message (no matching identity, no recipient certificate)
  4  integrity failure or malformed input (tampered, truncated, not encrypted)
  5  signature invalid or replay
"""

_CHUNK = 1 << 20


class _Ordered(argparse.Action):
    """Append (option, value) to one shared list, keeping the command-line order.

    ``decrypt`` tries identities in the order the user named them, across
    ``--p12`` and ``--key``/``--cert``.
    """

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((option_string, values))
        setattr(namespace, self.dest, items)


class _Formatter(argparse.HelpFormatter):
    """Fill descriptions to the terminal width but keep multi-line text (the exit status table) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Version(argparse.Action):
    """Print the installed version; it is looked up only when asked for."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        from importlib.metadata import version

        print(f"mailcrypt {version('mailcrypt')}")
        parser.exit()


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a subcommand from resetting what was given before it.
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    fmt = _Formatter
    parser = argparse.ArgumentParser(
        prog="mailcrypt",
        description="S/MIME (RFC 8551) mail encryption beside an ordinary mail client.",
        epilog=_EXIT_STATUS,
        formatter_class=fmt,
    )
    parser.add_argument(
        "--home", metavar="DIR", help="mailcrypt home directory (default: $MAILCRYPT_HOME or the user config dir)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="say more on stderr; -v shows tracebacks")
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    enc = commands.add_parser(
        "encrypt",
        parents=[common],
        formatter_class=fmt,
        epilog=_EXIT_STATUS,
        help="encrypt an RFC 5322 message into an S/MIME message",
        description="Read an RFC 5322 message and write it as an S/MIME encrypted message. Recipients: with "
        "--cert, every certificate in the files; with --to as well, only the certificates for those addresses; "
        "with neither, the To and Cc addresses of the message, each of which needs a certificate.",
    )
    enc.add_argument("--to", metavar="ADDR", action="append", default=[], help="encrypt to the --cert certificate(s) "
                     "whose e-mail address is ADDR (repeatable)")
    enc.add_argument("--cert", metavar="FILE", action="append", default=[], help="recipient certificate file, PEM "
                     "(may hold several) or DER (repeatable)")
    enc.add_argument("--profile", choices=["compatible", "modern"], default="compatible", help="algorithm profile: "
                     "compatible = AES-256-CBC, RSA PKCS#1 v1.5 (default); modern = AES-256-GCM, RSA-OAEP")
    enc.add_argument("--cipher", choices=["aes128-cbc", "aes256-cbc", "aes128-gcm", "aes256-gcm"],
                     help="content cipher, overriding the profile's (GCM makes AuthEnvelopedData)")
    enc.add_argument("--rsa-padding", choices=["pkcs1v15", "oaep"], help="RSA key transport, overriding the profile's")
    enc.add_argument("input", nargs="?", metavar="IN", help="message file (default: stdin)")
    enc.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout); written only on success")
    enc.set_defaults(run=_cmd_encrypt)

    dec = commands.add_parser(
        "decrypt",
        parents=[common],
        formatter_class=fmt,
        epilog=_EXIT_STATUS,
        help="decrypt an S/MIME message",
        description="Decrypt an S/MIME message with the identities named; they are tried in the order given.",
    )
    dec.add_argument("--p12", metavar="FILE", dest="sources", action=_Ordered, help="identity from a PKCS#12 file "
                     "(repeatable); password from --password-file, $MAILCRYPT_P12_PASSWORD or a prompt")
    dec.add_argument("--key", metavar="KEY", dest="sources", action=_Ordered, help="private key file, PEM or DER, "
                     "mode 0600 (repeatable, each with a --cert); passphrase from --password-file, "
                     "$MAILCRYPT_PASSPHRASE or a prompt")
    dec.add_argument("--cert", metavar="CERT", dest="sources", action=_Ordered, help="certificate file for a --key "
                     "(the n-th --cert belongs to the n-th --key)")
    dec.add_argument("--password-file", metavar="F", help="file whose first line is the password of the --p12 "
                     "files and encrypted --key files (mode 0600)")
    dec.add_argument("input", nargs="?", metavar="IN", help="S/MIME message file (default: stdin)")
    dec.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout); written only on success")
    dec.set_defaults(run=_cmd_decrypt, sources=[])

    keys = commands.add_parser("keys", parents=[common], help="manage keys and certificates")
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)
    gen = keys_commands.add_parser(
        "generate",
        parents=[common],
        formatter_class=fmt,
        epilog=_EXIT_STATUS,
        help="new identity: private key + self-signed S/MIME certificate",
        description="Generate a private key and a self-signed S/MIME certificate for ADDRESS and write them "
        "as the files ADDRESS.key (PKCS#8 PEM, mode 0600, encrypted with a passphrase unless --no-passphrase) "
        "and ADDRESS.crt (PEM) in the output directory. Existing files are not overwritten without --force. "
        "The passphrase comes from --passphrase-file, $MAILCRYPT_PASSPHRASE, or a prompt on a terminal.",
    )
    gen.add_argument("address", metavar="ADDRESS", help="the e-mail address the certificate is for")
    gen.add_argument("--key-type", choices=["rsa2048", "rsa3072", "rsa4096", "p256", "p384"], default="rsa3072",
                     help="key type (default: rsa3072)")
    gen.add_argument("--days", type=int, default=730, metavar="N", help="validity in days (default: 730)")
    gen.add_argument("-o", "--out-dir", metavar="DIR", default=".", help="directory to write the two files to "
                     "(default: the current directory)")
    secret = gen.add_mutually_exclusive_group()
    secret.add_argument("--passphrase-file", "--password-file", metavar="F", dest="passphrase_file",
                        help="file whose first line is the passphrase for the new key (mode 0600)")
    secret.add_argument("--no-passphrase", action="store_true", help="write the private key unencrypted")
    gen.add_argument("--force", action="store_true", help="overwrite existing files")
    gen.set_defaults(run=_cmd_keys_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (DESIGN.md §6)."""
    args = _build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", 0) or 0
    from mailcrypt import errors

    try:
        args.run(args)
        return 0
    except errors.MailcryptError as exc:
        return _fail(str(exc), exc.exit_code)
    except BrokenPipeError:
        # The reader went away; there is nobody to tell, and stdout is unusable.
        _silence_stdout()
        return 1
    except OSError as exc:
        if exc.filename is not None:
            return _fail(f"{exc.filename}: {exc.strerror or exc}", 2)
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        return _fail(f"internal error: {type(exc).__name__}: {exc}" + ("" if verbose else " (run with -v for details)"), 1)


def _fail(message: str, code: int) -> int:
    line = " ".join(message.split())
    print(f"mailcrypt: error: {line}", file=sys.stderr)
    return code


def _note(args: argparse.Namespace, message: str) -> None:
    if getattr(args, "verbose", 0):
        print(f"mailcrypt: {message}", file=sys.stderr)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------- input and output


def _open_input(path: str | None):  # type: ignore[no-untyped-def]
    """The input as a seekable binary file; standard input is spooled to a temporary file first.

    The MIME layer may need to know the length or read twice; a temporary
    file gives it that without holding the message in memory.
    """
    if path is not None and path != "-":
        return open(path, "rb")
    import shutil
    import tempfile

    spool = tempfile.TemporaryFile()
    try:
        shutil.copyfileobj(sys.stdin.buffer, spool, _CHUNK)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


class _Output:
    """Where a command writes: a 0600 temporary file, committed only on success.

    With a path, the temporary file lives in the same directory and is
    renamed over the path. Without one, it is anonymous and copied to stdout.
    Leaving the ``with`` block by an exception removes it and writes nothing.
    """

    def __init__(self, path: str | None) -> None:
        self.path = None if path in (None, "-") else path
        self.file = None
        self._tmp_name: str | None = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        import tempfile

        if self.path is None:
            self.file = tempfile.TemporaryFile()
            return self
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            from mailcrypt import errors

            raise errors.ConfigError(f"output {self.path}: directory {directory} does not exist")
        fd, self._tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(self.path)}.", suffix=".tmp")
        self.file = os.fdopen(fd, "w+b")
        return self

    def commit(self) -> None:
        """Publish the output: rename it into place, or copy it to stdout."""
        assert self.file is not None
        if self.path is None:
            import shutil

            self.file.seek(0)
            out = sys.stdout.buffer
            shutil.copyfileobj(self.file, out, _CHUNK)
            out.flush()
        else:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self._tmp_name, self.path)  # type: ignore[arg-type]
            self._tmp_name = None

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if self.file is not None:
            self.file.close()
        if self._tmp_name is not None:
            try:
                os.unlink(self._tmp_name)
            except FileNotFoundError:
                pass


# ---------------------------------------------------------------- commands


def _cmd_encrypt(args: argparse.Namespace) -> None:
    from mailcrypt import errors, keyfiles
    from mailcrypt.policy import PROFILES

    profile = PROFILES[args.profile]
    changes = {k: v for k, v in (("cipher", args.cipher), ("rsa_padding", args.rsa_padding)) if v}
    if changes:
        profile = profile.with_options(**changes)
    certificates = [c for path in args.cert for c in keyfiles.load_certificates(path)]
    from mailcrypt import smime

    with _open_input(args.input) as infile:
        if args.to:
            recipients = _select(certificates, args.to)
        elif certificates:
            recipients = _unique(certificates)
        else:
            addresses = smime.recipient_addresses(_read_headers(infile))
            if not addresses:
                raise errors.UsageError("no recipients: the message has no To or Cc address; use --cert FILE")
            # Without --cert the certificates would come from the key
            # directory, which this version does not have yet.
            recipients = _select([], addresses)
        _note(args, f"encrypting to {len(recipients)} recipient(s) with profile {profile.name} "
                    f"({profile.cipher}, RSA {profile.rsa_padding}, ECDH {profile.ecdh_kdf_hash} KDF)")
        with _Output(args.output) as out:
            smime.encrypt_stream(infile, out.file, recipients, profile=profile)
            out.commit()


def _read_headers(infile, limit: int = 1 << 20) -> bytes:  # type: ignore[no-untyped-def]
    """The header block of the message (up to the first empty line, at most ``limit`` bytes); the file is rewound."""
    start = infile.tell()
    lines = []
    size = 0
    while size < limit:
        line = infile.readline(limit - size)
        if line in (b"", b"\n", b"\r\n"):
            break
        lines.append(line)
        size += len(line)
    infile.seek(start)
    return b"".join(lines)


def _unique(certificates: list) -> list:  # type: ignore[type-arg]
    """The certificates in order, each once (certificates compare by their DER encoding)."""
    return list(dict.fromkeys(certificates))


def _select(certificates: list, addresses: list[str]) -> list:  # type: ignore[type-arg]
    """The certificates for each of ``addresses``; ``NoRecipientCertificate`` for the first without one."""
    from mailcrypt import errors, keyfiles

    chosen = []
    for address in addresses:
        matches = keyfiles.certificates_for(address, certificates)
        if not matches:
            hint = " among the --cert files" if certificates else "; give it with --cert FILE"
            raise errors.NoRecipientCertificate(f"no certificate for {address}{hint}", address=address)
        chosen.extend(matches)
    return _unique(chosen)


def _cmd_decrypt(args: argparse.Namespace) -> None:
    from mailcrypt import errors, keyfiles

    p12s = [v for option, v in args.sources if option == "--p12"]
    keys = [v for option, v in args.sources if option == "--key"]
    certs = [v for option, v in args.sources if option == "--cert"]
    if len(keys) != len(certs):
        raise errors.UsageError(f"each --key needs a --cert (got {len(keys)} --key and {len(certs)} --cert)")
    if not p12s and not keys:
        raise errors.UsageError("no identity given: use --key FILE --cert FILE or --p12 FILE")

    pairs = []
    key_index = 0
    for option, value in args.sources:
        if option == "--p12":
            pairs.append(keyfiles.load_pkcs12(value, password_file=args.password_file))
        elif option == "--key":
            pairs.append(keyfiles.load_key_pair(value, certs[key_index], password_file=args.password_file))
            key_index += 1
    from mailcrypt import smime
    from mailcrypt.envelope import identity_from_key

    identities = [identity_from_key(p.key, p.certificate) for p in pairs]

    with _open_input(args.input) as infile, _Output(args.output) as out:
        info = smime.decrypt_stream(infile, out.file, identities)
        out.commit()
    _note(args, f"decrypted with {info.identity.label} ({info.content_type}, {info.cipher}, {info.key_management})")


def _cmd_keys_generate(args: argparse.Namespace) -> None:
    from mailcrypt import errors, keygen

    address = keygen.normalize_address(args.address)
    if not 1 <= args.days <= keygen.MAX_DAYS:
        raise errors.UsageError(f"--days must be from 1 to {keygen.MAX_DAYS}")
    out_dir = args.out_dir
    if not os.path.isdir(out_dir):
        raise errors.ConfigError(f"output directory {out_dir} does not exist")
    key_path = os.path.join(out_dir, f"{address}.key")
    cert_path = os.path.join(out_dir, f"{address}.crt")
    if not args.force:
        existing = [p for p in (key_path, cert_path) if os.path.lexists(p)]
        if existing:
            verb = "exists" if len(existing) == 1 else "exist"
            raise errors.ConfigError(f"{' and '.join(existing)} already {verb} (use --force to overwrite)")

    passphrase = None if args.no_passphrase else _new_passphrase(args.passphrase_file)
    key, certificate = keygen.generate_identity(address, key_type=args.key_type, days=args.days)
    keygen.write_private_key(key_path, key, passphrase=passphrase, force=args.force)
    try:
        keygen.write_certificate(cert_path, certificate, force=args.force)
    except BaseException:
        os.unlink(key_path)
        raise
    from cryptography.hazmat.primitives import hashes

    fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    print(f"wrote {key_path} (private key, {'encrypted' if passphrase else 'NOT encrypted'})")
    print(f"wrote {cert_path} (certificate for {address}, SHA-256 fingerprint {fingerprint})")


def _new_passphrase(passphrase_file: str | None) -> bytes:
    """The passphrase for a new key: from the file, the environment, or asked twice on a terminal."""
    from mailcrypt import errors, keyfiles

    passphrase = keyfiles.passphrase_from(passphrase_file, keyfiles.PASSPHRASE_ENV)
    if passphrase is None and sys.stdin is not None and sys.stdin.isatty():
        import getpass

        first = getpass.getpass("Passphrase for the new key: ")
        if first and getpass.getpass("Same passphrase again: ") != first:
            raise errors.UsageError("the two passphrases differ")
        passphrase = first.encode("utf-8") if first else None
    if passphrase is None:
        raise errors.UsageError(
            f"the private key needs a passphrase: set {keyfiles.PASSPHRASE_ENV}, use --passphrase-file FILE, "
            "run on a terminal to be asked, or give --no-passphrase to store it unencrypted"
        )
    return passphrase

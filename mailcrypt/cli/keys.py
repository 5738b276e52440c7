"""``mailcrypt init`` and ``mailcrypt keys ...``: the home and its key directory.

``keys generate`` writes into the home's key directory, or with ``-o DIR``
two plain files (a key and a certificate) for use elsewhere. The rest reads
and changes the key directory through ``mailcrypt.keydir``; this module only
parses, asks for secrets the documented way and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mailcrypt import config, errors
from mailcrypt.addresses import normalize_address
from mailcrypt.cli.files import Output
from mailcrypt.cli.home import open_home
from mailcrypt.keydir import (
    MAX_DAYS,
    PASSPHRASE_ENV,
    CertificateEntry,
    PassphraseSource,
    generate_identity,
    init_home,
    passphrase_from,
    write_certificate,
    write_private_key,
)

__all__ = ["init", "generate", "import_", "list_", "show", "export", "remove"]

_UNENCRYPTED_WARNING = (
    "WARNING: the private key is stored WITHOUT a passphrase (--no-passphrase). Anyone who can read {path} "
    "can read your mail. Use this only on a machine and account you trust for unattended operation."
)


def init(args: argparse.Namespace) -> None:
    home = config.resolve_home(getattr(args, "home", None))
    source = PassphraseSource.unencrypted() if args.no_passphrase else PassphraseSource()
    result = init_home(home, args.address, passphrase=source, key_type=args.key_type, days=args.days)
    print(f"created {result.home}")
    print(f"  configuration  {result.config_file}")
    print(
        f"  identity       {', '.join(result.identity.addresses)} ({result.identity.key_type}), "
        f"sha256 {result.identity.fingerprint}"
    )
    from mailcrypt.cli.proxy import init_proxy

    for line in init_proxy(result.home):
        print(line)
    if not result.encrypted:
        print(_UNENCRYPTED_WARNING.format(path=result.home / "keys"), file=sys.stderr)


def generate(args: argparse.Namespace) -> None:
    if not 1 <= args.days <= MAX_DAYS:
        raise errors.UsageError(f"--days must be from 1 to {MAX_DAYS}")
    if args.out_dir is not None:
        _generate_files(args)
        return
    home = open_home(args)
    source = PassphraseSource.unencrypted() if args.no_passphrase else home.passphrase
    key, certificate = generate_identity(
        normalize_address(args.address), key_type=args.key_type, days=args.days
    )
    entry = home.keys.add_identity(key, certificate, passphrase=source)
    print(
        f"new identity {', '.join(entry.addresses)} ({entry.key_type}) in {home.keys.path}, sha256 {entry.fingerprint}"
    )
    if args.no_passphrase:
        print(_UNENCRYPTED_WARNING.format(path=home.keys.path), file=sys.stderr)


def _generate_files(args: argparse.Namespace) -> None:
    address = normalize_address(args.address)
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
    key, certificate = generate_identity(address, key_type=args.key_type, days=args.days)
    write_private_key(key_path, key, passphrase=passphrase, force=args.force)
    try:
        write_certificate(cert_path, certificate, force=args.force)
    except BaseException:
        os.unlink(key_path)
        raise
    from cryptography.hazmat.primitives import hashes

    fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    print(f"wrote {key_path} (private key, {'encrypted' if passphrase else 'NOT encrypted'})")
    print(f"wrote {cert_path} (certificate for {address}, SHA-256 fingerprint {fingerprint})")


def _new_passphrase(passphrase_file: str | None) -> bytes:
    """The passphrase for a new key file: from the file, the environment, or asked twice on a terminal."""
    passphrase = passphrase_from(passphrase_file, PASSPHRASE_ENV)
    if passphrase is None and sys.stdin is not None and sys.stdin.isatty():
        import getpass

        first = getpass.getpass("Passphrase for the new key: ")
        if first and getpass.getpass("Same passphrase again: ") != first:
            raise errors.UsageError("the two passphrases differ")
        passphrase = first.encode("utf-8") if first else None
    if passphrase is None:
        raise errors.UsageError(
            f"the private key needs a passphrase: set {PASSPHRASE_ENV}, use --passphrase-file FILE, "
            "run on a terminal to be asked, or give --no-passphrase to store it unencrypted"
        )
    return passphrase


def import_(args: argparse.Namespace) -> None:
    home = open_home(args)
    result = home.keys.import_file(args.file, passphrase=home.passphrase, password_file=args.password_file)
    for entry in result.imported:
        print(f"imported {entry.kind} {', '.join(entry.addresses) or entry.subject}  sha256 {entry.fingerprint[:16]}")
    for entry in result.unchanged:
        print(f"already present {', '.join(entry.addresses) or entry.subject}  sha256 {entry.fingerprint[:16]}")
    for entry in result.chain:
        print(f"kept CA certificate {entry.subject}  sha256 {entry.fingerprint[:16]}")
    for what, why in result.refused:
        print(f"refused {what}: {why}", file=sys.stderr)
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)


def _row(entry: CertificateEntry) -> str:
    addresses = ", ".join(entry.addresses) or "(no address)"
    until = entry.not_after.strftime("%Y-%m-%d")
    return f"{entry.fingerprint[:16]}  {entry.kind:9}  {entry.key_type:8}  {entry.status():13}  {until}  {addresses}"


def list_(args: argparse.Namespace) -> None:
    entries = open_home(args).keys.list()
    out = sys.stdout
    if args.json:
        json.dump([e.as_dict() for e in entries], out, indent=1)
        out.write("\n")
        return
    out.write("".join(_row(e) + "\n" for e in entries))


def show(args: argparse.Namespace) -> None:
    home = open_home(args)
    entries = home.keys.select(args.selector)
    if not entries:
        raise errors.NoRecipientCertificate(
            f"no certificate for {args.selector} in the key directory", address=args.selector
        )
    decision = home.settings.policy.decide(args.selector) if "@" in args.selector else None
    for entry in entries:
        for key, value in entry.as_dict().items():
            print(f"{key:12} {', '.join(value) if isinstance(value, list) else value}")
        print()
    if decision is not None:
        print(f"policy       {decision.policy}, profile {decision.profile.name} ({decision.reason})")


def export(args: argparse.Namespace) -> None:
    data = open_home(args).keys.export(args.selector, all=args.all, der=args.der)
    with Output(args.output) as out:
        assert out.file is not None
        out.file.write(data)
        out.commit()


def remove(args: argparse.Namespace) -> None:
    for entry in open_home(args).keys.remove(args.selector):
        print(f"removed {entry.kind} {', '.join(entry.addresses) or entry.subject}  sha256 {entry.fingerprint[:16]}")

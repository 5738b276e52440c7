"""The ``mailcrypt`` command: argument parsing and exit codes (DESIGN.md §6).

This module builds the parser and turns every ``MailcryptError`` into one
line on stderr and its exit code. The commands live beside it, one module
per concern (``crypt``: encrypt and decrypt; ``keys``: init and the key
directory), and are imported only when chosen, so that ``mailcrypt --help``
starts fast: at module level only argparse, importlib, os and sys load.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Not typing.TYPE_CHECKING: importing typing would cost every start (see above).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["main"]

_EXIT_STATUS = """\
exit status:
  0  success
  2  usage or configuration error (bad option, unreadable file, wrong passphrase)
  3  no key for this message (no matching identity, no recipient certificate)
  4  integrity failure or malformed input (tampered, truncated, not encrypted)
  5  signature invalid or replay
"""


class _Ordered(argparse.Action):
    """Append (option, value) to one shared list, keeping the command-line order.

    ``decrypt`` tries identities in the order the user named them, across
    ``--p12`` and ``--key``/``--cert``.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
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

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from importlib.metadata import version

        print(f"mailcrypt {version('mailcrypt')}")
        parser.exit()


_KEY_TYPES = ["rsa2048", "rsa3072", "rsa4096", "p256", "p384"]


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

    def command(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        run: str,
        help: str,
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(
            name, parents=[common], formatter_class=fmt, epilog=_EXIT_STATUS, help=help, description=description or help
        )
        sub.set_defaults(run=run)
        return sub

    init = command(
        commands,
        "init",
        "keys:init",
        "create a home with a configuration and an identity",
        "Create the mailcrypt home (--home, $MAILCRYPT_HOME or the user config directory) with "
        "config.toml, a key directory and a new identity for ADDRESS. The private key is encrypted with "
        "the passphrase from $MAILCRYPT_PASSPHRASE or a prompt.",
    )
    init.add_argument("address", metavar="ADDRESS", help="your e-mail address")
    init.add_argument("--key-type", choices=_KEY_TYPES, default="rsa3072", help="key type (default: rsa3072)")
    init.add_argument("--days", type=int, default=730, metavar="N", help="validity in days (default: 730)")
    init.add_argument(
        "--no-passphrase", action="store_true", help="store the private key UNENCRYPTED (unattended setups only)"
    )

    enc = command(
        commands,
        "encrypt",
        "crypt:encrypt",
        "encrypt an RFC 5322 message into an S/MIME message",
        "Read an RFC 5322 message and write it as an S/MIME encrypted message. Recipients: with --cert, "
        "every certificate in the files (with --to as well, only those for the addresses); without "
        "--cert, the --to addresses, or else the message's To and Cc, looked up in the home's key "
        "directory, plus your own certificate so you can read the sent copy.",
    )
    enc.add_argument("--to", metavar="ADDR", action="append", default=[], help="recipient address (repeatable)")
    enc.add_argument(
        "--cert",
        metavar="FILE",
        action="append",
        default=[],
        help="recipient certificate file, PEM (may hold several) or DER (repeatable)",
    )
    enc.add_argument(
        "--profile",
        choices=["compatible", "modern"],
        help="algorithm profile: compatible = "
        "AES-256-CBC, RSA PKCS#1 v1.5; modern = AES-256-GCM, RSA-OAEP (default: from the recipients' "
        "policy, compatible for --cert files)",
    )
    enc.add_argument(
        "--cipher",
        choices=["aes128-cbc", "aes256-cbc", "aes128-gcm", "aes256-gcm"],
        help="content cipher, overriding the profile's (GCM makes AuthEnvelopedData)",
    )
    enc.add_argument("--rsa-padding", choices=["pkcs1v15", "oaep"], help="RSA key transport, overriding the profile's")
    enc.add_argument(
        "--mixed-recipient-infos",
        action="store_true",
        help="let EC and RSA recipients share the message although the RSA recipients' clients are not known "
        "to read that (older Thunderbird cannot; default: only when the policy or their signed mail says so)",
    )
    enc.add_argument(
        "--from",
        dest="from_",
        metavar="ADDR",
        help="sender address whose identity signs and whose certificate is added (default: the message's From)",
    )
    signing = enc.add_mutually_exclusive_group()
    signing.add_argument(
        "--sign",
        action="store_true",
        default=None,
        help="sign inside the encryption (default: whenever the home holds an identity for the sender)",
    )
    signing.add_argument("--no-sign", dest="sign", action="store_false", help="do not sign")
    enc.add_argument("input", nargs="?", metavar="IN", help="message file (default: stdin)")
    enc.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout); written only on success")

    dec = command(
        commands,
        "decrypt",
        "read:decrypt",
        "decrypt an S/MIME message, verify its signatures",
        "Decrypt an S/MIME message with the identities named, tried in the order given; without any, "
        "with every identity in the home's key directory (old ones after renewal too). Signatures inside "
        "are verified; with a home, each message is accepted once and only inside the freshness window "
        "(replay protection), and signers' certificates are harvested into the key directory.",
    )
    dec.add_argument(
        "--p12",
        metavar="FILE",
        dest="sources",
        action=_Ordered,
        help="identity from a PKCS#12 file "
        "(repeatable); password from --password-file, $MAILCRYPT_P12_PASSWORD or a prompt",
    )
    dec.add_argument(
        "--key",
        metavar="KEY",
        dest="sources",
        action=_Ordered,
        help="private key file, PEM or DER, "
        "mode 0600 (repeatable, each with a --cert); passphrase from --password-file, "
        "$MAILCRYPT_PASSPHRASE or a prompt",
    )
    dec.add_argument(
        "--cert",
        metavar="CERT",
        dest="sources",
        action=_Ordered,
        help="certificate file for a --key (the n-th --cert belongs to the n-th --key)",
    )
    dec.add_argument(
        "--password-file",
        metavar="F",
        help="file whose first line is the password of the --p12 files and encrypted --key files (mode 0600)",
    )
    dec.add_argument(
        "--no-replay-check",
        action="store_true",
        help="read an old or already seen message on "
        "purpose: skip the replay and freshness check (signatures are still verified)",
    )
    dec.add_argument("input", nargs="?", metavar="IN", help="S/MIME message file (default: stdin)")
    dec.add_argument("-o", "--output", metavar="OUT", help="output file (default: stdout); written only on success")
    dec.set_defaults(sources=[])

    ver = command(
        commands,
        "verify",
        "read:verify",
        "verify the signatures of an S/MIME message",
        "Verify the S/MIME signatures of a message (detached or opaque, nested too) and say who signed, "
        "when, with what, and whether the certificate chains to a configured trust anchor. Does not "
        "decrypt and does not check for replays.",
    )
    ver.add_argument("input", nargs="?", metavar="IN", help="message file (default: stdin)")

    keys = commands.add_parser("keys", parents=[common], help="manage keys and certificates")
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)
    gen = command(
        keys_commands,
        "generate",
        "keys:generate",
        "new identity: private key + self-signed S/MIME certificate",
        "Generate a private key and a self-signed S/MIME certificate for ADDRESS and add "
        "them to the home's key directory, the key encrypted with the passphrase from "
        "$MAILCRYPT_PASSPHRASE, the configured passphrase file or a prompt. With -o DIR, write them "
        "instead as the files ADDRESS.key (PKCS#8 PEM, mode 0600) and ADDRESS.crt (PEM) in DIR; existing "
        "files are not overwritten without --force.",
    )
    gen.add_argument("address", metavar="ADDRESS", help="the e-mail address the certificate is for")
    gen.add_argument("--key-type", choices=_KEY_TYPES, default="rsa3072", help="key type (default: rsa3072)")
    gen.add_argument("--days", type=int, default=730, metavar="N", help="validity in days (default: 730)")
    gen.add_argument("-o", "--out-dir", metavar="DIR", help="write two files into DIR instead of the key directory")
    secret = gen.add_mutually_exclusive_group()
    secret.add_argument(
        "--passphrase-file",
        "--password-file",
        metavar="F",
        dest="passphrase_file",
        help="with -o: file whose first line is the passphrase for the new key (mode 0600)",
    )
    secret.add_argument("--no-passphrase", action="store_true", help="store the private key unencrypted")
    gen.add_argument("--force", action="store_true", help="with -o: overwrite existing files")

    imp = command(
        keys_commands,
        "import",
        "keys:import_",
        "add certificates or a PKCS#12 identity",
        "Import recipient certificates (PEM, several in one file, DER, or a PKCS#7 bundle), each filed "
        "under every e-mail address it names after validation; or a PKCS#12 file as your own identity "
        "(password from --password-file, $MAILCRYPT_P12_PASSWORD or a prompt).",
    )
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--password-file", metavar="F", help="file whose first line is the PKCS#12 password (mode 0600)")

    lst = command(keys_commands, "list", "keys:list_", "list certificates and identities")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    shw = command(keys_commands, "show", "keys:show", "show the certificates of an address or fingerprint")
    shw.add_argument("selector", metavar="ADDRESS|FINGERPRINT")
    exp = command(keys_commands, "export", "keys:export", "write the certificate of an address or fingerprint")
    exp.add_argument("selector", metavar="ADDRESS|FINGERPRINT")
    exp.add_argument("-o", "--output", metavar="FILE", help="output file (default: stdout)")
    exp.add_argument("--all", action="store_true", help="every certificate of the address, not just the one in use")
    exp.add_argument("--der", action="store_true", help="DER instead of PEM (one certificate)")
    rem = command(keys_commands, "remove", "keys:remove", "remove recipient certificates, or one entry by fingerprint")
    rem.add_argument("selector", metavar="ADDRESS|FINGERPRINT")

    # --- the SMTP proxy: proxy, users (DESIGN.md §6)
    prx = command(
        commands,
        "proxy",
        "proxy:run",
        "run the SMTP proxy (foreground; SIGTERM stops it cleanly)",
        "Run the SMTP proxy: mail clients send through it, and every message leaves encrypted for each "
        "recipient and the sender, to the [upstream] server or, without one, into the outbox Maildir.",
    )
    prx.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default: proxy.listen)")
    users = commands.add_parser("users", parents=[common], help="manage the proxy's AUTH users")
    users_commands = users.add_subparsers(dest="users_command", metavar="USERS_COMMAND", required=True)
    uadd = command(
        users_commands,
        "add",
        "proxy:users_add",
        "add a proxy user",
        "Add a user who may send through the proxy. The password is read from standard input (first "
        "line) when it is not a terminal, else asked for twice; it is stored as an scrypt hash.",
    )
    uadd.add_argument("name", metavar="NAME")
    uadd.add_argument("--replace", action="store_true", help="set a new password for an existing user")
    urem = command(users_commands, "remove", "proxy:users_remove", "remove a proxy user")
    urem.add_argument("name", metavar="NAME")
    command(users_commands, "list", "proxy:users_list", "list the proxy users")

    # --- the IMAP fetcher: fetch (DESIGN.md §6)
    fetch = command(
        commands,
        "fetch",
        "fetch:run",
        "fetch mail over IMAP, decrypt and verify it, deliver it into a Maildir",
        "Read the folders of the configured [[accounts]] over IMAP, only what is new since the last run, "
        "decrypt and verify S/MIME mail with the home's identities, check it for replays, and deliver it "
        "as readable mail into a Maildir (default: mail/ in the home) that any mail client or mutt -f can "
        "open. Mail that cannot be delivered readable (no key, broken, bad signature, replay) goes to the "
        "Quarantine folder unchanged. The server's messages and flags are left as they are unless "
        "--mark-seen is given. Exit status: 0 all delivered; 3, 4 or 5 some quarantined (the most "
        "serious reason: 5 signature/replay, 4 malformed, 3 no key); 1 failures; 2 configuration, login "
        "or UIDVALIDITY change.",
    )
    fetch.add_argument("--account", metavar="NAME", help="fetch only this [[accounts]] entry (default: all)")
    fetch.add_argument(
        "--folder",
        metavar="NAME",
        action="append",
        default=[],
        help="server folder to fetch (repeatable; default: the account's folders)",
    )
    fetch.add_argument(
        "--to",
        metavar="maildir:PATH|imap:FOLDER",
        help="deliver there instead of the account's target (imap:FOLDER stores the decrypted mail on the server)",
    )
    fetch.add_argument("--watch", action="store_true", help="keep running: wait for new mail with IMAP IDLE")
    fetch.add_argument("--since", metavar="DATE", help="on a folder's first sync, only mail since DATE (YYYY-MM-DD)")
    fetch.add_argument("--mark-seen", action="store_true", help="set \\Seen on the server for mail fetched")
    fetch.add_argument(
        "--accept-uidvalidity",
        action="store_true",
        help="after the server renumbered a folder (UIDVALIDITY changed), fetch it again from the start",
    )

    return parser


def _resolve(run: str) -> Callable[[argparse.Namespace], object]:
    """``"module:function"`` inside mailcrypt.cli, imported only now."""
    module, function = run.split(":")
    return getattr(importlib.import_module(f"mailcrypt.cli.{module}"), function)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (DESIGN.md §6)."""
    args = _build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", 0) or 0
    from mailcrypt import errors
    from mailcrypt.cli.report import fail

    try:
        _resolve(args.run)(args)
        return 0
    except errors.MailcryptError as exc:
        return fail(str(exc), exc.exit_code)
    except BrokenPipeError:
        # The reader went away; there is nobody to tell, and stdout is unusable.
        _silence_stdout()
        return 1
    except OSError as exc:
        if exc.filename is not None:
            return fail(f"{exc.filename}: {exc.strerror or exc}", 2)
        return fail(str(exc), 2)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        return fail(
            f"internal error: {type(exc).__name__}: {exc}" + ("" if verbose else " (run with -v for details)"), 1
        )


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

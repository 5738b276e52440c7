"""``mailcrypt encrypt``: its description and arguments; the handler is ``mailcrypt.cli.crypt.encrypt``."""

from __future__ import annotations

import argparse

__all__ = ["DESCRIPTION", "arguments"]

#: The description of ``mailcrypt encrypt`` in its help.
DESCRIPTION = (
    "Read an RFC 5322 message and write it as an S/MIME encrypted message. Recipients: with --cert, "
    "every certificate in the files (with --to as well, only those for the addresses); without "
    "--cert, the --to addresses, or else the message's To and Cc, looked up in the home's key "
    "directory, plus your own certificate so you can read the sent copy."
)


def arguments(enc: argparse.ArgumentParser) -> None:
    """Add the arguments of ``encrypt``."""
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

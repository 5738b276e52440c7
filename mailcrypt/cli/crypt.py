"""``mailcrypt encrypt``: sign (when the sender has an identity), then encrypt.

Recipients come from certificate files named on the command line, or else
from the home's key directory, plus the sender's own certificate. The
profile is the one asked for, else the one the recipients' policy and
announced capabilities give (DESIGN.md §1: ``modern`` only if every
recipient can read it); the choice and its reason are reported with ``-v``.
Everything cryptographic happens in the MIME layer's one sign-then-encrypt
pipeline (``mailcrypt.mime.pipeline``), which the SMTP proxy uses too.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import IO

from cryptography import x509

from mailcrypt import errors
from mailcrypt.cli.files import Output, open_input, read_headers
from mailcrypt.cli.home import Home, home_if_any, open_home
from mailcrypt.cli.report import note
from mailcrypt.envelope import Identity
from mailcrypt.keydir import certificates_for, load_certificates
from mailcrypt.mime import ChainReader, encrypt_stream, recipient_addresses, sender_address
from mailcrypt.policy import COMPATIBLE, PROFILES, Profile, common_profile

__all__ = ["encrypt"]


def _with_overrides(profile: Profile, args: argparse.Namespace) -> Profile:
    changes = {k: v for k, v in (("cipher", args.cipher), ("rsa_padding", args.rsa_padding)) if v}
    return profile.with_options(**changes) if changes else profile


def _unique(certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The certificates in order, each once (certificates compare by their DER encoding)."""
    return list(dict.fromkeys(certificates))


def _select(certificates: list[x509.Certificate], addresses: list[str]) -> list[x509.Certificate]:
    """The --cert certificates for each address; ``NoRecipientCertificate`` for the first without one."""
    chosen = []
    for address in addresses:
        matches = certificates_for(address, certificates)
        if not matches:
            raise errors.NoRecipientCertificate(f"no certificate for {address} among the --cert files", address=address)
        chosen.extend(matches)
    return _unique(chosen)


def _signing_identity(home: Home, sender: str) -> Identity | None:
    """The sender's newest valid identity that may sign (keyUsage digitalSignature), or None."""
    from mailcrypt.pki import names_address

    now = datetime.now(UTC)
    for identity in home.keys.identities(home.passphrase):
        certificate = identity.certificate
        if not names_address(certificate, sender):
            continue
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            continue
        if identity.ref.key_usage_allows("digital_signature"):
            return identity
    return None


def _sign(
    args: argparse.Namespace,
    infile: IO[bytes],
    home: Home | None,
    sender: str | None,
    *,
    signing_time: datetime | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> ChainReader | None:
    """The message signed by the sender (DESIGN.md §2: sign, then encrypt), or None when not signing.

    ``--sign`` demands an identity; by default a message is signed whenever
    the home holds one for the sender; ``--no-sign`` never signs. Signing is
    the MIME layer's one pipeline (``sign_message_parts``), the proxy's too;
    ``signing_time`` (default now) and ``rng`` go to it.
    """
    if args.sign is False:
        return None
    if home is None or sender is None:
        if args.sign:
            raise errors.UsageError("--sign needs a home with your identity and a From address (or --from ADDR)")
        return None
    identity = _signing_identity(home, sender)
    if identity is None:
        if args.sign:
            raise errors.NoKeyError(f"no valid signing identity for {sender} in {home.keys.path}")
        note(args, f"not signing: no identity for {sender}")
        return None
    from mailcrypt.envelope import Signer
    from mailcrypt.mime import sign_message_parts

    signer = Signer.from_identity(identity)
    when = signing_time if signing_time is not None else datetime.now(UTC)
    signed = sign_message_parts(infile.read(), signer, signing_time=when, rng=rng)
    note(args, f"signed as {identity.label} (SHA-256, signingTime {'now' if signing_time is None else when})")
    return ChainReader(signed.parts)


def encrypt(args: argparse.Namespace) -> None:
    certificates = [c for path in args.cert for c in load_certificates(path)]
    with open_input(args.input) as infile:
        headers = read_headers(infile)
        sender = args.from_ or sender_address(headers)
        if certificates:
            # Key files named: exactly those (or those of them for --to).
            recipients = _select(certificates, args.to) if args.to else _unique(certificates)
            profile, why = (PROFILES[args.profile], "asked for") if args.profile else (COMPATIBLE, "the default")
            home = home_if_any(args) if args.sign is not False else None
        else:
            addresses = args.to or recipient_addresses(headers)
            if not addresses:
                raise errors.UsageError("no recipients: the message has no To or Cc address; use --to ADDR")
            home = open_home(args)
            recipients, profile, why = _directory_recipients(args, home, addresses, sender)
        profile = _with_overrides(profile, args)
        signed = _sign(args, infile, home, sender)
        note(
            args,
            f"encrypting to {len(recipients)} certificate(s) with profile {profile.name} ({why}): "
            f"{profile.cipher}, RSA {profile.rsa_padding}, ECDH {profile.ecdh_kdf_hash} KDF",
        )
        with Output(args.output) as out:
            assert out.file is not None
            encrypt_stream(signed or infile, out.file, recipients, profile=profile)
            out.commit()


def _directory_recipients(
    args: argparse.Namespace, home: Home, addresses: list[str], sender: str | None
) -> tuple[list[x509.Certificate], Profile, str]:
    """Certificates and profile for ``addresses`` from the key directory, plus the sender's own."""
    from mailcrypt.keydir import advertised
    from mailcrypt.state import Store

    store = Store.open(home.settings.state_db)
    try:
        choices = home.keys.recipients_for(addresses, advertised=advertised(store))
    finally:
        store.close()
    recipients = _unique([c.certificate for c in choices])
    profiles = [c.profile for c in choices]
    # DESIGN.md §1: the sender's own certificate too, so the sent copy stays readable.
    me = sender or home.settings.identity.address
    own = home.keys.sender_certificate(me) if me else None
    if me is not None and own is not None and own not in recipients:
        recipients.append(own)
        # The sender's copy is read with mailcrypt, which reads every profile; only a
        # profile the administrator set for the sender's own address restricts it.
        decision = home.settings.policy.decide(me)
        if decision.profile_set:
            profiles.append(decision.profile)
    if args.profile:
        return recipients, PROFILES[args.profile], "asked for"
    profile = common_profile(profiles)
    if profile.name == "modern":
        return recipients, profile, "every recipient's policy or announced capabilities allow modern"
    return recipients, profile, "at least one recipient is not known to read modern"

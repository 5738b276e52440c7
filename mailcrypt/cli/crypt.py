"""``mailcrypt encrypt``: sign (when the sender has an identity), then encrypt.

Recipients come from certificate files named on the command line, or else
from the home's key directory, plus the sender's own certificate. The
profile is the one asked for, else the one the recipients' policy and
announced capabilities give (DESIGN.md §1: ``modern`` only if every
recipient can read it); the choice and its reason are reported with ``-v``.
Everything cryptographic happens in the MIME layer's one sign-then-encrypt
pipeline (``mailcrypt.mime.pipeline``), which the SMTP proxy uses too.

One output is one envelope, so it must be readable by every recipient
(DESIGN.md §1 "Readable by every recipient"): older NSS (3.87, many
installed Thunderbirds) cannot read an envelope that holds any key agreement
(EC) RecipientInfo. Recipients whose certificates mix EC with RSA are
refused (exit 2) unless every RSA recipient is known to read that
(``mixed_recipient_infos`` in the policy, ECDH announced in their signed
mail, or ``--mixed-recipient-infos``), with a message saying how to split
them. The sender's own certificate never makes the output unreadable: an EC
own certificate that cannot join is left out with a warning — the sender
still has the message they encrypted, the recipients could not read it
otherwise. With ``--cert`` files, the sender's own is any file naming the
sender's address, and nothing is known about the other recipients.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from cryptography import x509

from mailcrypt import errors
from mailcrypt.cli.files import Output, open_input, read_headers
from mailcrypt.cli.home import Home, home_if_any, open_home
from mailcrypt.cli.report import note, warn
from mailcrypt.envelope import Identity, uses_key_agreement
from mailcrypt.keydir import certificates_for, load_certificates
from mailcrypt.mime import ChainReader, encrypt_stream, recipient_addresses, sender_address
from mailcrypt.policy import COMPATIBLE, PROFILES, Profile, common_profile, readable_together

__all__ = ["encrypt"]


@dataclass(frozen=True)
class _Member:
    """One recipient certificate of the output, for ``mailcrypt.policy.readable_together``."""

    address: str
    certificate: x509.Certificate
    key_agreement: bool
    reads_key_agreement: bool


def _member(address: str, certificate: x509.Certificate, *, reads: bool) -> _Member:
    agreement = uses_key_agreement(certificate)
    return _Member(address, certificate, agreement, reads or agreement)


def _label(certificate: x509.Certificate) -> str:
    from mailcrypt.pki import certificate_addresses

    addresses = certificate_addresses(certificate)
    return addresses[0] if addresses else certificate.subject.rfc4514_string()


def _readable(members: list[_Member], own: Sequence[_Member]) -> list[x509.Certificate]:
    """The certificates of one envelope every recipient can read (see the module docstring).

    ``own`` are the sender's certificates, kept where they fit and left out
    with a warning elsewhere. Raises ``UsageError`` when the recipients
    themselves cannot share one envelope.
    """
    unknown = ", ".join(m.address for m in members if not m.reads_key_agreement)
    if not readable_together(members):
        agreeing = ", ".join(m.address for m in members if m.key_agreement)
        raise errors.UsageError(
            f"one message cannot be read by every recipient: {unknown} (RSA) not known to read an envelope that "
            f"also holds key agreement for the EC certificates of {agreeing}, which older clients (Thunderbird "
            "with NSS 3.87) cannot read at all; encrypt once for each group (--to), or, if their clients read "
            "it, set mixed_recipient_infos = true for them in the policy or give --mixed-recipient-infos"
        )
    certificates = _unique([m.certificate for m in members])
    for mine in own:
        if mine.certificate in certificates:
            continue
        if readable_together([*members, mine]):
            certificates.append(mine.certificate)
        else:
            warn(
                f"your own EC certificate ({mine.address}) is left out: {unknown} not known to read an envelope "
                "that also holds key agreement, so only the recipients can decrypt the output (keep your "
                "original; mixed_recipient_infos = true in the policy says their clients read it)"
            )
    return certificates


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
            chosen = _select(certificates, args.to) if args.to else _unique(certificates)
            mine = certificates_for(sender, chosen) if sender else []
            others = [_member(_label(c), c, reads=args.mixed_recipient_infos) for c in chosen if c not in mine]
            own = [_member(_label(c), c, reads=True) for c in mine]
            recipients = _readable(others, own)
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
    # DESIGN.md §1: the sender's own certificate too, so the sent copy stays readable,
    # unless it would make the message unreadable to a recipient (module docstring).
    me = sender or home.settings.identity.address
    own = home.keys.sender_certificate(me) if me else None
    members = [
        _Member(c.address, c.certificate, c.key_agreement, c.reads_key_agreement or args.mixed_recipient_infos)
        for c in choices
        if c.certificate != own
    ]
    mine = [_member(me, own, reads=True)] if me is not None and own is not None else []
    recipients = _readable(members, mine)
    profiles = [c.profile for c in choices if c.certificate in recipients]
    if me is not None and own is not None and own in recipients:
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

"""``mailcrypt encrypt`` and ``mailcrypt decrypt``.

Recipients and identities come from key files named on the command line,
or else from the home's key directory. The profile is the one asked for,
else the one the recipients' policy gives (DESIGN.md §1: ``modern`` only if
every recipient gets it), and the choice and its reason are reported with
``-v``. Everything cryptographic happens in ``mailcrypt.smime``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cryptography import x509

from mailcrypt import errors, keyfiles, smime
from mailcrypt.cli.files import Output, open_input, read_headers
from mailcrypt.cli.home import open_home
from mailcrypt.cli.report import note
from mailcrypt.envelope import identity_from_key
from mailcrypt.policy import COMPATIBLE, PROFILES, Profile, common_profile

__all__ = ["encrypt", "decrypt"]


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
        matches = keyfiles.certificates_for(address, certificates)
        if not matches:
            raise errors.NoRecipientCertificate(f"no certificate for {address} among the --cert files", address=address)
        chosen.extend(matches)
    return _unique(chosen)


def encrypt(args: argparse.Namespace) -> None:
    certificates = [c for path in args.cert for c in keyfiles.load_certificates(path)]
    with open_input(args.input) as infile:
        if certificates:
            # Key files named: exactly those (or those of them for --to), no home needed.
            recipients = _select(certificates, args.to) if args.to else _unique(certificates)
            profile, why = (PROFILES[args.profile], "asked for") if args.profile else (COMPATIBLE, "the default")
        else:
            addresses = args.to or smime.recipient_addresses(read_headers(infile))
            if not addresses:
                raise errors.UsageError("no recipients: the message has no To or Cc address; use --to ADDR")
            home = open_home(args)
            choices = home.keys.recipients_for(addresses)
            recipients = _unique([c.certificate for c in choices])
            # DESIGN.md §1: the sender's own certificate too, so the sent copy stays readable.
            me = home.settings.identity.address
            own = home.keys.sender_certificate(me) if me else None
            profiles = [c.profile for c in choices]
            if own is not None and own not in recipients:
                recipients.append(own)
                # The sent copy is read by whatever client the sender uses: their policy counts too.
                profiles.append(home.settings.policy.decide(me).profile)
            if args.profile:
                profile, why = PROFILES[args.profile], "asked for"
            else:
                profile = common_profile(profiles)
                why = (
                    "every recipient's policy allows modern"
                    if profile.name == "modern"
                    else ("at least one recipient's policy asks for compatible")
                )
        profile = _with_overrides(profile, args)
        note(
            args,
            f"encrypting to {len(recipients)} certificate(s) with profile {profile.name} ({why}): "
            f"{profile.cipher}, RSA {profile.rsa_padding}, ECDH {profile.ecdh_kdf_hash} KDF",
        )
        with Output(args.output) as out:
            smime.encrypt_stream(infile, out.file, recipients, profile=profile)
            out.commit()


def _file_identities(args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    """The identities named by --p12 and --key/--cert, in command-line order."""
    keys = [v for option, v in args.sources if option == "--key"]
    certs = [v for option, v in args.sources if option == "--cert"]
    if len(keys) != len(certs):
        raise errors.UsageError(f"each --key needs a --cert (got {len(keys)} --key and {len(certs)} --cert)")
    pairs = []
    key_index = 0
    for option, value in args.sources:
        if option == "--p12":
            pairs.append(keyfiles.load_pkcs12(value, password_file=args.password_file))
        elif option == "--key":
            pairs.append(keyfiles.load_key_pair(value, certs[key_index], password_file=args.password_file))
            key_index += 1
    return [identity_from_key(p.key, p.certificate) for p in pairs]


def decrypt(args: argparse.Namespace) -> None:
    if args.sources:
        identities = _file_identities(args)
    else:
        home = open_home(args)
        identities = home.keys.identities(home.passphrase)
        note(args, f"trying {len(identities)} identit{'y' if len(identities) == 1 else 'ies'} from {home.keys.path}")
    with open_input(args.input) as infile, Output(args.output) as out:
        info = smime.decrypt_stream(infile, out.file, identities)
        out.commit()
    note(args, f"decrypted with {info.identity.label} ({info.content_type}, {info.cipher}, {info.key_management})")

"""``mailcrypt decrypt`` and ``mailcrypt verify``: open, check, remember.

``decrypt`` removes every S/MIME layer through ``mailcrypt.mime.decrypt_file``:
the outer envelope is decrypted as a stream (a 25 MB message is never held
whole) into a private temporary file, and whatever is inside it, a signature
or another envelope, is removed and verified in memory (a bad signature is
exit 5). The replay guard of DESIGN.md §2 then accepts each message once
inside the freshness window around its arrival, the date of its topmost
``Received`` field (added by the receiving server), else now (exit 5
otherwise, with when it was first seen or signed, and naming
``--no-replay-check``, which re-reads an old message on purpose), and the signer's
certificate and capabilities are harvested into the key directory when the
configuration allows. Only when all of that succeeded is the message
published: renamed onto ``-o OUT`` or copied to standard output. On any
failure nothing is created and nothing is printed.

``verify`` checks signatures and certificate chains only: it neither
decrypts nor touches the replay cache. With ``[keys] trust_anchors``
configured, a signer whose chain is not valid (invalid, revoked, unknown
issuer, or a path mailcrypt cannot judge) is exit 5 with the reason on
stderr: the signature holds, but proves nothing about who made it.
Without anchors the chain is "not checked" and the exit status is 0.
A signature with SHA-1 or MD5 is no proof either: ``decrypt`` writes the
content and says so, ``verify`` exits 5.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, NoReturn

from cryptography import x509

from mailcrypt import errors
from mailcrypt.cli.files import check_output_directory, open_input, read_headers
from mailcrypt.cli.home import Home, home_if_any, open_home
from mailcrypt.cli.report import note, warn
from mailcrypt.envelope import Identity, identity_from_key
from mailcrypt.keydir import load_key_pair, load_pkcs12
from mailcrypt.mime import Verification, decrypt_file, received_time, sender_address

# The replay store and harvesting are imported where they are needed: a
# large encrypted message read with key files and no home needs neither,
# and their import time counts in every such run.
if TYPE_CHECKING:
    from mailcrypt.mime import Unwrapped
    from mailcrypt.pki import RevocationChecker
    from mailcrypt.state import Store

__all__ = ["decrypt", "verify"]

def _file_identities(args: argparse.Namespace) -> list[Identity]:
    """The identities named by --p12 and --key/--cert, in command-line order."""
    keys = [v for option, v in args.sources if option == "--key"]
    certs = [v for option, v in args.sources if option == "--cert"]
    if len(keys) != len(certs):
        raise errors.UsageError(f"each --key needs a --cert (got {len(keys)} --key and {len(certs)} --cert)")
    pairs = []
    key_index = 0
    for option, value in args.sources:
        if option == "--p12":
            pairs.append(load_pkcs12(value, password_file=args.password_file))
        elif option == "--key":
            pairs.append(load_key_pair(value, certs[key_index], password_file=args.password_file))
            key_index += 1
    return [identity_from_key(p.key, p.certificate) for p in pairs]


def _anchors(home: Home | None) -> Sequence[x509.Certificate]:
    # The key directory loaded them when the home was opened.
    return () if home is None else home.keys.trust_anchors


def _revocation(home: Home | None) -> RevocationChecker | None:
    # Built with the key directory from [keys] revocation; None when off or without anchors.
    return None if home is None else home.keys.revocation


def _with_remedy(exc: errors.ReplayError) -> errors.ReplayError:
    """``exc`` again, its message naming the option that reads such a message anyway."""
    remedy = f"{exc}; to read it anyway, run decrypt with --no-replay-check"
    if isinstance(exc, errors.StaleMessage):
        return errors.StaleMessage(remedy, signing_time=exc.signing_time, window=exc.window)
    if isinstance(exc, errors.ReplayedMessage):
        return errors.ReplayedMessage(remedy, first_seen=exc.first_seen, digest=exc.digest, kind=exc.kind)
    return exc


def _replay_check(
    args: argparse.Namespace, home: Home | None, unwrapped: Unwrapped, now: datetime, arrival: datetime | None
) -> Store | None:
    """Accept the message once (DESIGN.md §2); returns the open store for harvesting, or None.

    ``arrival`` is when the message reached the user's server (None: now).
    """
    if home is None:
        note(args, "no home: the replay check needs its state store and was skipped")
        return None
    from mailcrypt.state import ReplayGuard, Store

    store = Store.open(home.settings.state_db)
    if args.no_replay_check:
        note(args, "replay check skipped (--no-replay-check)")
        return store
    replay = home.settings.replay
    guard = ReplayGuard(
        store, max_age=timedelta(days=replay.max_age_days), future_skew=timedelta(seconds=replay.future_skew_seconds)
    )
    try:
        try:
            guard.accept_unwrapped(unwrapped, now, arrival=arrival)
        except errors.ReplayError as exc:
            raise _with_remedy(exc) from None
        guard.prune(now)
    except BaseException:
        store.close()
        raise
    return store


def decrypt(args: argparse.Namespace) -> None:
    home = home_if_any(args)
    if args.sources:
        identities = _file_identities(args)
    else:
        home = home or open_home(args)  # Without key files or a home this says how to make one.
        identities = home.keys.identities(home.passphrase)
        note(args, f"trying {len(identities)} identit{'y' if len(identities) == 1 else 'ies'} from {home.keys.path}")
    now = datetime.now(UTC)
    destination = None if args.output in (None, "-") else args.output
    if destination is not None:
        check_output_directory(destination)
    # The replay guard needs the outer envelope's digest (a hash over all its ciphertext) only when it runs.
    checked = home is not None and not args.no_replay_check
    with open_input(args.input) as infile:
        # Read before decrypting (the file is rewound): the topmost Received field, if any, dates the arrival.
        arrival = received_time(read_headers(infile)) if checked else None
        _decrypt(args, home, identities, infile, destination, now, arrival)


def _decrypt(
    args: argparse.Namespace,
    home: Home | None,
    identities: Sequence[Identity],
    infile: IO[bytes],
    destination: str | None,
    now: datetime,
    arrival: datetime | None,
) -> None:
    """Decrypt ``infile`` (see the module docstring); publish only if every check passed."""
    checked = home is not None and not args.no_replay_check
    with (
        decrypt_file(
            infile,
            identities,
            destination=destination,
            verify=Verification(now=now, trust_anchors=_anchors(home), revocation=_revocation(home)),
            replay_digest=checked,
        ) as plaintext,
    ):
        unwrapped = plaintext.unwrapped
        for layer in unwrapped.layers:
            info = layer.envelope
            if info is not None:
                note(
                    args,
                    f"decrypted with {info.identity.label} ({info.content_type}, {info.cipher}, {info.key_management})",
                )
            else:
                note(args, layer.describe())
        for layer in unwrapped.weak_signatures:
            assert layer.signature is not None
            sig = layer.signature
            warn(f"the signature of {sig.signer} uses {sig.weak_description} and is not accepted as proof")
        store = _replay_check(args, home, unwrapped, now, arrival)
        try:
            if store is not None and home is not None and home.settings.keys.harvest:
                from mailcrypt.keydir import harvest

                sender = sender_address(read_headers(plaintext.file))
                for line in harvest(
                    unwrapped,
                    sender=sender,
                    keys=home.keys,
                    store=store,
                    now=now,
                    trusted_only=bool(home.keys.trust_anchors),
                ):
                    note(args, line)
        finally:
            if store is not None:
                store.close()
        plaintext.publish(None if destination is not None else sys.stdout.buffer)


def verify(args: argparse.Namespace) -> None:
    home = home_if_any(args)
    anchors = _anchors(home)

    def refuse(_message: bytes) -> NoReturn:
        raise errors.NoKeyError("the message is encrypted: mailcrypt verify checks signatures only; use decrypt")

    from mailcrypt.mime import unwrap_message

    with open_input(args.input) as infile:
        unwrapped = unwrap_message(
            infile.read(), now=datetime.now(UTC), trust_anchors=anchors, decrypt=refuse, revocation=_revocation(home)
        )
    if not unwrapped.signatures:
        raise errors.NotSignedError("not an S/MIME signed message")
    weak = unwrapped.weak_signatures
    if weak:
        # Nothing on the output on failure (DESIGN.md §6): one line on stderr says why.
        sig = weak[0].signature
        assert sig is not None
        raise errors.WeakSignature(
            f"the signature of {sig.signer} uses {sig.weak_description}, which is not accepted as proof"
            " (the message can still be read with decrypt)",
            hashes=sig.weak_hashes,
        )
    if anchors:
        # Checked before anything is printed: on failure nothing goes to the output.
        for layer in unwrapped.signatures:
            assert layer.chain is not None and layer.signature is not None
            if not layer.chain.trusted:
                # DESIGN.md §6: an invalid, revoked or unknown-issuer chain is no proof (exit 5).
                what = "is revoked" if layer.chain.revoked else "is not trusted"
                raise errors.UntrustedSigner(
                    f"the signer {layer.signature.signer} {what}: certificate chain"
                    f" {layer.chain.status} ({layer.chain.reason})",
                    status=layer.chain.status,
                    reason=layer.chain.reason,
                )
    for layer in unwrapped.signatures:
        print(layer.describe())

"""``mailcrypt decrypt`` and ``mailcrypt verify``: open, check, remember.

``decrypt`` removes every S/MIME layer: the outer envelope is decrypted as
a stream (a 25 MB message is never held whole), and whatever is inside it,
a signature or another envelope, is removed in memory by
``mailcrypt.mime.unwrap``. Signatures are verified (a bad one is exit 5), the
replay guard of DESIGN.md §2 accepts each message once inside the freshness
window (exit 5 otherwise, with when it was first seen; ``--no-replay-check``
re-reads an old message on purpose), and the signer's certificate and
capabilities are harvested into the key directory when the configuration
allows. The output is published only when all of that succeeded.

``verify`` checks signatures and certificate chains only: it neither
decrypts nor touches the replay cache.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, NoReturn

from cryptography import x509

from mailcrypt import errors
from mailcrypt.cli.files import Output, open_input, read_headers
from mailcrypt.cli.home import Home, home_if_any, open_home
from mailcrypt.cli.report import note
from mailcrypt.envelope import Identity, envelope_digest, identity_from_key
from mailcrypt.keydir import load_key_pair, load_pkcs12
from mailcrypt.mime import content_type, decrypt_stream, sender_address, split_fields

# Signatures, the replay store and harvesting are imported where they are
# needed: a large encrypted message read with key files and no home needs
# none of them, and their import time counts in every such run.
if TYPE_CHECKING:
    from mailcrypt.mime import Unwrapped
    from mailcrypt.pki import RevocationChecker
    from mailcrypt.state import Store

__all__ = ["decrypt", "verify"]

_SMIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime", "multipart/signed")


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


def _is_smime(infile: IO[bytes]) -> bool:
    """Whether the message in ``infile`` (rewound afterwards) has an S/MIME layer at its top."""
    ctype, params = content_type(split_fields(read_headers(infile)))
    if ctype == "multipart/signed":
        return params.get("protocol", "").lower() in ("application/pkcs7-signature", "application/x-pkcs7-signature")
    return ctype in _SMIME_TYPES


def _unwrap(
    message: bytes,
    identities: Sequence[Identity],
    anchors: Sequence[x509.Certificate],
    now: datetime,
    revocation: RevocationChecker | None,
) -> Unwrapped:
    from mailcrypt.mime import unwrap_message

    return unwrap_message(message, identities, now=now, trust_anchors=anchors, revocation=revocation)


def _read(
    args: argparse.Namespace,
    infile: IO[bytes],
    out: Output,
    identities: Sequence[Identity],
    anchors: Sequence[x509.Certificate],
    now: datetime,
    *,
    replay_key: bool,
    revocation: RevocationChecker | None = None,
) -> Unwrapped:
    """Remove every layer of the message in ``infile``; the final message ends up in ``out.file``.

    The outer envelope streams into ``out.file``; if what it held is S/MIME
    again, that is read back and unwrapped in memory. A message whose top
    is not an envelope (signed only) is unwrapped in memory from the start.
    The outer envelope's digest (a hash over all its ciphertext) is taken
    only when ``replay_key`` says the replay guard will use it.
    """
    assert out.file is not None
    digests: list[bytes] = []
    try:
        info = decrypt_stream(
            infile,
            out.file,
            identities,
            on_envelope=(lambda der: digests.append(envelope_digest(der))) if replay_key else None,
        )
    except errors.NotEncryptedError:
        infile.seek(0)
        if not _is_smime(infile):
            raise
        unwrapped = _unwrap(infile.read(), identities, anchors, now, revocation)
        out.file.seek(0)
        out.file.truncate()
        out.file.write(unwrapped.message)
        return unwrapped
    from mailcrypt.mime import Layer, Unwrapped

    outer = Layer("enveloped", info.content_type, digests[0] if digests else b"", envelope=info)
    out.file.seek(0)
    if not _is_smime(out.file):
        out.file.seek(0, 2)
        return Unwrapped(b"", (outer,))
    inner = _unwrap(out.file.read(), identities, anchors, now, revocation)
    out.file.seek(0)
    out.file.truncate()
    out.file.write(inner.message)
    return Unwrapped(b"", (outer, *inner.layers))


def _replay_check(args: argparse.Namespace, home: Home | None, unwrapped: Unwrapped, now: datetime) -> Store | None:
    """Accept the message once (DESIGN.md §2); returns the open store for harvesting, or None."""
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
        guard.accept_unwrapped(unwrapped, now)
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
    with open_input(args.input) as infile, Output(args.output) as out:
        checked = home is not None and not args.no_replay_check
        unwrapped = _read(
            args, infile, out, identities, _anchors(home), now, replay_key=checked, revocation=_revocation(home)
        )
        for layer in unwrapped.layers:
            info = layer.envelope
            if info is not None:
                note(
                    args,
                    f"decrypted with {info.identity.label} ({info.content_type}, {info.cipher}, {info.key_management})",
                )
            else:
                note(args, layer.describe())
        store = _replay_check(args, home, unwrapped, now)
        try:
            if store is not None and home is not None and home.settings.keys.harvest:
                from mailcrypt.keydir import harvest

                assert out.file is not None
                out.file.seek(0)
                sender = sender_address(read_headers(out.file))
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
        out.commit()


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
    for layer in unwrapped.signatures:
        print(layer.describe())
    for layer in unwrapped.signatures:
        # DESIGN.md §6: a revoked signer's signature is no proof (exit 5).
        if layer.chain is not None and layer.chain.revoked and layer.signature is not None:
            raise errors.UntrustedSigner(
                f"the signer {layer.signature.signer} is revoked: {layer.chain.reason}",
                status=layer.chain.status,
                reason=layer.chain.reason,
            )

"""The sender's side of a message: the own copy's certificate and the signing key.

DESIGN.md §1 encrypts every envelope to the sender too, so the sent copy
stays readable; DESIGN.md §2 signs inside the encryption whenever the
sender has an identity. ``Senders.load`` unlocks the home's identities once
at start (passphrase from ``$MAILCRYPT_PASSPHRASE``, ``keys.passphrase_file``
or a prompt on the terminal); when they cannot be unlocked the proxy still
encrypts, says loudly that it will not sign, and the log of every message
says so too.

The sender of a message is the first of: the From address, the MAIL FROM
address, ``[identity] address`` — the first one we hold a certificate for.

What it won't do: sign or encrypt (``groups`` does), or keep anything on disk.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography import x509

from mailcrypt import errors
from mailcrypt.addresses import address_key
from mailcrypt.config import Settings
from mailcrypt.keydir import KeyDirectory, PassphraseSource
from mailcrypt.pki import fingerprint
from mailcrypt.policy import COMPATIBLE, PolicyTable
from proxy.groups import SenderKeys

if TYPE_CHECKING:
    from mailcrypt.envelope import Signer

__all__ = ["Senders"]

log = logging.getLogger(__name__)

_CACHE_SECONDS = 300.0


def _signers(identities: Sequence[object]) -> dict[str, Signer]:
    """A ``Signer`` per identity certificate fingerprint (empty when signing is not available)."""
    try:
        from mailcrypt.envelope import Signer
    except ImportError:
        return {}
    out: dict[str, Signer] = {}
    for identity in identities:
        certificate = getattr(identity, "certificate", None)
        if certificate is None:
            continue
        try:
            out[fingerprint(certificate)] = Signer.from_identity(identity)
        except (TypeError, ValueError) as exc:
            log.warning("identity sha256:%s cannot sign: %s", fingerprint(certificate)[:16], exc)
    return out


class Senders:
    """Looks up the sender's certificate and signer (see the module docstring)."""

    def __init__(
        self, keys: KeyDirectory, policy: PolicyTable, *, signers: dict[str, Signer], default: str | None = None
    ) -> None:
        self.keys = keys
        self.policy = policy
        self.signers = signers
        self.default = default
        self._cache: dict[str, tuple[str, float, x509.Certificate | None]] = {}
        self._keys_cache: dict[tuple[str, x509.Certificate], SenderKeys] = {}

    @classmethod
    def load(cls, keys: KeyDirectory, settings: Settings, passphrase: PassphraseSource) -> Senders:
        try:
            identities = keys.identities(passphrase)
        except errors.NoMatchingIdentity:
            identities = []
            log.warning("no identity in %s: messages will be encrypted but not signed", keys.path)
        except errors.ConfigError as exc:
            identities = []
            log.warning("identities cannot be unlocked (%s): messages will be encrypted but NOT signed", exc)
        return cls(keys, settings.policy, signers=_signers(identities), default=settings.identity.address)

    def _stamp(self) -> str:
        try:
            return str(os.stat(self.keys.layout.identities).st_mtime_ns)
        except FileNotFoundError:
            return "-"

    def certificate(self, address: str) -> x509.Certificate | None:
        """Our own valid certificate for ``address``, or None. Blocks briefly on the key directory."""
        key = address_key(address)
        stamp = self._stamp()
        cached = self._cache.get(key)
        if cached is not None and cached[0] == stamp and time.monotonic() - cached[1] < _CACHE_SECONDS:
            return cached[2]
        certificate = self.keys.sender_certificate(address)
        self._cache[key] = (stamp, time.monotonic(), certificate)
        return certificate

    def _keys(self, address: str, certificate: x509.Certificate) -> SenderKeys:
        # The same certificate comes back for every message of a sender: the
        # keys are made once for it (the policy is fixed while the proxy runs).
        found = self._keys_cache.get((address, certificate))
        if found is None:
            signer = self.signers.get(fingerprint(certificate))
            found = SenderKeys(address, certificate, self.policy.decide(address).profile, signer)
            if len(self._keys_cache) >= 256:
                self._keys_cache.clear()
            self._keys_cache[(address, certificate)] = found
        return found

    def for_message(self, mail_from: str, header_from: list[str]) -> SenderKeys:
        for address in (*header_from, mail_from, self.default):
            if not address:
                continue
            certificate = self.certificate(address)
            if certificate is not None:
                keys = self._keys(address, certificate)
                if keys.signer is None:
                    log.warning(
                        "%s: no unlocked identity for sha256:%s; the message is not signed",
                        address,
                        fingerprint(certificate)[:16],
                    )
                return keys
        return SenderKeys(mail_from, None, COMPATIBLE, None)

"""The sender's side of a message: the own copy's certificate and the signing key.

DESIGN.md §1 encrypts every envelope to the sender too where the sender's
certificate can join it readably (``groups``), so the sent copy stays
readable; DESIGN.md §2 signs inside the encryption whenever the sender has
an identity. ``Senders.load`` unlocks the home's identities at
start (passphrase from ``$MAILCRYPT_PASSPHRASE``, ``keys.passphrase_file``
or a prompt on the terminal), each on its own: one key that cannot be
unlocked does not stop the others.

``changed`` tells cheaply (one ``stat`` of the identities folder: inode and
modification time, which every import, generation and removal changes)
whether ``reload`` must look again; ``reload`` unlocks the identities it
has not unlocked before (with ``retry``, after SIGHUP, also the ones that
failed, so a passphrase made available later is used), and forgets the
removed ones. The proxy needs no restart for ``mailcrypt keys import``.

The sender of a message is the first of: the From address, the MAIL FROM
address, ``[identity] address`` — the first one the login may send as
(``allowed``) that we hold a certificate for. When that identity cannot be
unlocked the message is refused with 451 4.7.0 (``Refused``): mail from an
address with an identity never goes out unsigned.

What it won't do: sign or encrypt (``groups`` does), decide which addresses
a login has (``auth.UserStore``), or keep anything on disk.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from cryptography import x509

from mailcrypt import errors
from mailcrypt.addresses import address_key
from mailcrypt.config import Settings
from mailcrypt.envelope import Signer
from mailcrypt.keydir import KeyDirectory, PassphraseSource
from mailcrypt.pki import fingerprint
from mailcrypt.policy import COMPATIBLE, PolicyTable
from proxy.groups import SenderKeys
from proxy.relay import Refused, client_text

__all__ = ["Senders"]

log = logging.getLogger(__name__)

_CACHE_SECONDS = 300.0


@dataclass(eq=False)
class Senders:
    """Looks up the sender's certificate and signer (see the module docstring)."""

    keys: KeyDirectory
    policy: PolicyTable
    _: KW_ONLY
    # The signers hold private keys: kept out of ``repr``.
    signers: dict[str, Signer] = field(repr=False)
    default: str | None = None
    #: Why an identity (by certificate fingerprint) could not be unlocked.
    failed: dict[str, str] = field(default_factory=dict, init=False)
    _seen: tuple[int, int] | None = field(default=None, init=False, repr=False)
    _cache: dict[str, tuple[str, float, x509.Certificate | None]] = field(default_factory=dict, init=False, repr=False)
    _keys_cache: dict[tuple[str, x509.Certificate], SenderKeys] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def load(cls, keys: KeyDirectory, settings: Settings, passphrase: PassphraseSource) -> Senders:
        senders = cls(keys, settings.policy, signers={}, default=settings.identity.address)
        senders.reload(passphrase)
        if not senders.signers and not senders.failed:
            log.warning("no identity in %s: messages will be encrypted but not signed", keys.path)
        return senders

    def _folder_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.keys.layout.identities)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def changed(self) -> bool:
        """True when the identities folder changed since the last ``reload`` (one ``stat``)."""
        return self._folder_stamp() != self._seen

    def reload(self, passphrase: PassphraseSource, *, retry: bool = False) -> None:
        """Look at the identities again (see the module docstring). Blocks: run it off the event loop."""
        stamp = self._folder_stamp()
        signers: dict[str, Signer] = {}
        failed: dict[str, str] = {}
        for entry in self.keys.identity_entries():
            try:
                certificate = self.keys.certificate(entry)
            except errors.MailcryptError as exc:
                log.warning("identity sha256:%s cannot be read: %s", entry.fingerprint[:16], exc)
                continue
            fp = fingerprint(certificate)
            if fp in self.signers:
                signers[fp] = self.signers[fp]
                continue
            if fp in self.failed and not retry:
                failed[fp] = self.failed[fp]
                continue
            try:
                signers[fp] = Signer.from_identity(self.keys.unlock(entry, passphrase))
                log.info("identity sha256:%s unlocked for signing", fp[:16])
            except (errors.ConfigError, TypeError, ValueError) as exc:
                failed[fp] = str(exc)
                log.warning("identity sha256:%s cannot be unlocked: %s; its mail is refused (451)", fp[:16], exc)
        # Swapped whole: the event loop reads these while a reload runs in a worker thread.
        self.signers, self.failed = signers, failed
        self._cache, self._keys_cache = {}, {}
        self._seen = stamp

    def _stamp(self) -> str:
        return str(self._folder_stamp())

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

    def for_message(
        self, mail_from: str, header_from: list[str], allowed: Callable[[str], bool] | None = None
    ) -> SenderKeys:
        """The sender's keys; ``allowed`` says which addresses the login may send as (None: any).

        Raises ``Refused`` (451 4.7.0) when the sender's identity cannot be unlocked.
        """
        for address in (*header_from, mail_from, self.default):
            if not address or (allowed is not None and not allowed(address)):
                continue
            certificate = self.certificate(address)
            if certificate is not None:
                keys = self._keys(address, certificate)
                if keys.signer is None:
                    fp = fingerprint(certificate)
                    log.warning(
                        "%s: identity sha256:%s is not unlocked (%s); message refused",
                        address,
                        fp[:16],
                        self.failed.get(fp, "no private key"),
                    )
                    raise Refused(
                        "451 4.7.0 "
                        + client_text(
                            f"The signing identity of {address} cannot be unlocked by the proxy (no passphrase "
                            "or a wrong one; see its log); the message was not sent, try again later"
                        )
                    )
                return keys
        return SenderKeys(mail_from, None, COMPATIBLE, None)

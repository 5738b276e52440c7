"""What happens to each recipient, and the messages that go out for them.

At RCPT time ``RecipientBook.plan`` looks the address up in the policy and
the key directory (DESIGN.md §4): a certificate means encryption; without
one, ``require`` refuses the address (550 5.7.1, saying what to do),
``opportunistic`` — the administrator's permission for that domain or
address — gives a plaintext copy, as does ``plaintext``. Certificates found
are cached until the key directory changes (its directories' mtimes), for
at most five minutes; a missing certificate is never cached, so an import
takes effect at the next attempt.

At DATA time ``make_groups`` splits the recipients (DESIGN.md §3): the
encrypted To/Cc recipients share one envelope; every Bcc recipient (an RCPT
TO address absent from To and Cc) gets an envelope encrypted only to them
and the sender; plaintext copies go one to the To/Cc recipients and one to
each Bcc recipient. The Bcc field never leaves.

Readable by every recipient (DESIGN.md §1): older NSS (3.87, in many
installed Thunderbirds) rejects a whole envelope that holds any key
agreement RecipientInfo, so an EC certificate never shares an envelope with
an RSA recipient who is not known to read that (``Plan.reads_key_agreement``:
``mixed_recipient_infos`` in the policy, or ECDH announced in their signed
mail; the rule is ``mailcrypt.policy.readable_envelopes``). The To/Cc
recipients then go in two envelopes: those RSA recipients in one, everyone
else in the other; every recipient still gets exactly one copy, and the
headers inside are the same. The sender's own certificate is one more
member of that split (its reader is mailcrypt, which reads everything), and
joins every envelope it can join without making it unreadable. An EC
sender's copy therefore leaves out envelopes of RSA recipients not known to
read key agreement; when it can join none, it is left out of that message,
as ``mailcrypt encrypt`` leaves it out, and the message's log line says so.
No envelope of its own is made for it: the sender's mail client keeps its
own Sent copy, and the proxy never delivers to the sender what the sender
did not address (a sender who is also a To, Cc or Bcc recipient is grouped
like any other recipient and gets that copy). Each envelope's profile is
``common_profile`` of its recipients and the sender (DESIGN.md §1). When
the sender has an identity, the message is signed once (sign-then-encrypt,
DESIGN.md §2) and that signed message goes into every envelope. Signing and
encrypting are the MIME layer's one pipeline (``mailcrypt.mime.pipeline``),
the same as ``mailcrypt encrypt``'s; the message stays in the SMTP buffer.
A large message is signed and encrypted in a worker thread, and so is every
RSA signature: the event loop keeps serving others. A small message is
encrypted, and signed with an EC key, on the event loop, which is cheaper
than the thread hop (``signs_inline``, ``encrypts_inline``).

What it won't do: talk to servers (``relay``) or log anything of the
content: the log names addresses, profiles and certificate fingerprints.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509

from mailcrypt import errors
from mailcrypt.addresses import address_key, recipient_key
from mailcrypt.envelope import Recipient, recipient_from_certificate, uses_key_agreement
from mailcrypt.keydir import KeyDirectory
from mailcrypt.mime import (
    HEADER_LIMIT,
    ChainReader,
    Field,
    SignedMessage,
    addresses_in,
    encrypt_stream,
    encrypts_inline,
    sendable_fields,
    sign_message_parts,
    signs_inline,
    split_fields,
)
from mailcrypt.pki import fingerprint
from mailcrypt.policy import PolicyTable, Profile, common_profile, readable_envelopes, readable_together
from proxy.relay import Group, Refused, client_text
from proxy.spill import SPILL_OVER, Body, Spilled

if TYPE_CHECKING:
    from mailcrypt.envelope import Signer

#: ``advertised(address, certificate)``: what a correspondent announced in signed mail
#: (``mailcrypt.keydir.advertised``), or None when nothing is known.
Advertised = Callable[[str, x509.Certificate], tuple[str, ...] | None]

__all__ = ["Plan", "RecipientBook", "SenderKeys", "make_groups", "sign_for_sender"]

log = logging.getLogger(__name__)

_CACHE_SECONDS = 300.0
_RECIPIENTS_KEPT = 1024  # Recipients made from certificates (``_recipients``), by certificate and profile.
_recipients_made: dict[tuple[x509.Certificate, Profile], Recipient] = {}


@dataclass(frozen=True)
class Plan:
    """What to do for one recipient: encrypt to ``certificate``, or send a plaintext copy (None).

    ``key_agreement``: the certificate is EC (a KeyAgreeRecipientInfo);
    ``reads_key_agreement``: the recipient's client is known to read an
    envelope holding one (see the module docstring).
    """

    address: str
    policy: str
    certificate: x509.Certificate | None
    profile: Profile
    reason: str
    key_agreement: bool = False
    reads_key_agreement: bool = False

    @functools.cached_property
    def description(self) -> str:
        """For the log line of every message to this recipient; a plan is cached, so this is made once."""
        if self.certificate is None:
            return f"plaintext copy ({self.reason})"
        reads = ", reads key agreement" if self.reads_key_agreement and not self.key_agreement else ""
        label = f"certificate sha256:{fingerprint(self.certificate)[:16]}"
        return f"{label}, profile {self.profile.name}{reads} ({self.reason})"

    def describe(self) -> str:
        return self.description


class RecipientBook:
    """RCPT-time decisions (see the module docstring). ``plan`` blocks briefly on the key directory."""

    def __init__(self, keys: KeyDirectory, policy: PolicyTable, *, advertised: Advertised | None = None) -> None:
        self.keys = keys
        self.policy = policy
        self.advertised = advertised
        self._cache: dict[str, tuple[str, float, Plan]] = {}
        layout = keys.layout
        # Looked at for every RCPT: the paths are made once.
        self._watched = tuple(os.fspath(p) for p in (layout.certs, layout.chain, layout.identities))

    def _stamp(self) -> str:
        parts = []
        for path in self._watched:
            try:
                parts.append(str(os.stat(path).st_mtime_ns))
            except FileNotFoundError:
                parts.append("-")
        return " ".join(parts)

    def _current(self, key: str, stamp: str) -> Plan | None:
        cached = self._cache.get(key)
        if cached is not None and cached[0] == stamp and time.monotonic() - cached[1] < _CACHE_SECONDS:
            return cached[2]
        return None

    def cached(self, address: str) -> Plan | None:
        """The plan for ``address`` if it is known and still current (cheap: no key directory access)."""
        return self._current(address_key(address), self._stamp())

    def plan(self, address: str) -> Plan:
        """The plan for ``address``; raises ``Refused`` (550 5.7.1) when the policy forbids sending."""
        key = address_key(address)
        stamp = self._stamp()  # One look at the folders, for the cache check and the entry made below.
        cached = self._current(key, stamp)
        if cached is not None:
            return cached
        decision = self.policy.decide(address)
        if decision.policy == "plaintext":
            return Plan(address, "plaintext", None, decision.profile, decision.reason)
        try:
            (choice,) = self.keys.recipients_for([address], advertised=self.advertised)
        except errors.NoRecipientCertificate as exc:
            if decision.policy == "opportunistic":
                return Plan(address, "opportunistic", None, decision.profile, f"no certificate; {decision.reason}")
            detail = str(exc) if str(exc).startswith("no usable certificate") else "no certificate is known"
            raise Refused(
                "550 5.7.1 "
                + client_text(
                    f"<{address}>: {detail}, and the policy requires encryption ({decision.reason}); import "
                    "the recipient's certificate with: mailcrypt keys import FILE, then send again",
                    480,
                )
            ) from None
        plan = Plan(
            address,
            decision.policy,
            choice.certificate,
            choice.profile,
            decision.reason,
            choice.key_agreement,
            choice.reads_key_agreement,
        )
        self._cache[key] = (stamp, time.monotonic(), plan)
        return plan


@dataclass(frozen=True)
class SenderKeys:
    """The sender's side of a message: the address, the certificate for the own copy, the signer if any."""

    address: str
    certificate: x509.Certificate | None
    profile: Profile
    signer: Signer | None = None

    @functools.cached_property
    def key_agreement(self) -> bool:
        return self.certificate is not None and uses_key_agreement(self.certificate)

    @property
    def reads_key_agreement(self) -> bool:
        # The sender's copy is read with mailcrypt (fetch, decrypt), which reads
        # every RecipientInfo kind.
        return True


def _header_end(message: bytes | bytearray) -> int:
    """Where the body starts (after the empty line); the message length when there is none."""
    end = message.find(b"\r\n\r\n", 0, HEADER_LIMIT + 4)
    return len(message) if end < 0 else end + 4


def header_fields(message: bytes | bytearray) -> list[Field]:
    return split_fields(bytes(message[: _header_end(message)]).removesuffix(b"\r\n"))


def from_addresses(fields: Sequence[Field]) -> list[str]:
    return addresses_in(fields, ("from",))


def sign_for_sender(
    message: bytes | bytearray,
    sender: SenderKeys,
    *,
    signing_time: datetime.datetime | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> SignedMessage | None:
    """The signing integration point (DESIGN.md §2): the signed message, or None without an identity.

    Signing is the MIME layer's one pipeline (``sign_message_parts``), the
    same as ``mailcrypt encrypt``'s; the body stays in the SMTP buffer.
    ``signing_time`` defaults to the moment of signing.
    """
    if sender.signer is None:
        return None
    when = signing_time if signing_time is not None else datetime.datetime.now(datetime.UTC)
    return sign_message_parts(message, sender.signer, signing_time=when, rng=rng)


def make_groups(
    message: bytes | bytearray,
    recipients: Sequence[str],
    plans: dict[str, Plan],
    sender: SenderKeys,
    *,
    fields: list[Field] | None = None,
    decisions: list[str] | None = None,
    signing_time: datetime.datetime | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> list[Group]:
    """The groups for one message (see the module docstring), in no particular order.

    ``fields`` are ``header_fields(message)`` when the caller has them already.
    What was decided for each recipient (address, certificate fingerprint,
    profile, why) is appended to ``decisions`` for the caller's log line.
    ``signing_time`` and ``rng`` go to ``sign_for_sender``.
    """
    if decisions is None:
        decisions = []
    if fields is None:
        fields = header_fields(message)
    # Compared as one delivery (mailcrypt.addresses.recipient_key): a recipient
    # whose To/Cc spelling differs only in case or IDNA form is visible.
    visible = {recipient_key(a) for a in addresses_in(fields, ("to", "cc"))}
    shared: list[Plan] = []
    hidden: list[Plan] = []
    clear_shared: list[str] = []
    groups: list[Group] = []
    signed: list[SignedMessage | None] = []
    sign = functools.partial(sign_for_sender, message, sender, signing_time=signing_time, rng=rng)

    async def signed_parts() -> Sequence[bytes | bytearray | memoryview]:
        if not signed:
            if sender.signer is None:
                signed.append(None)
            elif signs_inline(len(message), sender.signer):
                signed.append(sign())
            else:
                signed.append(await asyncio.get_running_loop().run_in_executor(None, sign))
        return signed[0].parts if signed[0] is not None else [message]

    def encrypted(plans_: list[Plan], kind: str, addresses: tuple[str, ...], with_sender: bool) -> Group:
        certs = list(dict.fromkeys(p.certificate for p in plans_ if p.certificate is not None))
        profiles = [p.profile for p in plans_]
        if with_sender and sender.certificate is not None and sender.certificate not in certs:
            certs.append(sender.certificate)
            profiles.append(sender.profile)
        profile = common_profile(profiles)

        async def render() -> Body:
            parts = await signed_parts()
            if encrypts_inline(sum(len(p) for p in parts)):
                return _encrypt(parts, certs, profile)
            return await asyncio.get_running_loop().run_in_executor(None, _encrypt, parts, certs, profile)

        return Group(addresses, render, True, kind)

    def clear(addresses: list[str], kind: str) -> Group:
        async def render() -> bytes:
            parts = await signed_parts()
            if signed[0] is None:
                parts = [sendable_fields(fields) + b"\r\n", memoryview(message)[_header_end(message) :]]
            return b"".join(parts)

        return Group(tuple(addresses), render, False, kind)

    for address in recipients:
        plan = plans[address]
        in_header = recipient_key(address) in visible
        if plan.certificate is None:
            if in_header:
                clear_shared.append(address)
            else:
                groups.append(clear([address], "plaintext bcc"))
        elif in_header:
            shared.append(plan)
        else:
            hidden.append(plan)
        decisions.append(f"{address}: {plan.describe()}{'' if in_header else ' [bcc: own envelope]'}")
    # The sender's certificate takes part in the To/Cc split (module docstring):
    # an EC sender's copy then shares an envelope with the recipients who read it.
    mine = [sender] if sender.certificate is not None else []
    members_: list[Plan | SenderKeys] = [*shared, *mine]
    envelopes: list[tuple[list[Plan], str]] = [
        ([p for p in members if isinstance(p, Plan)], "to/cc") for members in readable_envelopes(members_)
    ]
    envelopes = [e for e in envelopes if e[0]] + [([p], "bcc") for p in hidden]
    if len([e for e in envelopes if e[1] == "to/cc"]) > 1:
        decisions.append("to/cc in two envelopes: key agreement (EC) kept apart from clients not known to read it")
    # The sender's copy joins the envelopes it can join readably (module docstring).
    joins = [bool(mine) and readable_together([*members, sender]) for members, _kind in envelopes]
    for (members, kind), with_sender in zip(envelopes, joins, strict=True):
        groups.append(encrypted(members, kind, tuple(p.address for p in members), with_sender))
    if mine and envelopes and not any(joins):
        decisions.append(
            f"sender's copy ({sender.address}) left out of this message: its EC certificate would make every "
            "envelope unreadable to recipients not known to read key agreement"
        )
    elif mine:
        for (members, _kind), with_sender in zip(envelopes, joins, strict=True):
            if not with_sender:
                names = ", ".join(p.address for p in members)
                decisions.append(f"sender's copy left out of the envelope for {names}: not known to read key agreement")
    if clear_shared:
        groups.insert(0, clear(clear_shared, "plaintext"))
    if sender.certificate is None:
        log.warning("no certificate of the sender %s: the sent copy cannot be read by the sender", sender.address)
    return groups


def _recipients(certificates: list[x509.Certificate], profile: Profile) -> list[Recipient]:
    """The Recipient for each certificate, made once per certificate and profile (not once a message).

    Its key checks (RFC 8550 §4.4.2) and algorithms depend on those two only,
    and each ``wrap`` draws a fresh ephemeral key or padding. Failures
    (``InvalidRecipient``) are not kept: they raise every time.
    """
    out = []
    for certificate in certificates:
        made = _recipients_made.get((certificate, profile))
        if made is None:
            made = recipient_from_certificate(certificate, profile=profile)
            if len(_recipients_made) >= _RECIPIENTS_KEPT:
                _recipients_made.clear()
            _recipients_made[(certificate, profile)] = made
        out.append(made)
    return out


def _encrypt(
    parts: Sequence[bytes | bytearray | memoryview], certificates: list[x509.Certificate], profile: Profile
) -> Body:
    recipients = _recipients(certificates, profile)
    if sum(len(p) for p in parts) <= SPILL_OVER:
        out = io.BytesIO()
        encrypt_stream(ChainReader(parts), out, recipients, profile=profile)
        return out.getvalue()
    # A large message's encrypted copy goes to an encrypted temporary file, so
    # that the proxy holds about one copy of the message, not 2.4 (``spill``).
    spilled = Spilled()
    try:
        encrypt_stream(ChainReader(parts), spilled, recipients, profile=profile)
    except BaseException:
        spilled.close()
        raise
    return spilled.seal()

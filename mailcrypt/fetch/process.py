"""One fetched message: decrypt, verify, check for replay, and say what it is.

``MessageProcessor.process`` takes the message exactly as the server holds
it and returns an ``Outcome``: the bytes to store, and whether they go to
the folder or to quarantine. It peels every S/MIME layer with
``mailcrypt.mime.unwrap.unwrap_message`` (enveloped or authEnveloped, any
profile, any sender; signed, detached or opaque; nested in any order), asks
the replay guard whether the message is fresh and new, and writes status
header fields on top (``X-Mailcrypt-Status`` in the vocabulary of
``status``, the key used, the cipher, the signer and signing time, a warning
for unauthenticated CBC content that is not signed). Decrypted HTML of such unsigned CBC mail has its remote content
removed (``efail``). ``unwrap_message`` returns the message as bytes and
only once every GCM tag, CBC padding and signature has been checked, so no
unverified plaintext reaches a sink: a failure is quarantined as the server's
copy and the plaintext is never written.

What goes to quarantine, the server's copy below the status fields: a
replay or a stale message, mail no identity can open, broken envelopes and
bad signatures, and anything that makes processing fail. Nothing is
dropped. In delivered and quarantined copies alike, X-Mailcrypt-* fields
the message brought with it are renamed ``X-Mailcrypt-Original-*``
(``status.disarm``): only the fetcher's own fields, on top, carry our names.

The work is split in two so that it can be spread over processes:
``prepare`` needs only the keys and the clock (decrypt, verify, build the
fields) and runs in worker processes for large folders; ``finish`` asks the
replay guard in the process that owns the store. ``process`` does both.

The replay guard is only asked here (``check``, ``check_against``): the key is recorded
by ``sync`` once the message is on disk (``Outcome.record``), so that a crash
in between does not make the message look like a replay of itself when the
run is repeated. Keys of messages delivered earlier in the same batch are
passed in as ``pending``.

What it won't do: talk to the server, write files, or log message content:
the notes it returns name reasons and certificate fingerprints only.

Longer than 400 lines: one message's whole decision (decrypt, verify, replay,
status fields, quarantine) is kept together so that its order stays visible.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509

from mailcrypt import errors
from mailcrypt.envelope import CertificateRef, Identity
from mailcrypt.fetch import status as st
from mailcrypt.fetch.efail import strip_remote_content
from mailcrypt.mime import Field, Unwrapped, content_type, unwrap_message
from mailcrypt.pki import RevocationChecker
from mailcrypt.policy import DEFAULT_POLICY, Policy
from mailcrypt.state import ReplayGuard

__all__ = ["ARRIVAL_FIELD", "Outcome", "Prepared", "MessageProcessor", "REASON_EXIT_CODES", "STATUS_FIELD"]

log = logging.getLogger(__name__)

STATUS_FIELD = "X-Mailcrypt-Status"
#: When a quarantined message reached the server (RFC 5322 date), above its X-Mailcrypt-Source.
ARRIVAL_FIELD = "X-Mailcrypt-Arrival"

#: The exit code each quarantine reason stands for (DESIGN.md §6); delivered mail is 0.
REASON_EXIT_CODES = {
    "no-key": 3,
    "malformed": 4,
    "integrity": 4,
    "unsupported": 4,
    "bad-signature": 5,
    "replay": 5,
    "stale": 5,
    "error": 1,
}


@dataclass(frozen=True)
class ReplayRecord:
    """What ``ReplayGuard.check`` asks about a message, and ``record_delivered`` remembers once it is delivered."""

    digest: bytes
    signing_time: datetime | None
    kind: str
    also: tuple[bytes, ...]
    now: datetime

    @functools.cached_property
    def keys(self) -> tuple[str, ...]:
        # Asked for several times per message (pending keys, the replay check, recording).
        return tuple(k.hex() for k in (self.digest, *self.also))


@dataclass(frozen=True)
class Outcome:
    """What to do with one message.

    ``quarantine`` says where ``data`` goes; ``reason`` is one word (``plain``,
    ``decrypted``, ``verified``, ``signed`` or a quarantine reason from
    ``REASON_EXIT_CODES``) and ``note`` one content-free line for the log.
    """

    data: bytes
    quarantine: bool
    reason: str
    note: str = ""
    decrypted: bool = False
    verified: bool = False
    record: ReplayRecord | None = None
    stripped: bool = False
    headers: tuple[str, ...] = field(default=(), repr=False)

    @property
    def exit_code(self) -> int:
        return REASON_EXIT_CODES.get(self.reason, 0) if self.quarantine else 0


@dataclass(frozen=True)
class Prepared:
    """What can be decided about a message without the state store (picklable, for worker processes).

    ``failure`` is a quarantine reason and ``detail`` its line when the
    message could not be opened or verified; otherwise ``data`` is the
    message to deliver (status fields on top) and ``record`` its replay key,
    which ``MessageProcessor.finish`` still has to check.
    """

    failure: str | None = None
    detail: str = ""
    data: bytes = b""
    reason: str = ""
    note: str = ""
    decrypted: bool = False
    verified: bool = False
    stripped: bool = False
    record: ReplayRecord | None = None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _clean(value: str) -> str:
    """A header value on one line: no control characters, at most 900 characters."""
    return " ".join(_CONTROL.sub(" ", value).split())[:900]


def _field(name: str, value: str) -> bytes:
    # RFC 6532 allows UTF-8 in header fields; subjects of certificates may need it.
    return f"{name}: {_clean(value)}\r\n".encode()


_WARNING = _field(
    "X-Mailcrypt-Warning",
    "unauthenticated encryption (CBC) and no signature: the content may have been altered on the way",
)
_WARNING_STRIPPED = _field(
    "X-Mailcrypt-Warning",
    "unauthenticated encryption (CBC) and no signature: the content may have been altered on the way; "
    "remote content in HTML was removed (EFAIL)",
)

# The other fields that repeat from message to message (status, cipher), made once each.
_same_field = functools.lru_cache(maxsize=256)(_field)


def _may_hold_html(fields: tuple[Field, ...] | None) -> bool:
    """False when the top-level header says no part of the message can be HTML (so EFAIL cleaning has nothing to do).

    ``strip_remote_content`` would leave such a message as it is; this answer
    is cheaper than its scan. Unknown or empty fields: True (let it look).
    """
    if not fields:
        return True
    ctype, params = content_type(list(fields))
    return ctype in ("text/html", "message/rfc822") or (ctype.startswith("multipart/") and bool(params.get("boundary")))


def _date(when: datetime) -> str:
    return email.utils.format_datetime(when.astimezone(UTC))


# The quarantine reason of each kind of failure, the first that matches; any other is "malformed".
_REASONS: tuple[tuple[type[errors.MailcryptError], str], ...] = (
    (errors.NoKeyError, "no-key"),
    (errors.ReplayedMessage, "replay"),
    (errors.StaleMessage, "stale"),
    (errors.SignatureError, "bad-signature"),
    (errors.DecryptionFailed, "integrity"),
    (errors.UnsupportedAlgorithm, "unsupported"),
)


def _classify(exc: errors.MailcryptError) -> str:
    return next((reason for kind, reason in _REASONS if isinstance(exc, kind)), "malformed")


class MessageProcessor:
    """Turns fetched messages into Outcomes with one set of identities, one policy and one guard.

    ``prepare`` does the work that needs only keys and time (decrypting,
    verifying, the status fields), so it can run in a worker process;
    ``finish`` asks the replay guard and decides. ``process`` is both.
    """

    def __init__(
        self,
        identities: Sequence[Identity],
        *,
        guard: ReplayGuard,
        policy: Policy = DEFAULT_POLICY,
        trust_anchors: Sequence[x509.Certificate] = (),
        certificates: Sequence[x509.Certificate] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        revocation: RevocationChecker | None = None,
    ) -> None:
        self.identities = list(identities)
        self.guard = guard
        self.policy = policy
        self.trust_anchors = list(trust_anchors)
        self.certificates = list(certificates)
        self.clock = clock
        self.revocation = revocation
        self._key_fields: dict[x509.Certificate, bytes] = {}

    def process(
        self,
        raw: bytes,
        *,
        source: str,
        pending: set[str] | frozenset[str] = frozenset(),
        arrival: datetime | None = None,
    ) -> Outcome:
        """Decide about one message (see the module docstring). Never raises for a bad message."""
        return self.finish(raw, self.prepare(raw, source=source), source=source, pending=pending, arrival=arrival)

    # ------------------------------------------------------------------ without the store

    def prepare(self, raw: bytes, *, source: str) -> Prepared:
        """Open and verify ``raw`` and build what would be delivered. Never raises for a bad message."""
        now = self.clock()
        try:
            unwrapped = unwrap_message(
                raw,
                self.identities,
                now=now,
                policy=self.policy,
                trust_anchors=self.trust_anchors,
                certificates=self.certificates,
                revocation=self.revocation,
            )
        except errors.MailcryptError as exc:
            return Prepared(failure=_classify(exc), detail=str(exc))
        except Exception as exc:  # noqa: BLE001 - a message must never stop the run (issue: nothing is dropped).
            log.exception("unexpected error while reading %s", source)
            return Prepared(failure="error", detail=f"internal error: {type(exc).__name__}")
        if not unwrapped.layers:
            fields = [_field(STATUS_FIELD, f"{st.PLAIN}; {st.NOT_ENCRYPTED}; {st.NOT_SIGNED}")]
            return Prepared(data=self._delivered(raw, fields, source), reason="plain", note="plain")
        return self._layered(raw, unwrapped, now, source)

    # ------------------------------------------------------------------ with the store

    def finish(
        self,
        raw: bytes,
        prepared: Prepared,
        *,
        source: str,
        pending: set[str] | frozenset[str] = frozenset(),
        seen: Mapping[str, tuple[int, str]] | None = None,
        arrival: datetime | None = None,
    ) -> Outcome:
        """The Outcome for a prepared message, after the replay check (which records nothing).

        ``seen`` is ``ReplayGuard.seen`` of a batch's keys, this message's among them (else the guard asks the store).
        ``arrival`` is when the message reached the server (its INTERNALDATE): the
        freshness window lies around it (DESIGN.md §2), around the time of processing without it.
        """
        if prepared.failure is not None:
            return self._quarantine(raw, prepared.failure, prepared.detail, source, arrival)
        record = prepared.record
        if record is not None:
            try:
                if pending and not pending.isdisjoint(record.keys):
                    raise errors.ReplayedMessage(
                        f"replayed message: first accepted {record.now:%Y-%m-%d %H:%M:%S} UTC (earlier in this run)",
                        first_seen=record.now,
                        digest=record.keys[0],
                        kind=record.kind,
                    )
                facts = (record.digest, record.signing_time, record.now)
                if seen is None:
                    self.guard.check(*facts, kind=record.kind, also=record.also, arrival=arrival)
                else:
                    self.guard.check_against(seen, *facts, kind=record.kind, also=record.also, arrival=arrival)
            except errors.ReplayError as exc:
                return self._quarantine(raw, _classify(exc), str(exc), source, arrival)
        return Outcome(
            prepared.data,
            False,
            prepared.reason,
            note=prepared.note,
            decrypted=prepared.decrypted,
            verified=prepared.verified,
            record=record,
            stripped=prepared.stripped,
        )

    # ------------------------------------------------------------------ outcomes

    def _quarantine(self, raw: bytes, reason: str, detail: str, source: str, arrival: datetime | None) -> Outcome:
        status = _field(STATUS_FIELD, st.quarantined(reason, detail))
        # The arrival (INTERNALDATE) goes along: re-processing the copy later (``requeue``) judges
        # freshness against it as the fetch did, and the server may no longer hold the message.
        when = b"" if arrival is None else _field(ARRIVAL_FIELD, _date(arrival))
        # Quarantine keeps the server's copy under the status fields, its own X-Mailcrypt-*
        # fields renamed: a forged "X-Mailcrypt-Status: decrypted" must not pass for ours.
        data = status + when + _field("X-Mailcrypt-Source", source) + st.disarm(raw)
        return Outcome(data, True, reason, note=f"quarantined ({reason}): {_clean(detail)}")

    def _key_field(self, certificate: x509.Certificate) -> bytes:
        # One field per identity, made once: fingerprints and subjects cost more than the rest.
        cached = self._key_fields.get(certificate)
        if cached is None:
            ref = CertificateRef(certificate)
            cached = _field("X-Mailcrypt-Key", f"sha256:{ref.fingerprint} ({st.rfc4514_name(certificate.subject)})")
            self._key_fields[certificate] = cached
        return cached

    @staticmethod
    def _delivered(message: bytes, fields: list[bytes], source: str) -> bytes:
        fields.append(_field("X-Mailcrypt-Source", source))
        return b"".join(fields) + st.disarm(message)

    def _layered(self, raw: bytes, unwrapped: Unwrapped, now: datetime, source: str) -> Prepared:
        fields: list[bytes] = []
        status: list[str] = []
        signed_inside_cbc = False
        cbc = False
        for layer in unwrapped.layers:
            if layer.envelope is not None:
                info = layer.envelope
                cbc = cbc or not info.authenticated
                signed_inside_cbc = False
                fields.append(self._key_field(info.identity.certificate))
                fields.append(_same_field("X-Mailcrypt-Cipher", f"{info.cipher}; {layer.form}; {info.key_management}"))
            elif layer.signature is not None and layer.chain is not None:
                # A weak signature (SHA-1, MD5) proves nothing, so CBC content under it counts as unsigned.
                signed_inside_cbc = not layer.weak
                sig = layer.signature
                ref = CertificateRef(sig.certificate)
                weak = f" ({sig.weak_description}: not accepted as proof)" if sig.weak else ""
                fields.append(
                    _field(
                        "X-Mailcrypt-Signer",
                        f"{st.rfc4514_name(ref.certificate.subject)} sha256:{ref.fingerprint}; "
                        f"{sig.signature_algorithm} with {sig.digest_algorithm}{weak}; "
                        f"certificate chain {layer.chain.status} ({layer.chain.reason})",
                    )
                )
                if sig.signing_time is not None:
                    fields.append(_field("X-Mailcrypt-Signing-Time", _date(sig.signing_time)))
        encrypted = unwrapped.encrypted
        proofs = unwrapped.proofs
        verified = bool(proofs)
        status.append(st.DECRYPTED if encrypted else st.NOT_ENCRYPTED)
        if verified:
            status.append(st.SIGNATURE_VALID)
            status.append(
                st.signer_status(
                    (layer.chain.status, layer.chain.revoked) if layer.chain is not None else ("invalid", False)
                    for layer in proofs
                )
            )
        for layer in unwrapped.weak_signatures:
            assert layer.signature is not None
            status.append(st.weak_signature(layer.signature.weak_description))
        if not unwrapped.signatures:
            status.append(st.NOT_SIGNED)
        message = unwrapped.message
        stripped = False
        if cbc and not signed_inside_cbc:
            if _may_hold_html(unwrapped.fields):
                message, stripped = strip_remote_content(message)
            fields.append(_WARNING_STRIPPED if stripped else _WARNING)
        elif not encrypted and all(layer.form == "detached" for layer in unwrapped.signatures):
            # Signed-only multipart/signed mail is readable as it is: keep it whole, so a mail
            # client can check the signature too.
            message = raw
        fields.insert(0, _same_field(STATUS_FIELD, "; ".join(status)))
        # None only for signed-only mail whose signatures are all weak: it counts as unsigned.
        key = unwrapped.replay_key
        record = None
        if key is not None:
            digest, signing_time, kind = key
            also = tuple(layer.digest for layer in unwrapped.layers if layer.digest != digest)
            record = ReplayRecord(digest, signing_time, kind, also, now)
        return Prepared(
            data=self._delivered(message, fields, source),
            reason="decrypted" if encrypted else "verified" if verified else "signed",
            note="; ".join(layer.describe() for layer in unwrapped.layers),
            decrypted=encrypted,
            verified=verified,
            stripped=stripped,
            record=record,
        )

"""The replay guard: is this message fresh, and was it accepted before? (DESIGN.md §2)

A message is fresh only if its signing time lies inside the window
``[arrival - max_age, arrival + future_skew]`` (defaults 30 days back, 5
minutes ahead; ``[replay]`` in the configuration) and its replay key was
never accepted before. ``arrival`` is when the message reached the user's
server (IMAP INTERNALDATE for the fetcher, the topmost ``Received`` field
for a message file; the caller finds it), so mail signed when it arrived is
fresh however long ago that was, and an old message sent again is not
(DESIGN.md §2). An arrival after ``now`` counts as ``now``: a date in the
future (an APPEND can set any) must not widen the window. Without an
arrival the window lies around ``now``. The key is the signature digest for signed mail
(``envelope.sigalg.signature_digest``) and the envelope digest for unsigned
mail (``envelope.fingerprint.envelope_digest``); ``unwrap.Unwrapped`` gives
both. Unsigned mail has no signing time, so only the cache protects it,
and only for ``max_age`` after its first arrival.

Three questions, one method each. ``accept`` decides and records in one
store transaction, so two processes receiving the same message accept it
once. ``check`` only decides (a read), for a caller that records with
``record_delivered`` once the message is safely delivered; ``check_against``
decides the same from a batch's ``seen()`` answer instead of a query per
message. ``prune`` forgets entries whose signing time (or arrival) and
first acceptance have both left the window: a copy arriving later is
refused as stale anyway.

What it won't do: verify signatures, or decide what happens to flagged mail
(the fetcher quarantines it, ``decrypt`` exits 5, ``--no-replay-check``
skips the guard). Time always comes in as ``now``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypedDict, Unpack

from mailcrypt.errors import ReplayedMessage, StaleMessage
from mailcrypt.state.store import Row, Store

if TYPE_CHECKING:
    from mailcrypt.mime import Unwrapped

__all__ = ["ReplayGuard", "Freshness", "ReplayFacts", "DEFAULT_MAX_AGE", "DEFAULT_FUTURE_SKEW"]

DEFAULT_MAX_AGE = timedelta(days=30)
DEFAULT_FUTURE_SKEW = timedelta(minutes=5)
_KINDS = ("signature", "envelope")
# Keys per query in seen(): well below SQLite's limit on parameters (999 before 3.32).
_SEEN_CHUNK = 500


def _seconds(when: datetime) -> int:
    return int(when.timestamp())


def _hex(key: bytes | str) -> str:
    return key.hex() if isinstance(key, bytes) else str(key)


def _datetime(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _aware(when: datetime, name: str) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise TypeError(f"{name} must be a timezone-aware datetime")
    return when.astimezone(UTC)


@dataclass(frozen=True)
class Freshness:
    """A message found fresh: its key, when it was accepted, and whether it was recorded."""

    digest: str
    kind: str
    signing_time: datetime | None
    accepted_at: datetime
    recorded: bool


class ReplayFacts(TypedDict, total=False):
    """What ``accept``, ``check`` and ``check_against`` know of a message beside its key, signing time and now.

    Declared once, as the three decide the same question. ``kind`` is
    ``signature`` (the default) or ``envelope``; ``also`` are further keys
    of the same message (the other layers' digests); ``arrival`` is when the
    message reached the server (default ``now``).
    """

    kind: str
    also: Sequence[bytes | str]
    arrival: datetime | None


@dataclass(frozen=True)
class _Question:
    """One message's replay question, checked: its keys as hex (its own first) and its times."""

    keys: list[str]
    signed_at: datetime | None
    now: datetime
    kind: str
    arrival: datetime | None

    def answer(self, recorded: bool) -> Freshness:
        return Freshness(self.keys[0], self.kind, self.signed_at, self.now, recorded)


class ReplayGuard:
    """Checks replay keys against the store's ``replay_cache``."""

    def __init__(
        self, store: Store, *, max_age: timedelta = DEFAULT_MAX_AGE, future_skew: timedelta = DEFAULT_FUTURE_SKEW
    ) -> None:
        if not isinstance(store, Store):
            raise TypeError("store must be a mailcrypt.state.store.Store")
        if max_age <= timedelta(0) or future_skew < timedelta(0):
            raise ValueError("max_age must be positive and future_skew not negative")
        self.store = store
        self.max_age = max_age
        self.future_skew = future_skew

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The earliest and latest signing times accepted at ``now``."""
        now = _aware(now, "now")
        return now - self.max_age, now + self.future_skew

    def check_freshness(
        self, signing_time: datetime | None, now: datetime, *, kind: str = "signature", arrival: datetime | None = None
    ) -> None:
        """Raise ``StaleMessage`` when a signed message's time is missing or outside the window around its arrival.

        ``arrival`` defaults to ``now``, and one later than ``now`` counts as ``now``.
        """
        now = _aware(now, "now")
        reference = now if arrival is None else min(_aware(arrival, "arrival"), now)
        earliest, latest = self.window(reference)
        # "N days ago" only when the window lies around the time of the check.
        before = "ago" if reference == now else f"before it arrived ({reference:%Y-%m-%d %H:%M:%S} UTC)"
        after = "ahead" if reference == now else "after it arrived"
        if kind == "envelope" and signing_time is None:
            return
        if signing_time is None:
            raise StaleMessage(
                "the signature carries no signing time, so its freshness cannot be checked",
                signing_time=None,
                window=(earliest, latest),
            )
        when = _aware(signing_time, "signing_time")
        if when < earliest:
            age = (reference - when).days
            raise StaleMessage(
                f"stale message: signed {when:%Y-%m-%d %H:%M:%S} UTC, {age} days {before},"
                f" older than the {self.max_age.days}-day window",
                signing_time=when,
                window=(earliest, latest),
            )
        if when > latest:
            ahead = int((when - reference).total_seconds() // 60)
            raise StaleMessage(
                f"message signed in the future: {when:%Y-%m-%d %H:%M:%S} UTC is {ahead} minutes {after},"
                f" more than the {int(self.future_skew.total_seconds() // 60)} minutes allowed",
                signing_time=when,
                window=(earliest, latest),
            )

    # ------------------------------------------------------------------ one message

    @staticmethod
    def _prepare(digest: bytes | str, signing_time: datetime | None, now: datetime, facts: ReplayFacts) -> _Question:
        """The question ``accept``, ``check`` and ``check_against`` answer, its arguments checked."""
        kind = facts.get("kind", "signature")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}")
        keys = [_hex(k) for k in (digest, *facts.get("also", ()))]
        if not keys[0]:
            raise ValueError("digest must not be empty")
        signed_at = _aware(signing_time, "signing_time") if signing_time is not None else None
        return _Question(keys, signed_at, _aware(now, "now"), kind, facts.get("arrival"))

    def _judge(self, earliest: Row | None, question: _Question) -> None:
        """Raise ``ReplayedMessage`` for the earliest cache entry of the keys, if any; else check freshness."""
        if earliest is not None:
            digest_seen, first, seen_kind = earliest
            first_seen = _datetime(int(first))
            raise ReplayedMessage(
                f"replayed message: first accepted {first_seen:%Y-%m-%d %H:%M:%S} UTC",
                first_seen=first_seen,
                digest=str(digest_seen),
                kind=str(seen_kind),
            )
        self.check_freshness(question.signed_at, question.now, kind=question.kind, arrival=question.arrival)

    @staticmethod
    def _earliest_query(keys: Sequence[str]) -> str:
        # Entries past the window stay until prune(): a key still present is a replay
        # (a stale signing time would be refused anyway), which errs on the safe side.
        placeholders = ",".join("?" * len(keys))
        return (
            f"SELECT digest, first_seen, kind FROM replay_cache WHERE digest IN ({placeholders})"  # noqa: S608
            " ORDER BY first_seen LIMIT 1"
        )

    def accept(
        self, digest: bytes | str, signing_time: datetime | None, now: datetime, **facts: Unpack[ReplayFacts]
    ) -> Freshness:
        """Accept a message once: raise if seen before or stale, else remember it, in one transaction.

        ``digest`` is the replay key, ``kind`` ``signature`` or ``envelope``;
        ``arrival`` when the message reached the server (default ``now``):
        the freshness window lies around it, while ``now`` is recorded as
        when the message was first accepted.
        ``also`` are further keys of the same message (the other layers'
        digests), checked and recorded with it so that stripping or adding a
        layer does not make a copy look new. Raises ``ReplayedMessage`` (with
        ``first_seen``) when any key was accepted before, ``StaleMessage``
        when the signing time is outside the window; records nothing then.
        The check and the record share one write transaction, so of two
        processes accepting the same message one gets ``ReplayedMessage``.
        """
        question = self._prepare(digest, signing_time, now, facts)
        keys, signed_at = question.keys, question.signed_at
        with self.store.transaction() as conn:
            self._judge(conn.execute(self._earliest_query(keys), keys).fetchone(), question)
            stamp = _seconds(signed_at) if signed_at is not None else None
            conn.executemany(
                "INSERT OR IGNORE INTO replay_cache (digest, first_seen, signing_time, kind) VALUES (?, ?, ?, ?)",
                # Every key of the message shares its signing time, so all leave the cache together.
                [(k, _seconds(question.now), stamp, question.kind) for k in keys],
            )
        return question.answer(recorded=True)

    def check(
        self, digest: bytes | str, signing_time: datetime | None, now: datetime, **facts: Unpack[ReplayFacts]
    ) -> Freshness:
        """Decide as ``accept`` does, and record nothing (``record_delivered`` records later).

        Only a read: no write lock, no commit to wait for. Raises what
        ``accept`` raises.
        """
        question = self._prepare(digest, signing_time, now, facts)
        rows = self.store.read(self._earliest_query(question.keys), tuple(question.keys))
        self._judge(rows[0] if rows else None, question)
        return question.answer(recorded=False)

    def check_against(
        self,
        known: Mapping[str, tuple[int, str]],
        digest: bytes | str,
        signing_time: datetime | None,
        now: datetime,
        **facts: Unpack[ReplayFacts],
    ) -> Freshness:
        """Decide as ``check`` does, from ``known`` instead of a query; records nothing.

        ``known`` is what ``seen()`` answered for a set of keys that includes
        this message's, so that a batch of messages costs one query instead
        of one each. Raises what ``accept`` raises.
        """
        question = self._prepare(digest, signing_time, now, facts)
        # The query's answer, from the batch's: the earliest entry of any of the keys.
        found = sorted((known[k][0], k, known[k][1]) for k in question.keys if k in known)
        earliest = (found[0][1], found[0][0], found[0][2]) if found else None
        self._judge(earliest, question)
        return question.answer(recorded=False)

    # ------------------------------------------------------------------ batches

    def seen(self, keys: Iterable[bytes | str]) -> dict[str, tuple[int, str]]:
        """Those of ``keys`` accepted before: hex digest -> (first seen in Unix seconds, kind). Only reads."""
        wanted = sorted({_hex(k) for k in keys})
        found: dict[str, tuple[int, str]] = {}
        for i in range(0, len(wanted), _SEEN_CHUNK):
            chunk = tuple(wanted[i : i + _SEEN_CHUNK])
            placeholders = ",".join("?" * len(chunk))
            rows = self.store.read(
                f"SELECT digest, first_seen, kind FROM replay_cache WHERE digest IN ({placeholders})",  # noqa: S608
                chunk,
            )
            found.update((str(d), (int(first), str(kind))) for d, first, kind in rows)
        return found

    def record_delivered(
        self,
        entries: Sequence[tuple[bytes | str, datetime | None, datetime, str, Sequence[bytes | str]]],
        *,
        within: sqlite3.Connection | None = None,
    ) -> None:
        """Remember messages already checked and delivered, in one transaction.

        Each entry is (digest, signing time, now, kind, other digests), as
        given to ``check`` or ``check_against`` before delivery.
        Keys already present stay as they are: the rerun after a crash
        between delivery and this call finds its own earlier record.
        ``within`` is a transaction of the store already open (``Store.transaction``),
        for a caller that records something of its own with the keys, atomically.
        """
        rows = []
        for digest, signing_time, now, kind, also in entries:
            if kind not in _KINDS:
                raise ValueError(f"kind must be one of {_KINDS}")
            stamp = _seconds(_aware(signing_time, "signing_time")) if signing_time is not None else None
            seen = _seconds(_aware(now, "now"))
            rows += [(_hex(k), seen, stamp, kind) for k in (digest, *also)]
        if not rows:
            return
        insert = "INSERT OR IGNORE INTO replay_cache (digest, first_seen, signing_time, kind) VALUES (?, ?, ?, ?)"
        if within is not None:
            within.executemany(insert, rows)
            return
        with self.store.transaction() as conn:
            conn.executemany(insert, rows)

    def accept_unwrapped(
        self, unwrapped: Unwrapped, now: datetime, *, arrival: datetime | None = None
    ) -> Freshness | None:
        """``accept`` for an ``unwrap.Unwrapped``: its replay key plus every layer's digest.

        Returns None for a message without S/MIME layers (nothing to check).
        """
        key = unwrapped.replay_key
        if key is None:
            return None
        digest, signing_time, kind = key
        others = [layer.digest for layer in unwrapped.layers if layer.digest != digest]
        return self.accept(digest, signing_time, now, kind=kind, also=others, arrival=arrival)

    def prune(self, now: datetime) -> int:
        """Forget entries whose signing time and first acceptance both left the window; return how many.

        A copy arriving now of a message whose signing time left the window is
        refused as stale anyway. But freshness is measured against arrival, so
        mail signed long ago (an archive fetched for the first time) is
        accepted with an old signing time: its entry stays for ``max_age``
        after it was accepted, so that a second copy in that time is a replay.
        """
        earliest = _seconds(self.window(now)[0])
        with self.store.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM replay_cache WHERE first_seen < ? AND coalesce(signing_time, first_seen) < ?",
                (earliest, earliest),
            )
            return cursor.rowcount

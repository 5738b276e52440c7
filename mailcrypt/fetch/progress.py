"""What a fetch run tells the user: a progress bar on a terminal, and a summary table.

``Progress`` draws one line on stderr, redrawn at most ten times a second:
the folder, messages done of the total, a bar, the rate in messages per
second and the estimated time left. It stays silent when stderr is not a
terminal (cron, a pipe, a test), so logs are not filled with redraws.

``Counts`` adds up what happened per folder, and ``summary_table`` prints
it: fetched, decrypted, verified, quarantined (with the reasons) and
failed, one row per account/folder and a total, then a line for each folder
that was not fetched (``Counts.problem``: the server refused to open it, or
its UIDVALIDITY changed) saying why and what to do.

What it won't do: log message content: only counts, folder names and UIDs.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["Progress", "Counts", "summary_table"]


@dataclass
class Counts:
    """What one folder's sync did."""

    fetched: int = 0
    decrypted: int = 0
    verified: int = 0
    plain: int = 0
    quarantined: int = 0
    failed: int = 0
    existing: int = 0
    stripped: int = 0
    #: Delivered before the folder's UIDVALIDITY changed, recognised by content and not delivered again.
    recognised: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    #: Why the folder was not fetched at all (one line for the user), or "".
    problem: str = ""

    def add(self, other: Counts) -> None:
        """Add ``other``'s numbers (its ``problem`` is not added: it belongs to one folder)."""
        for name in _NUMBERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)


_NUMBERS = ("fetched", "decrypted", "verified", "plain", "quarantined", "failed", "existing", "stripped", "recognised")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """A one-line progress bar on ``stream`` (stderr), drawn only on a terminal."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self._label = ""
        self._total = 0
        self._done = 0
        self._start = 0.0
        self._drawn = 0.0

    def start(self, label: str, total: int) -> None:
        self._label, self._total, self._done = label, total, 0
        self._start = time.monotonic()
        self._drawn = 0.0
        if total:
            self._draw(force=True)

    def advance(self, n: int = 1) -> None:
        self._done += n
        self._draw(force=self._done >= self._total)

    def finish(self) -> None:
        if self.enabled and self._total:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        elapsed = max(now - self._start, 1e-6)
        rate = self._done / elapsed
        left = (self._total - self._done) / rate if rate > 0 else 0.0
        width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - 60))
        filled = int(width * self._done / self._total) if self._total else width
        bar = "#" * filled + "-" * (width - filled)
        eta = _duration(left) if self._done else "--:--"
        line = f"{self._label[:24]:<24} {self._done}/{self._total} [{bar}] {rate:.0f} msg/s ETA {eta}"
        self.stream.write("\r\033[K" + line)
        self.stream.flush()


def summary_table(rows: list[tuple[str, Counts]]) -> str:
    """The end-of-run table: one row per account/folder, then the total."""
    headers = ("folder", "fetched", "decrypted", "verified", "quarantined", "failed")
    total = Counts()
    lines = []
    for label, counts in rows:
        total.add(counts)
        lines.append((label, counts))
    if len(rows) != 1:
        lines.append(("total", total))
    cells = [headers] + [
        (label, str(c.fetched), str(c.decrypted), str(c.verified), str(c.quarantined), str(c.failed))
        for label, c in lines
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = []
    for row in cells:
        out.append("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
    notes = []
    if total.reasons:
        notes.append("quarantined: " + ", ".join(f"{n} {reason}" for reason, n in sorted(total.reasons.items())))
    if total.existing:
        notes.append(f"{total.existing} already delivered by an earlier, interrupted run")
    if total.stripped:
        notes.append(f"remote content removed from {total.stripped} unsigned CBC message(s) (EFAIL)")
    if total.recognised:
        notes.append(
            f"{total.recognised} delivered before their folder's UIDVALIDITY changed: recognised, not delivered again"
        )
    notes += [f"not fetched: {counts.problem}" for _label, counts in rows if counts.problem]
    return "\n".join(out + notes) + "\n"

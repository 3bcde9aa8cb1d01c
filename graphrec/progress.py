"""Progress lines with rates, and plain-text tables (no dependency; works the same in CI logs)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence, TextIO


class _StderrNow:
    """Whatever ``sys.stderr`` is when written to. A default argument of ``sys.stderr`` is bound when
    its module is imported and keeps writing there after the stream is replaced and closed (a test's
    captured stderr, a redirected CLI run); this one follows the current stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


#: The default log stream of fit/finish/fit_ranking.
STDERR = _StderrNow()


@dataclass
class PhaseResult:
    name: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Progress:
    """Reports phases of long work: ``phase  rows/total  rows/s``, refreshed at most every ``every`` s."""

    stream: TextIO | None = field(default_factory=lambda: sys.stderr)
    every: float = 2.0
    results: list[PhaseResult] = field(default_factory=list)

    def phase(self, name: str, total: int | None = None, unit: str = "rows") -> "_Phase":
        return _Phase(self, name, total, unit)

    def note(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)


class _Phase:
    def __init__(self, owner: Progress, name: str, total: int | None, unit: str):
        self.owner, self.name, self.total, self.unit = owner, name, total, unit
        self.done = 0
        self._tty = bool(owner.stream is not None and getattr(owner.stream, "isatty", lambda: False)())

    def __enter__(self) -> "_Phase":
        self.start = self._last = time.perf_counter()
        return self

    def advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.owner.every:
            self._last = now
            self._emit(now, final=False)

    def _emit(self, now: float, final: bool) -> None:
        if self.owner.stream is None:
            return
        dt = now - self.start
        rate = self.done / dt if dt > 0 else 0.0
        of = f"/{self.total:,}" if self.total is not None else ""
        line = f"  {self.name:<28} {self.done:>12,}{of} {self.unit}  {rate:>10,.0f} {self.unit}/s  {dt:7.1f} s"
        end = "\n" if (final or not self._tty) else "\r"
        print(line, end=end, file=self.owner.stream, flush=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        now = time.perf_counter()
        if exc_type is None:
            self._emit(now, final=True)
            self.owner.results.append(PhaseResult(self.name, self.done, now - self.start))


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A Markdown-compatible table; numbers are right-aligned and thousands-separated."""

    def fmt(v: object) -> str:
        if isinstance(v, bool) or v is None:
            return "" if v is None else str(v)
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    body = [[fmt(v) for v in r] for r in rows]
    raw_rows = [list(r) for r in body]
    widths = [len(h) for h in headers]
    for r in raw_rows:
        for j, c in enumerate(r):
            widths[j] = max(widths[j], len(c))
    if align is None:
        numeric = []
        for j in range(len(headers)):
            col = [r[j] for r in raw_rows if r[j] != ""]
            numeric.append(bool(col) and all(_looks_numeric(c) for c in col))
        align = "".join("r" if n else "l" for n in numeric)

    def line(cells: Sequence[str]) -> str:
        out = []
        for j, c in enumerate(cells):
            out.append(c.rjust(widths[j]) if align[j] == "r" else c.ljust(widths[j]))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in raw_rows])


def _looks_numeric(s: str) -> bool:
    try:
        float(s.replace(",", "").rstrip("%"))
        return True
    except ValueError:
        return False

"""Seeded synthetic event logs at any size, calibrated on a real log (``graphrec synth``).

A log is generated user by user from a ``Profile`` measured on a real data set:

* **activity**: the number of distinct items a user touches is log-normal (the real log's mean and
  standard deviation of log pairs per user);
* **popularity**: items are drawn from a Zipf law whose exponent is fitted on the real item ranks
  (the top 2,000), item ids shuffled;
* **cascade**: each (user, item) pair gets one of the 2^k - 1 behavior patterns (e.g. view only,
  view + cart, cart + buy without a view) with the real log's pattern frequencies, so behavior
  ratios, conditional rates such as P(cart | view) and cascade violations all carry over;
* **repeats**: an interaction occurs 1 + Geometric times, with the real repeat share per behavior
  (a deduplicated log such as Retailrocket's has none);
* **time**: a user starts at a uniform time in the real log's range; each pair begins after a
  log-normal offset (the real spread of a user's first events) and each later behavior of the
  pattern follows its predecessor after a log-normal gap measured on the real log (defaults where
  the log has no timestamps).

Users are generated in fixed chunks with a generator seeded by ``(seed, chunk)``, so the output
depends only on the seed, the profile and the sizes, and memory stays bounded by one chunk.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec.errors import BadValue

#: Users per generated chunk: the unit of seeding and of a Parquet row group.
CHUNK_USERS = 20_000
#: Ranks the Zipf exponent is fitted on (the head, where a log's popularity curve is straight).
ZIPF_FIT_RANKS = 2_000
#: Gaps used when the calibration log has no timestamps: Retailrocket's medians (view → cart 17 s,
#: cart → buy 212 s, first events of a user over ~1 day).
DEFAULT_GAP = (math.log(60.0), 2.0)
DEFAULT_SPREAD = (math.log(86_400.0), 2.0)
DEFAULT_RANGE = (1_430_000_000, 1_442_000_000)


@dataclass(frozen=True)
class Profile:
    """What a real log looks like, as far as the generator reproduces it."""

    source: str
    behaviors: tuple[str, ...]
    users: int
    items: int
    events: int                      # distinct (user, item, behavior) interactions
    rows: int                        # rows, repeats included
    pairs_log_mean: float            # log-normal activity: log of distinct items per user
    pairs_log_std: float
    zipf_exponent: float
    patterns: dict[str, float]       # "view+cart" -> share of (user, item) pairs
    repeat_share: dict[str, float]   # behavior -> share of its interactions that occur more than once
    repeat_mean: dict[str, float]    # behavior -> mean occurrences of a repeated interaction
    gaps: dict[str, tuple[float, float]]  # "view>cart" -> log-normal (mean, std) of the gap in seconds
    spread: tuple[float, float]      # log-normal offset of a pair's first event from the user's start
    time_range: tuple[int, int]
    has_timestamps: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def profile(frame: pd.DataFrame, behaviors: tuple[str, ...], source: str) -> Profile:
    """Measure a normalized interaction frame (``graphrec.ingest.readers``: behavior, user, item,
    count[, ts]; one row per distinct interaction)."""
    f = frame[["behavior", "user", "item", "count"] + (["ts"] if "ts" in frame else [])].copy()
    bit = {b: 1 << k for k, b in enumerate(behaviors)}
    f["bit"] = f["behavior"].map(bit).astype(np.int64)
    masks = f.groupby(["user", "item"], sort=False, observed=True)["bit"].sum()
    counts = masks.value_counts()
    patterns = {_pattern_name(int(m), behaviors): float(c / counts.sum()) for m, c in counts.items()}
    per_user = f.groupby("user", observed=True)["item"].nunique()
    logs = np.log(per_user.to_numpy(dtype=np.float64))
    pop = np.sort(f.groupby("item", observed=True).size().to_numpy())[::-1]
    head = min(len(pop), ZIPF_FIT_RANKS)
    zipf = float(-np.polyfit(np.log(np.arange(1, head + 1)), np.log(pop[:head]), 1)[0]) if head >= 10 else 1.0
    repeat_share, repeat_mean = {}, {}
    for b in behaviors:
        c = f.loc[f["behavior"] == b, "count"].to_numpy()
        rep = c[c > 1]
        repeat_share[b] = float(len(rep) / max(1, len(c)))
        repeat_mean[b] = float(rep.mean()) if len(rep) else 2.0
    has_ts = "ts" in f and f["ts"].notna().any()
    gaps, spread, time_range = {}, DEFAULT_SPREAD, DEFAULT_RANGE
    if has_ts:
        ts = f.pivot_table(index=["user", "item"], columns="behavior", values="ts", aggfunc="min", observed=True)
        for up, down in zip(behaviors, behaviors[1:]):
            if up in ts and down in ts:
                d = (ts[down] - ts[up]).dropna().astype(np.float64)
                d = d[d > 0]
                if len(d) > 10:
                    gaps[f"{up}>{down}"] = (float(np.log(d).mean()), float(np.log(d).std()))
        first = ts.min(axis=1).astype(np.float64)
        off = (first - first.groupby(level=0).transform("min")).to_numpy()
        off = off[off > 0]
        if len(off) > 10:
            spread = (float(np.log(off).mean()), float(np.log(off).std()))
        time_range = (int(f["ts"].min()), int(f["ts"].max()))
    for up, down in zip(behaviors, behaviors[1:]):
        gaps.setdefault(f"{up}>{down}", DEFAULT_GAP)
    return Profile(source=source, behaviors=tuple(behaviors), users=int(f["user"].nunique()),
                   items=int(f["item"].nunique()), events=len(f), rows=int(f["count"].sum()),
                   pairs_log_mean=float(logs.mean()), pairs_log_std=float(logs.std()), zipf_exponent=zipf,
                   patterns=patterns, repeat_share=repeat_share, repeat_mean=repeat_mean, gaps=gaps,
                   spread=spread, time_range=time_range, has_timestamps=bool(has_ts))


def _pattern_name(mask: int, behaviors: tuple[str, ...]) -> str:
    return "+".join(b for k, b in enumerate(behaviors) if mask >> k & 1)


def _pattern_mask(name: str, behaviors: tuple[str, ...]) -> int:
    return sum(1 << behaviors.index(b) for b in name.split("+"))


@dataclass(frozen=True)
class SynthResult:
    path: Path
    rows: int
    users: int
    items: int
    seconds: float
    snapshot: Path | None = None


def sizes_for(p: Profile, events: int, users: int | None = None, items: int | None = None) -> tuple[int, int]:
    """Expected users for ``events`` rows under the profile's model (log-normal pairs per user,
    the pattern mix, the repeats), and items at the real log's items per user."""
    pairs = math.exp(p.pairs_log_mean + p.pairs_log_std ** 2 / 2)
    per_pair = sum(share * len(name.split("+")) for name, share in p.patterns.items())
    per_event = sum(p.repeat_share.get(b, 0.0) * (p.repeat_mean.get(b, 2.0) - 1.0) for b in p.behaviors) / len(
        p.behaviors) + 1.0
    u = users or max(1, round(events / (pairs * per_pair * per_event)))
    i = items or max(2, round(u * p.items / max(1, p.users)))
    return u, i


def generate(p: Profile, events: int, out: str | Path, *, seed: int = 0, users: int | None = None,
             items: int | None = None, progress=None) -> SynthResult:
    """Write exactly ``events`` rows (user, item, behavior, timestamp) to ``out`` (Parquet, or CSV
    for a ``.csv`` name), written to a temporary name and moved into place when complete.
    ``users``: at most that many (default: as many as it takes); ``items``: the catalogue size
    (default: the real log's items per expected user)."""
    if events < 1:
        raise BadValue(f"events must be >= 1, got {events}")
    out = Path(out)
    _, n_items = sizes_for(p, events, users, items)
    pop = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** p.zipf_exponent
    np.random.default_rng([seed, 1 << 30]).shuffle(pop)
    cdf = np.cumsum(pop)
    cdf /= cdf[-1]
    names = list(p.patterns)
    shares = np.array([p.patterns[n] for n in names])
    masks = np.array([_pattern_mask(n, p.behaviors) for n in names])
    tmp = out.with_name(f".{out.name}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = _Writer(tmp, csv=out.suffix.lower() == ".csv")
    written, n_users, t0 = 0, 0, time.perf_counter()
    try:
        for chunk in itertools.count():
            first = chunk * CHUNK_USERS
            if written >= events or (users is not None and first >= users):
                break
            last = first + CHUNK_USERS if users is None else min(users, first + CHUNK_USERS)
            rng = np.random.default_rng([seed, chunk])
            part = _chunk(p, rng, first, last, n_items, cdf, shares, masks)
            part = part.iloc[:events - written]
            writer.write(part)
            written += len(part)
            n_users = int(part["user"].iloc[-1]) + 1 if len(part) else n_users
            if progress:
                progress(written, events, time.perf_counter() - t0)
        if written < events:
            raise BadValue(f"{users:,} users produced only {written:,} of {events:,} rows; "
                           f"pass more --users (or none, to add users until the log is complete)")
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return SynthResult(out, written, n_users, n_items, time.perf_counter() - t0)


def _chunk(p: Profile, rng: np.random.Generator, u0: int, u1: int, n_items: int, cdf: np.ndarray,
           shares: np.ndarray, masks: np.ndarray) -> pd.DataFrame:
    n = u1 - u0
    want = np.maximum(1, np.rint(rng.lognormal(p.pairs_log_mean, p.pairs_log_std, n))).astype(np.int64)
    want = np.minimum(want, n_items)
    # Distinct items per user: draw with replacement (a little more than needed), keep first copies.
    users, items = np.empty(0, np.int64), np.empty(0, np.int64)
    need = want.copy()
    for _ in range(20):
        if not need.any():
            break
        draw = np.ceil(need * 1.2).astype(np.int64) + 2
        u = np.repeat(np.arange(n), draw)
        i = np.searchsorted(cdf, rng.random(len(u)), side="right").clip(max=n_items - 1)
        users, items = np.concatenate([users, u]), np.concatenate([items, i])
        key = users * n_items + items
        _, first_idx = np.unique(key, return_index=True)
        first_idx.sort()
        users, items = users[first_idx], items[first_idx]
        # keep at most want[u] per user, in draw order
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
        start = np.searchsorted(users, np.arange(n), side="left")
        rank = np.arange(len(users)) - start[users]
        keep = rank < want[users]
        users, items = users[keep], items[keep]
        need = want - np.bincount(users, minlength=n)
    pattern = masks[rng.choice(len(masks), len(users), p=shares)]
    # Log-normal tails are long: a draw is capped at the log's time range, as a real log ends.
    span = float(max(1, p.time_range[1] - p.time_range[0]))
    start_t = rng.uniform(p.time_range[0], p.time_range[1], n)
    t = start_t[users] + np.minimum(rng.lognormal(p.spread[0], p.spread[1], len(users)), span)
    cols_u, cols_i, cols_b, cols_t = [], [], [], []
    clock = t.copy()
    seen = np.zeros(len(users), dtype=bool)
    for k, b in enumerate(p.behaviors):
        if k:
            gap = p.gaps[f"{p.behaviors[k - 1]}>{b}"]
            clock = np.where(seen, clock + np.minimum(rng.lognormal(gap[0], gap[1], len(users)), span), clock)
        has = (pattern >> k & 1).astype(bool)
        seen |= has
        idx = np.flatnonzero(has)
        reps = np.ones(len(idx), dtype=np.int64)
        share = p.repeat_share.get(b, 0.0)
        if share > 0:
            rep = rng.random(len(idx)) < share
            extra = max(1e-9, p.repeat_mean.get(b, 2.0) - 1.0)  # mean extra occurrences of a repeat
            reps[rep] += rng.geometric(min(1.0, 1.0 / extra), int(rep.sum()))
        idx_r = np.repeat(idx, reps)
        later = np.concatenate([np.zeros(1, np.int64), np.cumsum(reps)[:-1]])
        offset = np.arange(len(idx_r)) - np.repeat(later, reps)  # 0 for the first occurrence
        ts = clock[idx_r] + offset * np.minimum(rng.exponential(3_600.0, len(idx_r)), span)
        cols_u.append(users[idx_r] + u0)
        cols_i.append(items[idx_r])
        cols_b.append(np.full(len(idx_r), k, dtype=np.int8))
        cols_t.append(ts)
    frame = pd.DataFrame({"user": np.concatenate(cols_u), "item": np.concatenate(cols_i),
                          "behavior": pd.Categorical.from_codes(np.concatenate(cols_b), list(p.behaviors)),
                          "timestamp": np.concatenate(cols_t).astype(np.int64)})
    return frame.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)


class _Writer:
    def __init__(self, path: Path, csv: bool):
        self.path, self.csv, self._pq, self._header = path, csv, None, True

    def write(self, part: pd.DataFrame) -> None:
        part = part.assign(behavior=part["behavior"].astype(str))
        if self.csv:
            part.to_csv(self.path, mode="w" if self._header else "a", header=self._header, index=False)
            self._header = False
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(part, preserve_index=False)
        if self._pq is None:
            self._pq = pq.ParquetWriter(self.path, table.schema)
        self._pq.write_table(table)

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()
            self._pq = None


def synthesize(like: str | Path, events: int, out: str | Path, *, cfg=None, seed: int = 0,
               users: int | None = None, items: int | None = None, progress=None,
               snapshot: str | Path | None = None) -> tuple[Profile, SynthResult]:
    """Profile ``like`` (a registered data set's name, found or fetched, or a log graphrec reads,
    with ``cfg``'s ingest settings: columns, behaviors, codes) and write a log of ``events`` rows;
    with ``snapshot``, also the snapshot of that log (:func:`snapshot_from_log`)."""
    from graphrec import datasets
    from graphrec.ingest.readers import read_source

    test_file = getattr(cfg, "test_file", None)
    if datasets.is_registered(str(like)) and not Path(like).exists():
        source, registered_test = datasets.ingest_source(str(like), datasets.resolve(str(like)))
        test_file = test_file or registered_test
    else:
        source = Path(like)
    data = read_source(source, getattr(cfg, "format", None), getattr(cfg, "behaviors", None),
                       getattr(cfg, "columns", None), behavior_values=getattr(cfg, "behavior_values", None),
                       time_format=getattr(cfg, "time_format", None), test_file=test_file)
    p = profile(data.frame, data.behaviors.order, str(like))
    result = generate(p, events, out, seed=seed, users=users, items=items, progress=progress)
    if snapshot is not None:
        result = replace(result, snapshot=snapshot_from_log(result.path, snapshot, dataset=Path(snapshot).name))
    return p, result


def snapshot_from_log(log: str | Path, out: str | Path, *, dataset: str, split=None) -> Path:
    """The snapshot of a long-format log (user, item, behavior, timestamp), written to ``out`` without
    a database: what ingest + export would give (graphrec.ingest.bulk.snapshot_of; the test split is
    each user's last purchase by time, one seeded validation purchase beside it)."""
    from graphrec import snapshot as snap
    from graphrec.config import SplitConfig
    from graphrec.ingest import bulk, load
    from graphrec.ingest.readers import read_source

    prepared = load.prepare(read_source(Path(log)), dataset, split or SplitConfig())
    return snap.write(bulk.snapshot_of(prepared, source={"log": str(log)}), out)


def parse_count(text: str) -> int:
    """``1000``, ``1M``, ``2.5k``, ``100m`` → an integer count."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise BadValue(f"not a count: {text!r}; write e.g. 1000000, 10M or 2.5k") from None
    if value < 1 or value != int(value):
        raise BadValue(f"a count must be a positive whole number, got {text!r}")
    return int(value)

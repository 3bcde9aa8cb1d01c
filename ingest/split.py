"""Train / valid / test split of the target behavior.

Deterministic: edges are put in (user, item) order before any random draw, so the split depends
only on the set of edges and the seed, never on the order of the input file. A hold-out is taken
from a user only while at least one train purchase remains, so no user loses all training signal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from graphrec.config import SplitConfig
from graphrec.errors import BadValue


def resolve_method(cfg: SplitConfig, has_test_file: bool, has_timestamps: bool) -> str:
    if cfg.test == "auto":
        return "file" if has_test_file else ("last" if has_timestamps else "random")
    if cfg.test == "file" and not has_test_file:
        raise BadValue("split.test=file, but the source has no test file; use last or random")
    if cfg.test == "last" and not has_timestamps:
        raise BadValue("split.test=last needs timestamps, and the source has none; use random")
    return cfg.test


def assign_splits(target: pd.DataFrame, cfg: SplitConfig, has_test_file: bool) -> tuple[np.ndarray, str]:
    """Split labels for the target edges (columns user, item, split[, ts]), aligned with ``target``.

    Returns the labels and the test method used ("file", "last" or "random").
    """
    has_ts = "ts" in target and target["ts"].notna().any()
    method = resolve_method(cfg, has_test_file, has_ts)
    order = np.lexsort((target["item"].to_numpy(), target["user"].to_numpy()))
    df = target.iloc[order].reset_index(drop=True)
    split = np.full(len(df), "train", dtype=object)
    if method == "file":
        split[df["split"].eq("test").to_numpy()] = "test"
    else:
        _hold_out_one(df, split, "test", method, np.random.default_rng([cfg.seed, 0]))
    if cfg.valid:
        # with timestamps the validation purchase is the latest remaining one (a test file included)
        _hold_out_one(df, split, "valid", "last" if method == "last" or _all_timed(df, split) else "random",
                      np.random.default_rng([cfg.seed, 1]))
    out = np.empty(len(df), dtype=object)
    out[order] = split
    return out, method


def _all_timed(df: pd.DataFrame, split: np.ndarray) -> bool:
    """Whether every training edge has a timestamp (held-out test rows may lack one)."""
    return "ts" in df and bool(df["ts"][split == "train"].notna().all()) and bool((split == "train").any())


def _hold_out_one(df: pd.DataFrame, split: np.ndarray, label: str, method: str, rng: np.random.Generator) -> None:
    """Mark one train edge per user as ``label`` for users with ≥ 2 train edges."""
    is_train = split == "train"
    cand = pd.DataFrame({"user": df["user"].to_numpy()[is_train], "pos": np.flatnonzero(is_train),
                         "key": rng.random(int(is_train.sum()))})
    if method == "last":
        cand["ts"] = df["ts"].to_numpy()[is_train]
        cand = cand.sort_values(["user", "ts", "key"], kind="stable", na_position="first")
    else:
        cand = cand.sort_values(["user", "key"], kind="stable")
    n = cand.groupby("user", sort=False)["pos"].transform("size")
    chosen = cand[n >= 2].groupby("user", sort=False).tail(1)["pos"].to_numpy()
    split[chosen] = label

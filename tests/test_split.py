"""The split is disjoint, seeded, independent of input order, and never empties a user's train set."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrec.config import SplitConfig
from graphrec.ingest.split import assign_splits

edges_strategy = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 30)), min_size=1, max_size=120, unique=True)


def _frame(pairs, with_ts=False):
    df = pd.DataFrame({"user": [f"u{u}" for u, _ in pairs], "item": [f"i{i}" for _, i in pairs], "split": None})
    if with_ts:
        df["ts"] = pd.array(np.arange(len(df)) * 7 % 13, dtype="Int64")
    return df


@settings(max_examples=60, deadline=None)
@given(edges_strategy, st.integers(0, 2**31 - 1), st.booleans())
def test_split_invariants(pairs, seed, with_ts):
    df = _frame(pairs, with_ts)
    labels, method = assign_splits(df, SplitConfig(seed=seed), has_test_file=False)
    assert method == ("last" if with_ts else "random")
    assert set(labels) <= {"train", "valid", "test"}
    per_user = pd.DataFrame({"user": df["user"], "s": labels}).groupby("user")["s"]
    for user, s in per_user:
        s = list(s)
        assert s.count("test") <= 1 and s.count("valid") <= 1
        assert "train" in s  # a hold-out never takes a user's last train edge
        n = len(s)
        assert s.count("test") == (1 if n >= 2 else 0)
        assert s.count("valid") == (1 if n >= 3 else 0)
    # the same edges in another order get the same labels
    perm = np.random.default_rng(seed).permutation(len(df))
    labels2, _ = assign_splits(df.iloc[perm].reset_index(drop=True), SplitConfig(seed=seed), False)
    assert list(labels2) == list(labels[perm])


def test_seed_changes_the_random_split_and_is_repeatable():
    pairs = [(u, i) for u in range(50) for i in range(10)]
    df = _frame(pairs)
    a, _ = assign_splits(df, SplitConfig(seed=1), False)
    b, _ = assign_splits(df, SplitConfig(seed=1), False)
    c, _ = assign_splits(df, SplitConfig(seed=2), False)
    assert list(a) == list(b) and list(a) != list(c)


def test_last_method_holds_out_the_latest_purchase():
    df = pd.DataFrame({"user": ["u"] * 3, "item": ["x", "y", "z"], "split": None,
                       "ts": pd.array([30, 10, 20], dtype="Int64")})
    labels, method = assign_splits(df, SplitConfig(), False)
    assert method == "last" and list(labels) == ["test", "train", "valid"]


def test_file_split_keeps_given_test_edges():
    df = pd.DataFrame({"user": ["u", "u", "u", "v"], "item": ["x", "y", "z", "x"],
                       "split": [None, "test", None, None]})
    labels, method = assign_splits(df, SplitConfig(valid=False), True)
    assert method == "file" and list(labels) == ["train", "test", "train", "train"]

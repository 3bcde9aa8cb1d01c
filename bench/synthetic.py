"""Seeded synthetic multi-behavior logs shaped like an e-commerce cascade (view ⊇ cart ⊇ buy, mostly).

Used by the ingest benchmark (Beibei's published size) and by tests (tiny sizes). Item popularity is
Zipf-like and user activity log-normal, so degrees are skewed like real logs; a small share of carts
and buys have no upstream interaction, as real logs do (cascade violations).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Beibei's full published size (HPMR / GHCF Table 1).
BEIBEI_SIZE = dict(users=21_716, items=7_977, views=2_412_586, carts=642_622, buys=304_576)


def _unique_pairs(rng: np.random.Generator, n: int, users: int, items: int, exclude: set | None = None) -> np.ndarray:
    activity = rng.lognormal(0.0, 0.8, users)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    rng.shuffle(popularity)
    pu, pi = activity / activity.sum(), popularity / popularity.sum()
    keys = np.empty(0, dtype=np.int64)
    while len(keys) < n:
        m = int((n - len(keys)) * 1.3) + 16
        k = rng.choice(users, m, p=pu).astype(np.int64) * items + rng.choice(items, m, p=pi)
        keys = np.unique(np.concatenate([keys, k]))
        if exclude is not None:
            keys = np.setdiff1d(keys, exclude, assume_unique=True)
    return rng.choice(keys, n, replace=False)


def cascade_log(users: int, items: int, views: int, carts: int, buys: int, seed: int = 0,
                violation_rate: float = 0.02, timestamps: bool = True) -> pd.DataFrame:
    """Long-format log (user, item, behavior[, timestamp]) with exactly the requested unique counts."""
    rng = np.random.default_rng(seed)
    view_keys = _unique_pairs(rng, views, users, items)
    n_cart_out = int(carts * violation_rate)
    cart_keys = np.concatenate([rng.choice(view_keys, carts - n_cart_out, replace=False),
                                _unique_pairs(rng, n_cart_out, users, items, exclude=view_keys)])
    n_buy_out = int(buys * violation_rate)
    buy_in = rng.choice(cart_keys, buys - n_buy_out, replace=False)
    buy_keys = np.concatenate([buy_in, _unique_pairs(rng, n_buy_out, users, items,
                                                     exclude=np.union1d(view_keys, cart_keys))])
    parts = []
    t0 = 1_700_000_000
    base_ts = {}
    for name, keys, lag in (("view", view_keys, 0), ("cart", cart_keys, 3_600), ("buy", buy_keys, 7_200)):
        df = pd.DataFrame({"user": keys // items, "item": keys % items, "behavior": name})
        if timestamps:
            start = rng.integers(t0, t0 + 30 * 86_400, len(keys))
            df["timestamp"] = start + lag + rng.integers(0, 3_600, len(keys))
        parts.append(df)
        base_ts[name] = len(keys)
    log = pd.concat(parts, ignore_index=True)
    log["user"] = "u" + log["user"].astype(str)
    log["item"] = "i" + log["item"].astype(str)
    return log.sample(frac=1.0, random_state=seed).reset_index(drop=True)

"""Two-stage serving: the recall run retrieves candidates, the ranking run orders them by the
weighted task probabilities, and each recommendation carries every task's probability."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from graphrec.errors import BadValue
from graphrec.evaluate import UserItems
from graphrec.ranking.data import RankingData
from graphrec.ranking.train import open_ranking, predict, score_weights


@dataclass(frozen=True)
class RankedRecommendation:
    user: str
    item: str
    rank: int
    score: float                   # Σ_k w_k · p_k
    probs: dict[str, float]        # task -> probability
    recall_rank: int               # 1-based rank in the recall run's list


def recommend_ranked(run_dir: str | Path, users: list[str], k: int = 10, device: str = "cpu",
                     weights: list[float] | None = None) -> tuple[list[RankedRecommendation], dict]:
    """Top-k of each user's recall candidates by the ranking run's weighted task score. Seen items
    (every purchase the snapshot holds for the user) are excluded, as in one-stage ``recommend``."""
    if k < 1:
        raise BadValue(f"-k must be >= 1; got {k}")
    info, rc, model, src = open_ranking(run_dir, device)
    w = np.asarray(weights, dtype=np.float32) if weights is not None else score_weights(rc, len(src.meta.tasks))
    if len(w) != len(src.meta.tasks):
        raise BadValue(f"--weights has {len(w)} values for the tasks {', '.join(src.meta.tasks)}")
    s = src.snapshot
    idx = s.users.indices(users)
    target = s.target
    seen = UserItems.from_pairs(target.user.astype(np.int64), target.item.astype(np.int64), s.n_users)
    ls = src.lists(torch.as_tensor(idx, dtype=torch.int64), seen)
    data = RankingData(src.meta, src.user_dense, src.item_dense, {"serve": ls})
    probs = predict(model, data, ls, torch.device(device))
    score = probs @ w
    out = []
    for g, key in enumerate(users):
        lo, hi = int(ls.offsets[g]), int(ls.offsets[g + 1])
        order = lo + np.lexsort((np.arange(hi - lo), -score[lo:hi]))[:k]  # stable: ties keep the recall order
        for rank, r in enumerate(order, start=1):
            out.append(RankedRecommendation(key, s.items.key(int(ls.items[r])), rank, float(score[r]),
                                            {t: float(probs[r, j]) for j, t in enumerate(src.meta.tasks)},
                                            int(r - lo) + 1))
    return out, info

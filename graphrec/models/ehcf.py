"""EHCF (Chen et al., AAAI 2020) as in the reference code (MODELS.md §3).

No graph: one user table P and one item table Q shared by every behavior, and one prediction vector
h_k per behavior, built along the cascade by linear transfers:

    h_first = H1,    h_j = Σ_{i<j} (W_ij h_i + b_ij)

so with view → cart → buy, h_cart = W_vc h_view + b_vc and h_buy = (W_vb h_view + b_vb) +
(W_cb h_cart + b_cb) exactly as the reference, and with cart → buy (the bundled data) h_buy =
W_cb h_cart + b_cb. ŷ_k(u, i) = Σ_d p_ud q_id h_kd; loss Σ_k λ_k NS_k (whole-data, c0 = neg_weight[k])
+ weight_decay · Σ l2(W_ij) (the transfer biases, H1 and the embeddings are not regularised).
Tables: truncated normal std 0.01; H1, W, b: uniform(±sqrt(3/d)). User-embedding dropout
(drop 0.5) in training only. Test score: ŷ of the target behavior.

One deviation: the reference's item table has an extra trainable pad row (id n_items) that its
positive lists are padded with; it is masked out of the positive term but enters the all-item Gram
term. graphrec has no pad row (positives are (row, item) pairs), so the Gram covers real items only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from graphrec.errors import BadValue
from graphrec.losses import l2
from graphrec.models.base import (
    Batch,
    GraphFreeRecommender,
    GraphMeta,
    Graphs,
    ScoreFn,
    bilinear_scorer,
    dropout,
    resolve_per_behavior,
    weighted_whole_data_loss,
)


@dataclass(frozen=True)
class EHCFParams:
    dim: int = 64
    coefficient: tuple[float, ...] | None = None      # λ per behavior, cascade order; None: default_coefficient
    neg_weight: tuple[float, ...] | None = None       # c0 per behavior; None: 0.1 each
    weight_decay: float = 1e-4                     # on the transfer matrices W_ij only
    user_dropout: float = 0.5                      # drop rate of the batch's user embeddings (training)
    init_std: float = 0.01                         # truncated normal (±2 std) for the tables

    def __post_init__(self) -> None:
        if not 0.0 <= self.user_dropout < 1.0:
            raise BadValue("user_dropout must be in [0, 1)")


def _uniform(*shape: int, bound: float) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class EHCF(GraphFreeRecommender):
    batching = "users"
    loss_reduction = "sum"
    config_key = "ehcf"  # the models.<key> section its params come from

    def __init__(self, params: EHCFParams, meta: GraphMeta):
        super().__init__()
        k = len(meta.behaviors)
        self.params, self.meta = resolve_per_behavior(params, meta, self.config_key), meta
        d, std = params.dim, params.init_std
        self.user = nn.Parameter(nn.init.trunc_normal_(torch.empty(meta.n_users, d), std=std, a=-2 * std, b=2 * std))
        self.item = nn.Parameter(nn.init.trunc_normal_(torch.empty(meta.n_items, d), std=std, a=-2 * std, b=2 * std))
        bound = math.sqrt(3.0 / d)
        self.h1 = _uniform(d, bound=bound)
        # transfer i -> j for every ordered pair i < j (cascade indices)
        self.w = nn.ParameterDict({f"{i}_{j}": _uniform(d, d, bound=bound) for i in range(k) for j in range(i + 1, k)})
        self.b = nn.ParameterDict({f"{i}_{j}": _uniform(d, bound=bound) for i in range(k) for j in range(i + 1, k)})

    def prediction_vectors(self) -> list[Tensor]:
        """h_k per behavior in cascade order: h_0 = H1, h_j = Σ_{i<j} (W_ij h_i + b_ij)."""
        hs = [self.h1]
        for j in range(1, len(self.meta.behaviors)):
            hs.append(sum(self.w[f"{i}_{j}"] @ hs[i] + self.b[f"{i}_{j}"] for i in range(j)))
        return hs

    def loss(self, batch: Batch, graphs: Graphs) -> tuple[Tensor, dict[str, float]]:
        p = self.params
        users = dropout(self.user[batch.users], p.user_dropout, self.training)
        hs = self.prediction_vectors()
        total, parts = weighted_whole_data_loss(self.meta, users, self.item, hs, batch, p.coefficient,
                                                p.neg_weight)
        if len(self.w):
            reg = p.weight_decay * l2(*self.w.values())
            parts["reg"] = float(reg.detach())
            total = total + reg
        return total, parts

    def scorer(self, graphs: Graphs) -> ScoreFn:
        return bilinear_scorer(self.user * self.prediction_vectors()[-1], self.item)

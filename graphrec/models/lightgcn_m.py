"""LightGCN_M: LightGCN over every behavior graph with the whole-data loss (HPMR's baseline).

MODELS.md names the baseline but not its equations; this is graphrec's definition: LightGCN's
weight-free propagation summed over behaviors with weights λ_k, E^{l+1} = Σ_k λ_k Â_k E^l, the
layer mean as final embedding, one learned prediction vector h_k per behavior,
ŷ_k(u, i) = Σ_d e_ud e_id h_kd, and the loss Σ_k λ_k NS_k + decay·(l2(batch users) + l2(all items)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from graphrec.losses import l2
from graphrec.models.base import (Batch, GraphMeta, Graphs, Recommender, ScoreFn, bilinear_scorer,
                                  check_per_behavior, drop_edges, dropout, weighted_whole_data_loss, xavier)


@dataclass(frozen=True)
class LightGCNMParams:
    dim: int = 64
    layers: int = 3
    coefficient: tuple[float, ...] = (5 / 6, 1 / 6)
    neg_weight: tuple[float, ...] = (0.1, 0.1)
    decay: float = 10.0
    mess_dropout: float = 0.2
    node_dropout: float = 0.1


class LightGCNM(Recommender):
    batching = "users"

    def __init__(self, params: LightGCNMParams, meta: GraphMeta):
        super().__init__()
        check_per_behavior(meta, coefficient=params.coefficient, neg_weight=params.neg_weight)
        k = len(meta.behaviors)
        self.params, self.meta = params, meta
        self.user = xavier(meta.n_users, params.dim)
        self.item = xavier(meta.n_items, params.dim)
        self.h = xavier(k, params.dim)

    def forward(self, graphs: Graphs) -> Tensor:
        p = self.params
        x = torch.cat([self.user, self.item])
        outs = [x]
        for _ in range(p.layers):
            x = sum(p.coefficient[k] * (graphs[b] @ x) for k, b in enumerate(self.meta.behaviors)
                    if p.coefficient[k] != 0)
            x = dropout(x, p.mess_dropout, self.training)
            outs.append(x)
        return torch.stack(outs).mean(0)

    def loss(self, batch: Batch, graphs: Graphs) -> tuple[Tensor, dict[str, float]]:
        p, nu = self.params, self.meta.n_users
        e = self(drop_edges(graphs, 1.0 - p.node_dropout, self.training))
        users, items = e[:nu][batch.users], e[nu:]
        total, parts = weighted_whole_data_loss(self.meta, users, items, self.h, batch, p.coefficient,
                                                p.neg_weight)
        reg = l2(users) + l2(items)
        parts["reg"] = float(reg.detach()) * p.decay
        return total + p.decay * reg, parts

    def scorer(self, graphs: Graphs) -> ScoreFn:
        e = self(graphs)
        nu = self.meta.n_users
        return bilinear_scorer(e[:nu] * self.h[-1], e[nu:])

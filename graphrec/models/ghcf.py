"""GHCF (Chen et al., AAAI 2021) as in the reference code (MODELS.md §2).

One shared embedding stream: each layer sums, with weights λ_k, the LeakyReLU of the propagation
over every behavior graph scaled by that behavior's relation vector. λ doubles as propagation
and loss weight (code behavior), so a behavior with λ = 0 takes no part at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphrec.adjacency import users_then_items
from graphrec.errors import BadValue
from graphrec.layers import dropout_rows
from graphrec.losses import l2
from graphrec.models.base import (
    Batch,
    GraphMeta,
    Graphs,
    Recommender,
    ScoreFn,
    bilinear_scorer,
    drop_edges,
    dropout,
    resolve_per_behavior,
    weighted_whole_data_loss,
    xavier,
)


@dataclass(frozen=True)
class GHCFParams:
    dim: int = 64
    layers: int = 4
    coefficient: tuple[float, ...] | None = None      # λ per behavior, cascade order; None: default_coefficient
    neg_weight: tuple[float, ...] | None = None       # c0 per behavior; None: 0.1 each
    decay: float = 10.0
    mess_dropout: float = 0.2
    node_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise BadValue("layers must be >= 1")


class GHCF(Recommender):
    batching = "users"
    loss_reduction = "sum"
    config_key = "ghcf"  # the models.<key> section its params come from
    #: A training step computes the last layer for the batch's users and every item only (all the
    #: loss reads); False computes every row as evaluation does (the same loss; the tests compare).
    restrict_rows: bool = True

    def __init__(self, params: GHCFParams, meta: GraphMeta):
        super().__init__()
        k = len(meta.behaviors)
        self.params, self.meta = resolve_per_behavior(params, meta, self.config_key), meta
        d = params.dim
        self.user = xavier(meta.n_users, d)
        self.item = xavier(meta.n_items, d)
        self.relation = xavier(k, d)
        self.w_gc = nn.ParameterList([xavier(d, d) for _ in range(params.layers)])
        self.w_rel = nn.ParameterList([xavier(d, d) for _ in range(params.layers)])

    def forward(self, graphs: Graphs, batch_users: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Layer-mean embeddings of every node, or with ``batch_users`` of those users then every
        item (the last layer is computed for those rows alone), and the layer-mean relations."""
        p, nu = self.params, self.meta.n_users
        x = torch.cat([self.user, self.item])
        n = x.shape[0]
        rows = None if batch_users is None else torch.cat([batch_users, torch.arange(nu, n, device=x.device)])
        rel = self.relation
        outs, rels = [x], [rel]
        for layer in range(p.layers):
            last = rows is not None and layer == p.layers - 1
            agg = 0
            for k, b in enumerate(self.meta.behaviors):
                if p.coefficient[k] == 0:
                    continue
                z = users_then_items(graphs[b], x, batch_users, nu) if last else graphs[b] @ x
                agg = agg + p.coefficient[k] * F.leaky_relu((z * rel[k]) @ self.w_gc[layer], 0.2)
            x = (dropout_rows(agg, p.mess_dropout, self.training, n, rows) if last
                 else dropout(agg, p.mess_dropout, self.training))
            rel = rel @ self.w_rel[layer]
            outs.append(x)
            rels.append(rel)
        if rows is not None:
            outs = [o.index_select(0, rows) for o in outs[:-1]] + outs[-1:]
        return torch.stack(outs).mean(0), torch.stack(rels).mean(0)

    def loss(self, batch: Batch, graphs: Graphs) -> tuple[Tensor, dict[str, float]]:
        p, nu = self.params, self.meta.n_users
        dropped = drop_edges(graphs, 1.0 - p.node_dropout, self.training)
        if self.restrict_rows:
            e, rbar = self(dropped, batch.users)
            users, items = e.split([batch.users.numel(), self.meta.n_items])
        else:
            e, rbar = self(dropped)
            users, items = e[:nu][batch.users], e[nu:]
        total, parts = weighted_whole_data_loss(self.meta, users, items, rbar, batch, p.coefficient,
                                                p.neg_weight)
        reg = batch.ranks * l2(users) + l2(items)
        parts["reg"] = float(reg.detach()) * p.decay
        return total + p.decay * reg, parts

    def scorer(self, graphs: Graphs) -> ScoreFn:
        e, rbar = self(graphs)
        nu = self.meta.n_users
        return bilinear_scorer(e[:nu] * rbar[-1], e[nu:])

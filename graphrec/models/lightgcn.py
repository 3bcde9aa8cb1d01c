"""LightGCN (He et al., SIGIR 2020) on the target behavior only, trained with BPR.

E^{l+1} = Â E^l without weights or nonlinearity; the final embedding is the mean of all layers
(ego layer included); score = dot product. L2 on the ego embeddings of the batch as in LightGCN's
own code: reg · ½ Σ x² / batch size (TensorFlow's l2_loss per example).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from graphrec.adjacency import SparseAdj, last_layer_rows
from graphrec.errors import BadValue
from graphrec.losses import bpr_loss, l2
from graphrec.models.base import Batch, GraphMeta, Graphs, Recommender, ScoreFn, bilinear_scorer


@dataclass(frozen=True)
class LightGCNParams:
    dim: int = 64
    layers: int = 3
    reg: float = 1e-4
    init_std: float = 0.1
    #: "pairs": every training purchase once per epoch, shuffled; "users": LightGCN's own sampler
    #: (as many draws, each a uniform user and one of their purchases; graphrec.sampling.user_pair_batches).
    sampling: str = "pairs"

    def __post_init__(self) -> None:
        if self.layers < 0:
            raise BadValue("layers must be >= 0")
        if self.sampling not in ("pairs", "users"):
            raise BadValue(f"sampling must be pairs or users; got {self.sampling!r}")


def layer_mean(adj: SparseAdj | None, x: Tensor, layers: int, n_users: int, rows: Tensor | None = None) -> Tensor:
    """LightGCN's propagation: the mean of x, Âx, …, Â^L x over a bipartite graph (users first), for
    every node or for the node ids ``rows`` (the last layer then computed for those rows alone);
    ``adj`` may be None when ``layers`` is 0."""
    if rows is None or layers == 0:
        outs = [x]
        for _ in range(layers):
            x = adj @ x
            outs.append(x)
        e = torch.stack(outs).mean(0)
        return e if rows is None else e.index_select(0, rows)
    acc = x.index_select(0, rows)
    for _ in range(layers - 1):
        x = adj @ x
        acc = acc + x.index_select(0, rows)
    return (acc + last_layer_rows(adj, x, rows, n_users)) / (layers + 1)


class LightGCN(Recommender):
    batching = "pairs"
    #: A training step propagates the last layer for the batch's rows only (the loss reads no
    #: other); False computes every row as evaluation does (the same loss; the tests compare them).
    restrict_rows: bool = True

    @staticmethod
    def relations(meta: GraphMeta) -> tuple[str, ...]:
        return (meta.target,)

    def __init__(self, params: LightGCNParams, meta: GraphMeta):
        super().__init__()
        self.params, self.meta = params, meta
        self.batching = "pairs" if params.sampling == "pairs" else "user_pairs"
        self.user = nn.Parameter(torch.randn(meta.n_users, params.dim) * params.init_std)
        self.item = nn.Parameter(torch.randn(meta.n_items, params.dim) * params.init_std)

    def forward(self, graphs: Graphs, rows: Tensor | None = None) -> Tensor:
        """Final embeddings of every node, or of the node ids ``rows`` (in that order; the last
        layer is then computed for those rows alone)."""
        adj = graphs[self.meta.target] if self.params.layers else None  # no layer reads no graph
        return layer_mean(adj, torch.cat([self.user, self.item]), self.params.layers, self.meta.n_users, rows)

    def loss(self, batch: Batch, graphs: Graphs) -> tuple[Tensor, dict[str, float]]:
        nu, t = self.meta.n_users, self.meta.target
        u, pos, neg = batch.users, batch.pos[t], batch.neg[t]
        if self.restrict_rows:
            eu, ep, en = self(graphs, torch.cat([u, pos + nu, neg + nu])).split([len(u), len(pos), len(neg)])
        else:
            e = self(graphs)
            eu, ep, en = e[:nu][u], e[nu:][pos], e[nu:][neg]
        main = bpr_loss((eu * ep).sum(-1), (eu * en).sum(-1))
        reg = self.params.reg * l2(self.user[u], self.item[pos], self.item[neg]) / len(u)
        return main + reg, {"bpr": float(main.detach()), "reg": float(reg.detach())}

    def scorer(self, graphs: Graphs) -> ScoreFn:
        e = self(graphs)
        nu = self.meta.n_users
        return bilinear_scorer(e[:nu], e[nu:])

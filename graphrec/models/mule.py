"""MuLe (Lee et al., CIKM 2024): multi-grained graph learning, as in its reference code
(../shared/reference/MULE.md, which follows the code wherever the paper's text is not available).

Every graph is propagated by P_g(x; L) = x + Σ_{l=1..L} h^l / l with h^l = norm(Conv_g(h^{l-1})),
norm a row-wise L2 normalisation and Conv weight-free (§4.1). With t the target and a each
auxiliary behavior:

1. unified: e_all = P_{∪ behaviors}(E⁰; L) over every behavior's training pairs;
2. behavior-specific: e_k = P_k(e_all; L) for every behavior k, target included, in parallel;
3. target-intersected: P_{a∩t}(e_a; L) over the a-pairs that are training purchases;
4. target-complemented: P_{a\\t}(e_a; L_tda) over the a-pairs that are not (the derived relation
   ``a_not_t``), with target-guided denoising attention (TDA, §4.3): node s sends its row to a
   neighbour r with weight softmax over s's neighbours of ⟨e_t[s], h[r]⟩
   (``graphrec.adjacency.attention_spmm``); GCN-normalised D^-1/2 A D^-1/2 elsewhere;
5. the multi-grained aggregator (§6): z̃ = Σ_k β_k e_k with β = softmax_k ℓ₁([e_t ‖ e_k]), then
   z = Σ_m γ_m v_m over the complemented and intersected embeddings v_m, γ = softmax_m ℓ₂([z̃ ‖ v_m]).

Score ⟨z_u, z_i⟩; the loss is BPR on the target's (user, purchase, sampled non-purchase) triples,
−log(1e-10 + σ(ŷ⁺ − ŷ⁻)), every step over the whole graph. ``weight_decay`` is the reference's
coupled Adam L2 over every parameter, written as ½·wd·Σθ² (the same gradient, wd·θ).

As the spec notes (§6), the key and bias of each ℓ cancel in its softmax, so stage 1 has no effect
on z; both stages are kept, as in the code, for the same parameters and the same decay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphrec.adjacency import SparseAdj, attention_spmm, spmm
from graphrec.errors import BadValue
from graphrec.losses import floored_bpr_loss
from graphrec.models.base import (
    Batch,
    GraphMeta,
    Graphs,
    Recommender,
    ScoreFn,
    bilinear_scorer,
    require_upstream,
    xavier,
)
from graphrec.schema import derived_name, intersection_name, union_name

#: Inside MuLe's log (`self.gamma`): a margin that underflows σ costs at most −log 1e-10 ≈ 23.
BPR_EPS = 1e-10


@dataclass(frozen=True)
class MuLeParams:
    dim: int = 64
    layers: int = 1                 # gnn_layers: unified, behavior-specific and target-intersected graphs
    tda_layers: int = 4             # target-complemented graphs (Taobao 4, Tmall and Jdata 5)
    weight_decay: float = 0.0       # coupled L2 on every parameter (Taobao and Jdata 0, Tmall 1e-5)

    def __post_init__(self) -> None:
        if self.dim < 1 or self.layers < 0 or self.tda_layers < 0:
            raise BadValue(f"dim must be >= 1 and layers, tda_layers >= 0; got dim {self.dim}, layers "
                           f"{self.layers}, tda_layers {self.tda_layers}")
        if self.weight_decay < 0:
            raise BadValue(f"weight_decay must be >= 0; got {self.weight_decay}")


def propagate(adj: SparseAdj, x: Tensor, layers: int, query: Tensor | None = None) -> Tensor:
    """P_g(x; L): the input plus every normalised layer weighted 1/l; a TDA layer when ``query`` is
    given. A node without edges in ``adj`` keeps ``x``."""
    out, h = x, x
    for layer in range(1, layers + 1):
        h = F.normalize(spmm(adj, h) if query is None else attention_spmm(adj, query, h), dim=1)
        out = out + h / layer
    return out


def aggregate(score: nn.Linear, key: Tensor, values: list[Tensor]) -> Tensor:
    """Σ_m softmax_m(score([key ‖ v_m])) v_m per node."""
    # score([key ‖ v]) = W_key·key + W_v·v + b: the key's half once, and no (nodes × 2d) concatenations
    d = key.shape[1]
    shared = F.linear(key, score.weight[:, :d], score.bias)
    logits = torch.cat([shared + F.linear(v, score.weight[:, d:]) for v in values], dim=1)
    weights = torch.softmax(logits, dim=1)
    return sum(weights[:, m:m + 1] * v for m, v in enumerate(values))


class MuLe(Recommender):
    batching = "pairs"

    @staticmethod
    def relations(meta: GraphMeta) -> tuple[str, ...]:
        aux, t = meta.behaviors[:-1], meta.target
        return ((union_name(*meta.behaviors),) + meta.behaviors + tuple(intersection_name(a, t) for a in aux)
                + tuple(derived_name(a, t) for a in aux))

    @classmethod
    def label_relations(cls, meta: GraphMeta) -> tuple[str, ...]:
        # the graphs above are these relations or set operations on them (TrainData.graph_edges)
        return meta.behaviors + tuple(derived_name(a, meta.target) for a in meta.behaviors[:-1])

    def __init__(self, params: MuLeParams, meta: GraphMeta):
        super().__init__()
        require_upstream(meta, "MuLe", "needs an auxiliary behavior before the target")
        self.params, self.meta = params, meta
        d = params.dim
        self.user = xavier(meta.n_users, d)
        self.item = xavier(meta.n_items, d)
        # ℓ₁ over the behavior-specific embeddings, ℓ₂ over the target-related ones; Xavier weights,
        # torch's default bias init, as in the code
        self.behavior_score = nn.Linear(2 * d, 1)
        self.target_score = nn.Linear(2 * d, 1)
        for lin in (self.behavior_score, self.target_score):
            nn.init.xavier_uniform_(lin.weight)

    def forward(self, graphs: Graphs) -> Tensor:
        """z for every node (users, then items)."""
        p, b, t = self.params, self.meta.behaviors, self.meta.target
        unified = propagate(graphs[union_name(*b)], torch.cat([self.user, self.item]), p.layers)
        e = {k: propagate(graphs[k], unified, p.layers) for k in b}
        complemented = [propagate(graphs[derived_name(a, t)], e[a], p.tda_layers, query=e[t]) for a in b[:-1]]
        intersected = [propagate(graphs[intersection_name(a, t)], e[a], p.layers) for a in b[:-1]]
        key = aggregate(self.behavior_score, e[t], [e[k] for k in b])
        return aggregate(self.target_score, key, complemented + intersected)

    def loss(self, batch: Batch, graphs: Graphs) -> tuple[Tensor, dict[str, float]]:
        nu, t = self.meta.n_users, self.meta.target
        z = self(graphs)
        zu = z.index_select(0, batch.users)
        pos = (zu * z.index_select(0, batch.pos[t] + nu)).sum(-1)
        neg = (zu * z.index_select(0, batch.neg[t] + nu)).sum(-1)
        main = floored_bpr_loss(pos, neg, BPR_EPS)
        parts = {"bpr": float(main.detach())}
        if self.params.weight_decay == 0:
            return main, parts
        reg = 0.5 * self.params.weight_decay * sum(w.square().sum() for w in self.parameters())
        parts["reg"] = float(reg.detach())
        return main + reg, parts

    def scorer(self, graphs: Graphs) -> ScoreFn:
        z = self(graphs)
        nu = self.meta.n_users
        return bilinear_scorer(z[:nu], z[nu:])

"""HistGCN: graphrec's own recall model. Graph propagation for who-likes-what, plus the user's own
history with the item: on multi-behavior logs the next purchase is most often an item the user
has already viewed or carted (on taobao_mbcgcn 85% of the test purchases, and 81% of the training
ones), and a recall model should know that instead of having to rediscover it through embeddings.

Score of user u and item i, with e the LightGCN layer mean over ``graph`` and a the upstream
behaviors (every behavior but the target):

    s(u, i) = ⟨e_u, e_i⟩ + b_i + Σ_a 1[(u, i) ∈ R_a] · (w_a + c_{a,i})

b_i is an item bias (popularity), w_a how much having done a with an item says about buying it,
c_{a,i} that per item (conversion: some items are viewed by many and bought by few). Trained with
BPR on the target's training pairs against uniform negatives (as MuLe and LightGCN), with Adam
at 3e-3 in the presets. On taobao_mbcgcn (`fixed`, 100 epochs, 3 seeds) it scores HR@10 0.3206 ±
0.0010 / NDCG@10 0.1598 ± 0.0005, against 0.1918 / 0.1103 for MuLe, the best published model, and
0.2593 / 0.1253 for the untrained history floor (docs/results.md).

``hard_negatives`` replaces a share of them by a draw from the user's own upstream items that are
not training purchases (the derived relation ``<first behavior>_not_<target>``, e.g.
``view_not_buy``): the "unique relations as negatives" idea. It is off by default because it
hurts: those items hold the user's future purchase, and the longer their pairs are pushed down the
more the model learns to rank exactly that item last (docs/results.md, ideas table: HR@10 0.2231
after 30 epochs and 0.1875 after 100 with half the negatives drawn so, against 0.3003 without,
at the first preset's Adam 1e-3 and L2 1e-4).

``history``, ``item_bias`` and ``conversion_bias`` switch the parts off one by one (the ablation in
docs/results.md); with all three off this is LightGCN on ``graph``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from graphrec.adjacency import has_pairs, sample_row_entries
from graphrec.errors import BadValue
from graphrec.losses import bpr_loss, l2
from graphrec.models.base import Batch, GraphMeta, Graphs, Recommender, ScoreFn, bilinear_scorer, require_upstream
from graphrec.models.lightgcn import layer_mean
from graphrec.schema import derived_name, union_name

GRAPHS = ("union", "target")
SCOPES = ("terms", "all")


@dataclass(frozen=True)
class HistGCNParams:
    dim: int = 64
    layers: int = 2
    graph: str = "union"            # "union": the pairs of any behavior; "target": training purchases only
    history: bool = True            # the terms w_a (+ c_{a,i}) on the user's own upstream items
    item_bias: bool = True          # b_i
    conversion_bias: bool = True    # c_{a,i} (needs history)
    hard_negatives: float = 0.0     # share of negatives drawn from the user's upstream, non-purchased items
    #: what those draws train: "all", or "terms" (item bias and history terms only; the embedding
    #: scores of both sides of a drawn pair are constants)
    hard_negative_scope: str = "all"
    #: L2 on the batch's ego embeddings, per example as LightGCN, at 10× its 1e-4: with Adam at 3e-3
    #: (the presets' model_train.histgcn.lr) +6.5% HR@10 on taobao_mbcgcn over 1e-4 at 1e-3 (3 seeds)
    reg: float = 1e-3
    init_std: float = 0.01

    def __post_init__(self) -> None:
        if self.dim < 1 or self.layers < 0:
            raise BadValue(f"dim must be >= 1 and layers >= 0; got dim {self.dim}, layers {self.layers}")
        if self.graph not in GRAPHS:
            raise BadValue(f"graph must be one of {', '.join(GRAPHS)}; got {self.graph!r}")
        if not 0.0 <= self.hard_negatives <= 1.0:
            raise BadValue(f"hard_negatives is a share of the negatives, in [0, 1]; got {self.hard_negatives}")
        if self.hard_negative_scope not in SCOPES:
            raise BadValue(f"hard_negative_scope must be one of {', '.join(SCOPES)}; got {self.hard_negative_scope!r}")
        if self.conversion_bias and not self.history:
            raise BadValue("conversion_bias is a per-item part of the history terms; set history=true or "
                           "conversion_bias=false")
        if self.reg < 0 or self.init_std <= 0:
            raise BadValue(f"reg must be >= 0 and init_std > 0; got reg {self.reg}, init_std {self.init_std}")


class HistGCN(Recommender):
    batching = "pairs"

    @staticmethod
    def encoder_graph(meta: GraphMeta, graph: str) -> str:
        return union_name(*meta.behaviors) if graph == "union" else meta.target

    @staticmethod
    def relations(meta: GraphMeta) -> tuple[str, ...]:
        # both encoder graphs are named so the trainer builds whichever ``graph`` asks for; the
        # upstream behaviors' graphs are read for their structure (who did what), the derived one
        # for hard negatives
        return ((union_name(*meta.behaviors), meta.target) + meta.behaviors[:-1]
                + (derived_name(meta.behaviors[0], meta.target),))

    @classmethod
    def label_relations(cls, meta: GraphMeta) -> tuple[str, ...]:
        return meta.behaviors + (derived_name(meta.behaviors[0], meta.target),)

    def __init__(self, params: HistGCNParams, meta: GraphMeta):
        super().__init__()
        require_upstream(meta, "histgcn", "reads the user's upstream behaviors")
        self.params, self.meta = params, meta
        self.aux = meta.behaviors[:-1]
        self.pool = derived_name(meta.behaviors[0], meta.target)
        self.graph = self.encoder_graph(meta, params.graph)
        self.user = nn.Parameter(torch.randn(meta.n_users, params.dim) * params.init_std)
        self.item = nn.Parameter(torch.randn(meta.n_items, params.dim) * params.init_std)
        self.bias = nn.Parameter(torch.zeros(meta.n_items)) if params.item_bias else None
        self.weight = nn.Parameter(torch.zeros(len(self.aux))) if params.history else None
        self.conversion = nn.Parameter(torch.zeros(len(self.aux), meta.n_items)) if params.conversion_bias else None

    def forward(self, graphs: Graphs, rows: Tensor | None = None) -> Tensor:
        adj = graphs[self.graph] if self.params.layers else None
        return layer_mean(adj, torch.cat([self.user, self.item]), self.params.layers, self.meta.n_users, rows)

    def pair_terms(self, graphs: Graphs, users: Tensor, items: Tensor) -> Tensor | None:
        """b_i + Σ_a 1[(u, i) ∈ R_a](w_a + c_{a,i}) for each (users[k], items[k]); None when off."""
        out = self.bias.index_select(0, items) if self.bias is not None else None
        if self.weight is not None:
            for k, a in enumerate(self.aux):
                term = has_pairs(graphs[a], users, items, self.meta.n_users) * self.history_term(k, items)
                out = term if out is None else out + term
        return out

    def history_term(self, k: int, items: Tensor) -> Tensor:
        """w_a + c_{a,i} of upstream behavior ``k`` for each of ``items`` (w_a alone without c)."""
        w = self.weight[k].expand(items.shape)
        return w if self.conversion is None else w + self.conversion[k].index_select(0, items)

    def negatives(self, graphs: Graphs, users: Tensor, uniform: Tensor) -> tuple[Tensor, Tensor]:
        """The uniform negatives with a share ``hard_negatives`` replaced by a draw from the user's
        upstream, non-purchased items (users without any keep their uniform draw), and which were."""
        share = self.params.hard_negatives
        if share == 0 or not self.training:
            return uniform, torch.zeros(uniform.shape, dtype=torch.bool, device=uniform.device)
        node, found = sample_row_entries(graphs[self.pool], users)
        take = found & (torch.rand(users.shape, device=users.device) < share)
        return torch.where(take, node - self.meta.n_users, uniform), take

    def loss(self, batch: Batch, graphs: Graphs) -> tuple[Tensor, dict[str, float]]:
        nu, t = self.meta.n_users, self.meta.target
        u, pos = batch.users, batch.pos[t]
        neg, hard = self.negatives(graphs, u, batch.neg[t])
        eu, ep, en = self(graphs, torch.cat([u, pos + nu, neg + nu])).split([len(u), len(pos), len(neg)])
        sp, sn = (eu * ep).sum(-1), (eu * en).sum(-1)
        if self.params.hard_negative_scope == "terms":
            # both sides: a drawn pair then trains b, w and c alone (which upstream items get bought),
            # while the embeddings learn from the uniform pairs only. Holding only the negative side
            # constant let the positive's embedding score grow without bound (loss 1.2 → 35).
            sp, sn = torch.where(hard, sp.detach(), sp), torch.where(hard, sn.detach(), sn)
        tp, tn = self.pair_terms(graphs, u, pos), self.pair_terms(graphs, u, neg)
        if tp is not None:
            sp, sn = sp + tp, sn + tn
        main = bpr_loss(sp, sn)
        reg = self.params.reg * l2(self.user[u], self.item[pos], self.item[neg]) / len(u)
        return main + reg, {"bpr": float(main.detach()), "reg": float(reg.detach())}

    def scorer(self, graphs: Graphs) -> ScoreFn:
        e = self(graphs)
        nu = self.meta.n_users
        base = bilinear_scorer(e[:nu], e[nu:])

        def score(users: Tensor) -> Tensor:
            s = base(users)
            if self.bias is not None:
                s = s + self.bias
            if self.weight is not None:
                for k, a in enumerate(self.aux):
                    local, col, _ = graphs[a].row_entries(users)
                    s.index_put_((local, col - nu), self.history_term(k, col - nu), accumulate=True)
            return s

        return score

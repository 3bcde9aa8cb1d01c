"""HPMR (Meng et al., KDD 2023), as in the reference code (MODELS.md §1), for any behavior cascade.

Per behavior k an encoder propagates shared ego embeddings over Â_k, scaled element-wise by a
relation vector that evolves per layer. For each ordered pair (i, j) of behaviors the projection
network splits e_i into the part shared with e_j (C_ij) and the unique part (N_ij); the shared part
is transferred onto j's graph (SIT: S_ij = T_j(C_ij)), the unique part is supervised with the
derived relation i_not_j (URS) and re-enhanced back onto i (URR: Q_ij = T_i(R_ij)). Users of
behavior k are the mean of e_k and the transferred parts that land on k.

With the paper's three behaviors this gives exactly u_view = (e_view + Q_vc + Q_vb)/3,
u_cart = (e_cart + S_vc + Q_cb)/3, u_buy = (e_buy + S_vb + S_cb)/3. With cart → buy only (the
bundled data) it is u_cart = (e_cart + Q_cb)/2, u_buy = (e_buy + S_cb)/2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphrec.adjacency import spmm, spmm_rows, users_then_items
from graphrec.errors import BadValue
from graphrec.layers import dropout_rows, relation_layer
from graphrec.losses import l2, whole_data_loss
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
    xavier,
)
from graphrec.schema import derived_name

Encoder = Literal["gccf", "lightgcn", "gcn", "ghcf", "ngcf"]


@dataclass(frozen=True)
class HPMRParams:
    dim: int = 64
    encoder: Encoder = "gccf"
    layers: int = 3                 # gnn_layer
    transfer_layers: int = 1        # transfer_gnn_layer
    alpha: tuple[float, float, float] = (0.0, 1.0, 3.0)  # weights of (main, transfer, unique) losses
    coefficient: tuple[float, ...] | None = None      # λ per behavior, cascade order; None: default_coefficient
    neg_weight: tuple[float, ...] | None = None       # c0 per behavior (`wid`); None: 0.1 each
    unique_neg_weight: float = 0.1                        # c0 of the unique (i_not_j) losses
    decay: float = 10.0
    re_mult: float = 2.0
    projection_scale: float = 0.1   # code scales projection outputs (and re-enhancement) by 0.1 (§1.11.3); paper: 1.0
    mess_dropout: float = 0.2       # drop rate
    node_dropout: float = 0.1       # drop rate of adjacency nonzeros
    use_sit: bool = True            # shared-information transfer
    use_urr: bool = True            # unique-relation re-enhancement
    use_urs: bool = True            # unique-relation supervision
    test_score: Literal["main", "transfer"] = "main"  # code: e_buy·e_buy·r̄ (§1.7); "transfer": u_buy instead

    def __post_init__(self) -> None:
        if self.encoder not in ("gccf", "lightgcn", "gcn", "ghcf", "ngcf"):
            raise BadValue(f"unknown encoder {self.encoder!r}; among choices: gccf, lightgcn, gcn, ghcf, ngcf")
        if self.layers < 1 or self.transfer_layers < 1:
            raise BadValue("layers and transfer_layers must be >= 1")
        if not 0 <= self.mess_dropout < 1 or not 0 <= self.node_dropout < 1:
            raise BadValue("mess_dropout and node_dropout are drop rates in [0, 1)")
        if self.test_score not in ("main", "transfer"):
            raise BadValue(f"unknown test_score {self.test_score!r}; among choices: main, transfer")
        if len(self.alpha) != 3:
            raise BadValue(f"alpha needs three weights (main, transfer, unique); got {list(self.alpha)}")

    @property
    def ablation(self) -> str:
        flags = (self.use_sit, self.use_urr, self.use_urs)
        if flags == (False, False, False):
            return "w/o PTN"
        return ", ".join(f"w/o {n}" for n, f in zip(("SIT", "URR", "URS"), flags) if not f) or "full"


class HPMR(Recommender):
    batching = "users"
    loss_reduction = "sum"
    config_key = "hpmr"  # the models.<key> section its params come from
    #: A training step computes the batch's user rows only where the loss reads them (forward's
    #: ``batch_users``). False computes every row as evaluation does: the same loss, slower; the
    #: tests compare the two.
    restrict_rows: bool = True

    @classmethod
    def label_relations(cls, meta: GraphMeta) -> tuple[str, ...]:
        # The derived i_not_j relations supervise the unique parts (URS). Propagating over their
        # graphs has no effect on any output in the reference code (§1.3), so they are labels only.
        return meta.behaviors + tuple(derived_name(i, j) for i, j in meta.pairs())

    def __init__(self, params: HPMRParams, meta: GraphMeta):
        super().__init__()
        k = len(meta.behaviors)
        self.params, self.meta = resolve_per_behavior(params, meta, self.config_key), meta
        d, n_layers = params.dim, max(params.layers, params.transfer_layers)
        self.user = xavier(meta.n_users, d)
        self.item = xavier(meta.n_items, d)
        self.relation = xavier(k, d)
        self.w_rel = nn.ParameterList([xavier(d, d) for _ in range(n_layers)])
        # The "noise" relation chain only feeds the unique-relation scores (§1.3).
        self.w_rel_noise = nn.ParameterList([xavier(d, d) for _ in range(params.layers)])
        if params.encoder in ("gcn", "ghcf", "ngcf"):
            self.w_gc = nn.ParameterList([xavier(d, d) for _ in range(n_layers)])
            self.b_gc = nn.ParameterList([xavier(1, d) for _ in range(n_layers)])
        if params.encoder == "ngcf":
            self.w_bi = nn.ParameterList([xavier(d, d) for _ in range(n_layers)])
            self.b_bi = nn.ParameterList([xavier(1, d) for _ in range(n_layers)])

    # ---------------------------------------------------------------------------------- propagation

    def _layer(self, adj, x: Tensor, rel: Tensor, ego: Tensor, layer: int, rows: int | None = None) -> Tensor:
        if rows is not None:
            ego = ego[:rows]
        return self._activate(spmm(adj, x, rows), rel, ego, layer)

    def _activate(self, z: Tensor, rel: Tensor, ego: Tensor, layer: int) -> Tensor:
        """The encoder's layer on propagated rows ``z`` (``ego``: the same rows of the input)."""
        z = z * rel
        enc = self.params.encoder
        if enc == "gccf":
            return F.leaky_relu(z, 0.2)
        if enc == "lightgcn":
            return z
        if enc == "gcn":
            return F.leaky_relu(z @ self.w_gc[layer] + self.b_gc[layer], 0.2)
        if enc == "ghcf":
            return F.leaky_relu(z @ self.w_gc[layer], 0.2)
        g = F.leaky_relu(z @ self.w_gc[layer] + self.b_gc[layer], 0.2)  # ngcf
        return g + F.leaky_relu((ego * g) @ self.w_bi[layer] + self.b_bi[layer], 0.2)

    def _encode(self, adj, ego: Tensor, rel0: Tensor, batch_users: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encoder of one behavior: layer-mean embeddings and layer-mean relation vector. With
        ``batch_users`` the embeddings hold those users' rows, then every item's: the last layer
        computes only them (the loss reads nothing else, and in a bipartite graph the earlier
        layers' other rows still feed these)."""
        x, rel = ego, rel0
        acc, rel_acc = ego, rel0
        nu, n = self.meta.n_users, ego.shape[0]
        p = self.params
        # GCCF and LightGCN layers are elementwise after the product: one fused op (relation_layer)
        slope = {"gccf": 0.2, "lightgcn": 1.0}.get(p.encoder)
        for layer in range(p.layers):
            if batch_users is not None and layer == p.layers - 1:
                rows = torch.cat([batch_users, torch.arange(nu, n, device=ego.device)])
                z = users_then_items(adj, x, batch_users, nu)
                if slope is not None:
                    x, acc = relation_layer(z, rel, acc.index_select(0, rows), slope, p.mess_dropout, self.training,
                                            n, rows)
                else:
                    x = self._activate(z, rel, ego.index_select(0, rows), layer)
                    x = dropout_rows(x, p.mess_dropout, self.training, n, rows)
                    acc = acc.index_select(0, rows) + x
            elif slope is not None:
                x, acc = relation_layer(spmm(adj, x), rel, acc, slope, p.mess_dropout, self.training)
            else:
                x = self._layer(adj, x, rel, ego, layer)
                x = dropout(x, p.mess_dropout, self.training)
                acc = acc + x
            rel = rel @ self.w_rel[layer]
            rel_acc = rel_acc + rel
        return acc / (p.layers + 1), rel_acc / (p.layers + 1)

    def _transfer_users(self, adj, x0: Tensor, rel0: Tensor) -> Tensor:
        """User rows of the transfer GNN T(x0): only they are used (§1.5), so the last layer
        computes user rows only."""
        nu, n_layers = self.meta.n_users, self.params.transfer_layers
        x, rel, acc = x0, rel0, x0[:nu]
        for layer in range(n_layers):
            last = layer == n_layers - 1
            x = self._layer(adj, x, rel, x0, layer, rows=nu if last else None)
            rel = rel @ self.w_rel[layer]
            acc = acc + x[:nu]
        return acc / (n_layers + 1)

    def _transfer_batch(self, adj, x0: Tensor, rel0: Tensor, batch_users: Tensor) -> Tensor:
        """``_transfer_users`` of one transfer layer for the batch's users alone; ``x0`` holds the
        batch users' rows, then every item's (their neighbours)."""
        b = batch_users.numel()
        z = spmm_rows(adj, x0[b:], batch_users, col_offset=self.meta.n_users)
        return (x0[:b] + self._activate(z, rel0, x0[:b], 0)) / 2

    def _project(self, o: Tensor, t: Tensor) -> Tensor:
        return ((o * t).sum(-1, keepdim=True) / (t.square().sum(-1, keepdim=True) + 1e-12)) * t

    def forward(self, graphs: Graphs, users_needed: frozenset[str] | None = None,
                batch_users: Tensor | None = None) -> dict:
        """Every behavior's embeddings, projections and final users. ``users_needed`` names the
        behaviors whose final users u_k will be read (None: all); transfers that land only on
        other behaviors are skipped, which changes no value that is read. With ``batch_users``
        (and one transfer layer) every user-side output holds just those users' rows, in their
        order ("batch_rows" is True): the same values as the full rows, for a fraction of the work."""
        p, meta = self.params, self.meta
        batch = batch_users if batch_users is not None and p.transfer_layers == 1 else None
        ego = torch.cat([self.user, self.item])
        e, rbar = {}, {}
        for k, b in enumerate(meta.behaviors):
            e[b], rbar[b] = self._encode(graphs[b], ego, self.relation[k], batch)
        # One split per tensor instead of a slice per use: each slice's backward writes a full-size
        # zero gradient and adds it up, a split's backward is one concatenation.
        sizes = [meta.n_users if batch is None else batch.numel(), meta.n_items]
        parts = {b: e[b].split(sizes) for b in meta.behaviors}
        users_of = {b: [parts[b][0]] for b in meta.behaviors if users_needed is None or b in users_needed}
        unique = {}

        def transfer(adj, x0: Tensor, rel0: Tensor) -> Tensor:
            return self._transfer_users(adj, x0, rel0) if batch is None else self._transfer_batch(adj, x0, rel0, batch)

        # without SIT, URR and URS (w/o PTN, LightGCN_M) nothing reads the projections
        for i, j in meta.pairs() if (p.use_sit or p.use_urr or p.use_urs) else ():
            proj = self._project(e[i], e[j])
            clear, noise = p.projection_scale * proj, p.projection_scale * (e[i] - proj)
            unique[(i, j)] = noise.split(sizes)
            if p.use_sit and j in users_of:
                users_of[j].append(transfer(graphs[j], clear, rbar[j]))
            if p.use_urr and i in users_of:
                back = p.re_mult * p.projection_scale * self._project(noise, e[i])
                users_of[i].append(transfer(graphs[i], back, rbar[i]))
        u_final = {b: torch.stack(v).mean(0) for b, v in users_of.items()}
        return {"e": e, "parts": parts, "rbar": rbar, "u": u_final, "unique": unique, "batch_rows": batch is not None}

    def _unique_relation(self, upstream: int) -> Tensor:
        rel = self.relation[upstream]
        chain = [rel]
        for layer in range(self.params.layers):
            rel = rel @ self.w_rel_noise[layer]
            chain.append(rel)
        return torch.stack(chain).mean(0)

    # ---------------------------------------------------------------------------------- loss, scores

    def loss(self, batch: Batch, graphs: Graphs) -> tuple[Tensor, dict[str, float]]:
        p, meta = self.params, self.meta
        # A behavior with λ_k = 0 adds nothing to the loss or its gradient: its terms and the
        # re-enhanced users u_k that only they read are not computed (the reference multiplies them by 0).
        weighted = frozenset(b for k, b in enumerate(meta.behaviors) if p.coefficient[k] != 0)
        users = batch.users
        out = self(drop_edges(graphs, 1.0 - p.node_dropout, self.training), weighted | {meta.target},
                   users if self.restrict_rows else None)

        def take(rows: Tensor) -> Tensor:  # the batch's user rows of a user-side output
            return rows if out["batch_rows"] else rows[users]

        a_main, a_transfer, a_unique = p.alpha
        total = torch.zeros((), device=users.device)
        parts: dict[str, float] = {}
        for k, b in enumerate(meta.behaviors):
            if b not in weighted:
                continue
            (e_users, items), rbar = out["parts"][b], out["rbar"][b]
            pos = batch.positives[b]
            lk = torch.zeros((), device=users.device)
            if a_main:
                lk = lk + a_main * whole_data_loss(take(e_users), items, rbar, *pos, p.neg_weight[k])
            if a_transfer:
                lk = lk + a_transfer * whole_data_loss(take(out["u"][b]), items, rbar, *pos, p.neg_weight[k])
            if a_unique and p.use_urs:
                for (i, j), (noise_users, noise_items) in out["unique"].items():
                    if i != b:
                        continue
                    rel = self._unique_relation(meta.behaviors.index(i))
                    lk = lk + a_unique * whole_data_loss(take(noise_users), noise_items, rel,
                                                         *batch.positives[derived_name(i, j)], p.unique_neg_weight)
            lk = batch.ranks * lk
            parts[f"loss_{b}"] = float(lk.detach())
            total = total + p.coefficient[k] * lk
        t_users, t_items = out["parts"][meta.target]
        # A zero weight skips its term: 0 * l2(x) would still send a (zero) gradient through x.
        reg = torch.zeros((), device=users.device)
        r = batch.ranks  # the user rows' terms count once per process sharing the step (Batch.ranks)
        if a_main:
            reg = reg + a_main * r * l2(take(t_users))
        if a_transfer:
            reg = reg + a_transfer * (r * l2(take(out["u"][meta.target])) + l2(t_items))
        if a_unique and p.use_urs and out["unique"]:
            last_users, last_items = out["unique"][meta.pairs()[-1]]
            reg = reg + a_unique * (r * l2(take(last_users)) + l2(last_items))
        parts["reg"] = float(reg.detach()) * p.decay
        return total + p.decay * reg, parts

    def scorer(self, graphs: Graphs) -> ScoreFn:
        t = self.meta.target
        if self.params.test_score == "main":
            # the main score reads the target's encoder alone (§1.7), which no other part feeds
            k = self.meta.behaviors.index(t)
            e, rbar = self._encode(graphs[t], torch.cat([self.user, self.item]), self.relation[k])
            e_users, e_items = e.split([self.meta.n_users, self.meta.n_items])
            return bilinear_scorer(e_users * rbar, e_items)
        out = self(graphs, frozenset({t}))
        e_users, e_items = out["parts"][t]
        return bilinear_scorer(out["u"][t] * out["rbar"][t], e_items)

"""NMTR (Gao et al., ICDE 2019) from the paper (MODELS.md §4; no reference code exists).

Shared embeddings P (users) and Q (items) across behaviors; behavior r has its own interaction
function f_r(p_u, q_i) → scalar, one of the three NCF units:

* ``gmf``:   f = w_rᵀ (p ⊙ q)
* ``mlp``:   f = w_rᵀ tower(p ‖ q), tower = Linear+ReLU layers of widths ``mlp_layers`` from 2d
* ``neumf``: f = w_rᵀ [(p ⊙ q) ‖ tower(p ‖ q)]  (both parts read the same shared p, q)

The output layers have no bias: the per-behavior item bias b^r absorbs any constant. Predictions
cascade along the behavior order (``cascade_logits``):

    logit_r(u, i) = Σ_{t ≤ r} f_t(p_u, q_i) + b_i^r,    ŷ^r = σ(logit_r)

Loss: Σ_r λ_r · mean over behavior r's training pairs and their ``neg_ratio`` sampled negatives
each of [BCE(logit_r, y) + reg·(‖p_u‖² + ‖q_i‖²)]; λ defaults to equal weights summing to 1.
Batching ``"behavior_pairs"``: every step holds a slice of every behavior's pairs (graphrec.train).
Test score: the target behavior's logit over all items, in item chunks (the MLP tower is evaluated
for every (user, item) cell, so a B×V×width block would not fit at once). The first tower layer
is split into a user part and an item part, so (p ‖ q) is never materialised per cell.
Init (NCF practice, a GUESS for this paper): embeddings normal(0, init_std), Linear weights
Glorot-uniform, biases and item biases zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphrec.errors import BadValue
from graphrec.losses import bce_loss
from graphrec.models.base import (
    Batch,
    GraphFreeRecommender,
    GraphMeta,
    Graphs,
    PairScoreFn,
    ScoreFn,
    check_per_behavior,
)

#: Elements of one B×chunk×width tower activation at test time: 8 MiB of float32 on CPU (cache-sized
#: blocks scored Beibei 4× faster than 128 MiB ones on one core), 512 MiB on a GPU.
SCORE_CHUNK_ELEMENTS = 1 << 21
SCORE_CHUNK_ELEMENTS_CUDA = 1 << 27

Unit = Literal["gmf", "mlp", "neumf"]


@dataclass(frozen=True)
class NMTRParams:
    dim: int = 64
    unit: Unit = "neumf"
    mlp_layers: tuple[int, ...] = (64, 32, 16)         # tower widths after the 2d input
    coefficient: tuple[float, ...] | None = None       # λ per behavior (cascade order); None: equal, sum 1
    neg_ratio: int = 4                                 # sampled negatives per positive, every behavior
    reg: float = 1e-4                                  # L2 on the embeddings of each training pair
    init_std: float = 0.01

    def __post_init__(self) -> None:
        if self.unit not in ("gmf", "mlp", "neumf"):
            raise BadValue(f"unknown unit {self.unit!r}; among choices: gmf, mlp, neumf")
        if self.unit != "gmf" and (not self.mlp_layers or any(int(w) < 1 for w in self.mlp_layers)):
            raise BadValue("mlp_layers must be a non-empty list of positive widths for the mlp and neumf units")
        if self.neg_ratio < 1:
            raise BadValue("neg_ratio must be >= 1")


def cascade_logits(f: Tensor) -> Tensor:
    """Cascade of per-behavior interaction scores f (R×N, cascade order) into the logits before the
    item bias: row r is Σ_{t ≤ r} f_t, i.e. the cumulative sum over behaviors."""
    return f.cumsum(0)


class InteractionUnit(nn.Module):
    """One behavior's f(p, q): GMF, MLP or NeuMF over shared embeddings of size d."""

    def __init__(self, unit: str, d: int, mlp_layers: tuple[int, ...]):
        super().__init__()
        self.d = d
        self.use_gmf, self.use_mlp = unit in ("gmf", "neumf"), unit in ("mlp", "neumf")
        self.tower = nn.ModuleList()
        width = 2 * d
        if self.use_mlp:
            for w in mlp_layers:
                self.tower.append(nn.Linear(width, int(w)))
                width = int(w)
        out_dim = (d if self.use_gmf else 0) + (width if self.use_mlp else 0)
        self.out = nn.Linear(out_dim, 1, bias=False)
        for m in [*self.tower, self.out]:
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def width(self) -> int:
        """Widest tower activation (0 without a tower)."""
        return max((m.out_features for m in self.tower), default=0)

    def _split_out(self) -> tuple[Tensor | None, Tensor | None]:
        w = self.out.weight[0]
        g = w[:self.d] if self.use_gmf else None
        m = w[self.d if self.use_gmf else 0:] if self.use_mlp else None
        return g, m

    def _tower_rest(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        for lin in self.tower[1:]:
            x = F.relu(lin(x))
        return x

    def halves(self, p: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        """The first tower layer split into its user part (with the bias) and its item part."""
        first = self.tower[0]
        return p @ first.weight[:, :self.d].T + first.bias, q @ first.weight[:, self.d:].T

    def cells(self, a: Tensor, c: Tensor) -> Tensor:
        """The tower's scores from first-layer halves (``halves``) gathered per pair: ``a`` and
        ``c`` broadcast against each other over their leading dimensions ([N, h] and [N, h] give
        N scores, [R, 1, h] and [1, C, h] an R×C grid). Test time only: the activations are
        rectified in place (an evaluation of NMTR ran 2.0 s so, 2.6-7 s through ``_tower_rest``)."""
        x = (a + c).relu_()
        shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        for lin in self.tower[1:]:
            x = torch.addmm(lin.bias, x, lin.weight.T).relu_()
        return (x @ self._split_out()[1]).reshape(shape)

    def forward(self, p: Tensor, q: Tensor) -> Tensor:
        """Scores of N (user, item) pairs: p, q are N×d; returns N."""
        wg, wm = self._split_out()
        gmf = (p * q) @ wg if wg is not None else None
        if wm is None:
            return gmf
        mlp = self._tower_rest(self.tower[0](torch.cat([p, q], -1))) @ wm
        return mlp if gmf is None else gmf + mlp

    def grid(self, p: Tensor, q: Tensor) -> Tensor:
        """Scores of every (user, item) cell: p is B×d, q is C×d; returns B×C (equal to forward)."""
        wg, wm = self._split_out()
        gmf = (p * wg) @ q.T if wg is not None else None
        if wm is None:
            return gmf
        a, c = self.halves(p, q)                             # B×h1, C×h1
        mlp = self.cells(a[:, None, :], c[None, :, :])
        return mlp if gmf is None else gmf + mlp


class NMTR(GraphFreeRecommender):
    batching = "behavior_pairs"
    config_key = "nmtr"  # the models.<key> section its params come from

    def __init__(self, params: NMTRParams, meta: GraphMeta):
        super().__init__()
        k = len(meta.behaviors)
        check_per_behavior(meta, self.config_key, coefficient=params.coefficient)
        self.params, self.meta = params, meta
        self.coefficient = tuple(params.coefficient) if params.coefficient is not None else (1.0 / k,) * k
        d = params.dim
        self.user = nn.Parameter(torch.randn(meta.n_users, d) * params.init_std)
        self.item = nn.Parameter(torch.randn(meta.n_items, d) * params.init_std)
        self.item_bias = nn.Parameter(torch.zeros(k, meta.n_items))
        self.units = nn.ModuleList([InteractionUnit(params.unit, d, params.mlp_layers) for _ in range(k)])

    @property
    def negatives_per_positive(self) -> int:
        return self.params.neg_ratio

    def logits(self, r: int, users: Tensor, items: Tensor) -> Tensor:
        """logit_r of N (user, item) pairs: Σ_{t ≤ r} f_t + b^r_i."""
        return self._logits(r, self.user[users], self.item[items], self.item_bias[r, items])

    def _logits(self, r: int, p: Tensor, q: Tensor, bias: Tensor) -> Tensor:
        f = torch.stack([self.units[t](p, q) for t in range(r + 1)])
        return cascade_logits(f)[r] + bias

    def loss(self, batch: Batch, graphs: Graphs) -> tuple[Tensor, dict[str, float]]:
        p = self.params
        n_items = self.meta.n_items
        # one gather per table for the whole step (the index backward dominated when done per behavior)
        segments, users, items, flat_bias = [], [], [], []
        start = 0
        for r, b in enumerate(self.meta.behaviors):
            if self.coefficient[r] == 0 or b not in batch.pairs or batch.pairs[b][0].numel() == 0:
                continue
            u, pos, neg = batch.pairs[b]
            uu, ii = torch.cat([u, u.repeat_interleave(neg.shape[1])]), torch.cat([pos, neg.reshape(-1)])
            users.append(uu), items.append(ii), flat_bias.append(ii + r * n_items)
            segments.append((r, b, start, start + len(uu), len(pos)))
            start += len(uu)
        total = torch.zeros((), device=self.user.device)
        parts = {}
        if not segments:
            return total, parts
        users, items = torch.cat(users), torch.cat(items)
        pu, qi = self.user[users], self.item[items]
        bias = self.item_bias.reshape(-1)[torch.cat(flat_bias)]
        norms = pu.square().sum(1) + qi.square().sum(1)
        for r, b, lo, hi, n_pos in segments:
            logit = self._logits(r, pu[lo:hi], qi[lo:hi], bias[lo:hi])
            labels = torch.zeros(hi - lo, device=logit.device)
            labels[:n_pos] = 1.0
            main = bce_loss(logit, labels)
            reg = p.reg * norms[lo:hi].mean()
            parts[f"loss_{b}"] = float(main.detach())
            parts[f"reg_{b}"] = float(reg.detach())
            total = total + self.coefficient[r] * (main + reg)
        return total, parts

    def scorer(self, graphs: Graphs) -> ScoreFn:
        n_items, bias = self.meta.n_items, self.item_bias[-1]
        width = max(u.width for u in self.units)

        def score(users: Tensor) -> Tensor:
            p = self.user[users]
            budget = SCORE_CHUNK_ELEMENTS_CUDA if p.device.type == "cuda" else SCORE_CHUNK_ELEMENTS
            chunk = n_items if width == 0 else max(1, min(n_items, budget // max(1, len(users) * width)))
            out = torch.empty(len(users), n_items, device=p.device, dtype=p.dtype)
            for s in range(0, n_items, chunk):
                q = self.item[s:s + chunk]
                out[:, s:s + chunk] = sum(unit.grid(p, q) for unit in self.units) + bias[s:s + chunk]
            return out

        return score

    def pair_scorer(self, graphs: Graphs) -> PairScoreFn:
        """The target logit of (user, item) pairs from two broadcastable id tensors (``[N]`` and
        ``[N]``: N pairs; ``[R, 1]`` and ``[1, C]``: a grid), through one code path, so a pair
        scores the same alone as inside a grid. The first-layer halves are computed once for every
        user and item: a pair costs a gather and the tower's later layers."""
        bias = self.item_bias[-1]
        gmf = [u._split_out()[0] for u in self.units if u.use_gmf]
        pg = self.user * sum(gmf) if gmf else None
        towers = [(u, *u.halves(self.user, self.item)) for u in self.units if u.use_mlp]

        def rows(table: Tensor, ids: Tensor) -> Tensor:
            return table.index_select(0, ids.reshape(-1)).reshape(*ids.shape, table.shape[1])

        def score(users: Tensor, items: Tensor) -> Tensor:
            out = bias.index_select(0, items.reshape(-1)).reshape(items.shape)
            if pg is not None:
                out = out + (rows(pg, users) * rows(self.item, items)).sum(-1)
            for unit, a, c in towers:
                out = out + unit.cells(rows(a, users), rows(c, items))
            return out

        return score

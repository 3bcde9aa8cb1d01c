"""What every graphrec model shares: graph metadata, training batches, the model interface, init."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping

import torch
from torch import Tensor, nn

from graphrec.adjacency import SparseAdj
from graphrec.errors import BadValue
from graphrec.layers import dropout, xavier  # noqa: F401  (the models import them from here)
from graphrec.losses import whole_data_loss


@dataclass(frozen=True)
class GraphMeta:
    """The shape of a dataset as models see it: sizes, behavior cascade (target last) and the
    relations available as graphs (base behaviors and derived ``X_not_Y`` relations)."""

    n_users: int
    n_items: int
    behaviors: tuple[str, ...]
    relations: tuple[str, ...]

    @property
    def target(self) -> str:
        return self.behaviors[-1]

    def pairs(self) -> list[tuple[str, str]]:
        """Ordered behavior pairs (upstream, downstream), i < j, in cascade order."""
        b = self.behaviors
        return [(b[i], b[j]) for i in range(len(b)) for j in range(i + 1, len(b))]


@dataclass
class Batch:
    """One training step's input. ``users`` for whole-data models, with their positive items per
    relation as ``(row, item)`` pairs (row = position in ``users``); ``pos``/``neg`` for pairwise
    models; ``pairs`` for multi-behavior pointwise models (``"behavior_pairs"`` batching):
    behavior -> (users n, positive items n, negative items n×r), where ``users`` holds the target
    behavior's users of the step."""

    users: Tensor
    positives: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    pos: dict[str, Tensor] = field(default_factory=dict)  # relation -> item per user row
    neg: dict[str, Tensor] = field(default_factory=dict)  # relation -> sampled negative item(s) per row
    pairs: dict[str, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)
    #: The step's users are shared by this many processes (graphrec.distributed). A model whose loss
    #: is a sum over users (``loss_reduction = "sum"``) counts those terms ``ranks`` times and its
    #: terms over all items once, so that the mean over processes, which is what DDP's averaged
    #: gradients follow, is the one-process loss of the whole step.
    ranks: int = 1


Graphs = Mapping[str, SparseAdj]
ScoreFn = Callable[[Tensor], Tensor]
PairScoreFn = Callable[[Tensor, Tensor], Tensor]


class Recommender(nn.Module):
    """Interface of every model in the registry.

    ``batching`` tells the trainer what a batch is: ``"users"`` (whole-data loss over all items),
    ``"pairs"`` (target-behavior (user, positive, negative) triples) or ``"behavior_pairs"``
    (``Batch.pairs``: a slice of every label relation's training pairs per step, each positive with
    ``negatives_per_positive`` sampled negatives; every pair of every relation once per epoch).
    ``relations(meta)`` names the graphs the model propagates over (the trainer builds their
    normalized adjacency once and passes it to ``loss`` and ``scorer``; may be empty);
    ``label_relations(meta)`` the item lists its loss reads.
    """

    batching: ClassVar[str] = "users"
    #: "sum": the loss is a sum of per-user terms plus terms over all items (whole-data models; they
    #: honour ``Batch.ranks``); "mean": a mean over the batch's pairs (BPR, BCE), which the
    #: distributed trainer reweights by each process's share of the pairs.
    loss_reduction: ClassVar[str] = "mean"
    stage: ClassVar[str] = "recall"  # the ranking stage's models (graphrec.ranking) say "ranking"

    @staticmethod
    def relations(meta: GraphMeta) -> tuple[str, ...]:
        """Relations whose normalized adjacency the model propagates over."""
        return meta.behaviors

    @classmethod
    def label_relations(cls, meta: GraphMeta) -> tuple[str, ...]:
        """Relations whose per-user item lists the loss reads (Batch.positives)."""
        return cls.relations(meta)

    def loss(self, batch: Batch, graphs: Graphs) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def scorer(self, graphs: Graphs) -> ScoreFn:
        """Test-time scores: a function from user ids (B) to scores over all items (B×V).
        Called under torch.no_grad in eval mode; may precompute final embeddings once."""
        raise NotImplementedError

    def pair_scorer(self, graphs: Graphs) -> PairScoreFn | None:
        """Test-time scores of N (user, item) pairs, for a model whose every cell costs a network
        pass (NMTR): its full evaluation then counts ranks (``evaluate_ranks``) instead of scoring
        every cell. None (the default): a cell is a dot product, score whole rows."""
        return None


class GraphFreeRecommender(Recommender):
    """A model without propagation (EHCF, NMTR): no graphs, but every behavior's item lists."""

    @staticmethod
    def relations(meta: GraphMeta) -> tuple[str, ...]:
        return ()

    @classmethod
    def label_relations(cls, meta: GraphMeta) -> tuple[str, ...]:
        return meta.behaviors


#: Score rows are padded to a multiple of this many columns: GEMM with an output row of 7,977
#: floats ran at 28-33 GFLOP/s on one core, with 8,000 at 51-74 (aligned rows, MKL).
SCORE_ROW_ALIGN = 64


def bilinear_scorer(users: Tensor, items: Tensor) -> ScoreFn:
    """Scores U[u] · Iᵀ for precomputed final user and item representations. The rows returned
    are a [B, n_items] view into a wider (aligned) product; zero columns pad the item matrix."""
    n = items.shape[0]
    items_t = items.new_zeros(items.shape[1], n + (-n) % SCORE_ROW_ALIGN)
    items_t[:, :n] = items.T
    return lambda u: (users[u] @ items_t)[:, :n]


def drop_edges(graphs: Graphs, keep: float, training: bool, generator: torch.Generator | None = None) -> Graphs:
    """Edge ("node") dropout with a fresh mask per adjacency per step, in training only."""
    if not training or keep >= 1.0:
        return graphs
    return {k: g.dropout(keep, generator) for k, g in graphs.items()}


def require_upstream(meta: GraphMeta, model: str, why: str) -> None:
    """Refuse a cascade without a behavior before the target, for a model that reads one."""
    if len(meta.behaviors) < 2:
        raise BadValue(f"{model} {why}, but the cascade is {' → '.join(meta.behaviors)}; ingest an upstream "
                       "behavior (e.g. view or cart), or train a single-behavior model such as lightgcn")


#: c0 of every behavior when ``neg_weight`` is not set: the reference's Beibei value (MODELS.md §1.10).
DEFAULT_NEG_WEIGHT = 0.1


def default_coefficient(n: int) -> tuple[float, ...]:
    """λ when a model's ``coefficient`` is not set, for a cascade of ``n`` behaviors: 1/6 on the
    target and 5/6 shared equally by the upstream behaviors. It keeps the reference's 5 : 1
    upstream-to-target ratio (HPMR's and GHCF's cart → buy [5/6, 1/6]) and, unlike the reference's
    three-behavior [0, 5/6, 1/6], trains every behavior, so a log with views never ignores them."""
    if n == 1:
        return (1.0,)
    return (5 / 6 / (n - 1),) * (n - 1) + (1 / 6,)


def check_per_behavior(meta: GraphMeta, model: str, **values: tuple[float, ...] | None) -> None:
    """Each named parameter (e.g. coefficient, neg_weight) that is set has one value per behavior;
    the error names the config key, the expected length and the ``--set`` line that fixes it."""
    n = len(meta.behaviors)
    for name, v in values.items():
        if v is None or len(v) == n:
            continue
        example = default_coefficient(n) if name == "coefficient" else (DEFAULT_NEG_WEIGHT,) * n
        raise BadValue(
            f"models.{model}.{name} has {len(v)} value(s) {list(v)} but the cascade {' → '.join(meta.behaviors)} "
            f"needs {n}, one value per behavior in that order; fix: --set models.{model}.{name}="
            f"[{','.join(f'{x:.4g}' for x in example)}] (or your own {n} values), or leave {name} unset in the "
            "config for the model's default")


def resolve_per_behavior(params, meta: GraphMeta, model: str):
    """``params`` with ``coefficient`` and ``neg_weight`` checked against the cascade and filled
    with the documented defaults where they are None."""
    check_per_behavior(meta, model, coefficient=params.coefficient, neg_weight=params.neg_weight)
    n = len(meta.behaviors)
    return dataclasses.replace(
        params,
        coefficient=tuple(params.coefficient) if params.coefficient is not None else default_coefficient(n),
        neg_weight=tuple(params.neg_weight) if params.neg_weight is not None else (DEFAULT_NEG_WEIGHT,) * n)


def weighted_whole_data_loss(meta: GraphMeta, users: Tensor, items: Tensor, vectors: Tensor, batch: Batch,
                             coefficient: tuple[float, ...], neg_weight: tuple[float, ...]
                             ) -> tuple[Tensor, dict[str, float]]:
    """Σ_k λ_k NS_k over the behaviors with λ_k ≠ 0 (vectors[k] = behavior k's prediction vector),
    with each behavior's loss reported as ``loss_<behavior>``."""
    total = torch.zeros((), device=users.device)
    parts: dict[str, float] = {}
    for k, b in enumerate(meta.behaviors):
        if coefficient[k] == 0:
            continue
        lk = batch.ranks * whole_data_loss(users, items, vectors[k], *batch.positives[b], neg_weight[k])
        parts[f"loss_{b}"] = float(lk.detach())
        total = total + coefficient[k] * lk
    return total, parts

"""What a model trains on: a snapshot's edges as tensors for one protocol (TrainData), and the
batches and negatives drawn from them. Shared by the training loop, the ranking stage and serving."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from graphrec import snapshot as snap
from graphrec.adjacency import SparseAdj, normalized_bipartite
from graphrec.config import TrainConfig
from graphrec.evaluate import UserItems
from graphrec.models import GraphMeta, Recommender
from graphrec.models.base import Batch
from graphrec.runs import TrainError
from graphrec.schema import derived_name, set_operation


@dataclass
class TrainData:
    """What training needs from a snapshot under one protocol, as arrays and padded tensors."""

    meta: GraphMeta
    edges: dict[str, tuple[np.ndarray, np.ndarray]]  # training edges per relation
    positives: dict[str, UserItems]                  # relation -> item lists per user (truncated)
    selection: str | None                            # split used for early stopping (None: fixed budget)
    eval_sets: dict[str, tuple[UserItems, UserItems]]  # split -> (held-out items, items excluded from ranking)
    protocol: str

    @classmethod
    def from_snapshot(cls, s: snap.Snapshot, protocol: str, relations: tuple[str, ...],
                      pad_percentile: float = 99.99, device: torch.device | str = "cpu",
                      behaviors: tuple[str, ...] | None = None) -> "TrainData":
        target = s.target
        codes = snap.SPLIT_CODES
        # paper and fixed train on every non-test purchase; honest holds the validation purchase out
        every_purchase = protocol in ("paper", "fixed")
        train_codes = [codes["train"]] + ([codes["valid"]] if every_purchase else [])
        edges = {}
        for name in relations:
            if name not in s.relations:
                raise TrainError(f"the model needs relation {name!r} but snapshot {s.path} has "
                                 f"{', '.join(s.relations)}; ingest the behaviors it needs")
            rel = s.relations[name]
            if rel.split is not None:
                keep = np.isin(rel.split, train_codes)
            elif rel.holdout is not None and every_purchase:
                # Under `paper` and `fixed` the validation purchase is a training purchase, so the derived edge it
                # removes must not exist (the held-out *test* item stays, as in the reference code).
                keep = rel.holdout != codes["valid"]
            else:
                keep = np.ones(len(rel), dtype=bool)
            edges[name] = (rel.user[keep], rel.item[keep])
        if s.behaviors.target not in edges:
            mask = np.isin(target.split, train_codes)
            edges[s.behaviors.target] = (target.user[mask], target.item[mask])
        positives = {name: _truncated(u, i, s.n_users, pad_percentile).to(device) for name, (u, i) in edges.items()}
        train_u, train_i = edges[s.behaviors.target]
        exclude_train = UserItems.from_pairs(train_u, train_i, s.n_users)
        test_u, test_i = target.select("test")
        if every_purchase:
            # `fixed` has no selection split: fit never evaluates before the last epoch
            eval_sets = {"test": (UserItems.from_pairs(test_u, test_i, s.n_users), exclude_train)}
            selection = "test" if protocol == "paper" else None
        else:
            valid_u, valid_i = target.select("valid")
            known = (np.concatenate([train_u, valid_u]), np.concatenate([train_i, valid_i]))
            eval_sets = {"valid": (UserItems.from_pairs(valid_u, valid_i, s.n_users), exclude_train),
                         "test": (UserItems.from_pairs(test_u, test_i, s.n_users),
                                  UserItems.from_pairs(*known, s.n_users))}
            selection = "valid"
            if len(valid_u) == 0:
                raise TrainError("the honest protocol needs validation purchases but the snapshot has none; ingest "
                                 "with ingest.split.valid=true, or train with --set train.protocol=paper")
        return cls(_meta(s, behaviors), edges, positives, selection, eval_sets, protocol)

    @classmethod
    def for_model(cls, s: snap.Snapshot, tc: TrainConfig, model_cls: type, device: torch.device | str = "cpu"
                  ) -> "TrainData":
        """What ``model_cls`` reads from ``s`` under ``tc`` (its protocol, cascade and padding)."""
        order = train_behaviors(s, tc)
        return cls.from_snapshot(s, tc.protocol, model_cls.label_relations(_meta(s, order)), tc.pad_percentile,
                                 device, order)

    def graphs(self, names: tuple[str, ...], device: torch.device | str) -> dict[str, SparseAdj]:
        return {n: normalized_bipartite(*self.graph_edges(n), self.meta.n_users, self.meta.n_items, device=device)
                for n in names}

    def graph_edges(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Training edges of a relation, or of a set operation on relations (``view&buy``, the views
        that are training purchases; ``view|cart|buy``, the pairs with any of the three), sorted by
        (user, item)."""
        if name in self.edges:
            return self.edges[name]
        op = set_operation(name)
        if op is None or any(p not in self.edges for p in op[1]):
            raise TrainError(f"graph {name!r} is neither a relation the model loaded ({', '.join(self.edges)}) "
                             "nor a set operation on them; the model's relations() and label_relations() disagree")
        n = np.int64(self.meta.n_items)
        keys = [self.edges[p][0].astype(np.int64) * n + self.edges[p][1] for p in op[1]]
        # every relation's pairs are unique (snapshot invariant), so intersections need no dedup pass
        key = (np.unique(np.concatenate(keys)) if op[0] == "or"
               else functools.reduce(lambda a, b: np.intersect1d(a, b, assume_unique=True), keys))
        return (key // n).astype(np.int32), (key % n).astype(np.int32)


def _truncated(users: np.ndarray, items: np.ndarray, n_users: int, percentile: float) -> UserItems:
    """Each user's items (ascending id), cut to the given percentile of the non-zero list lengths,
    as the reference code pads and truncates its positive lists (MODELS.md §0b)."""
    order = np.lexsort((items, users))
    users, items = users[order].astype(np.int64), items[order].astype(np.int64)
    counts = np.bincount(users, minlength=n_users)
    nonzero = counts[counts > 0]
    width = max(1, int(math.ceil(np.percentile(nonzero, percentile)))) if len(nonzero) else 1
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = (np.arange(len(users)) - starts[users]) < width
    return UserItems.from_pairs(users[keep], items[keep], n_users)


def user_batches(n_users: int, batch_size: int, drop_last: bool, generator: torch.Generator) -> list[torch.Tensor]:
    perm = torch.randperm(n_users, generator=generator)
    n = n_users // batch_size if drop_last and n_users >= batch_size else math.ceil(n_users / batch_size)
    return [perm[k * batch_size:(k + 1) * batch_size] for k in range(n)]


def pair_batches(users: np.ndarray, items: np.ndarray, n_items: int, batch_size: int, drop_last: bool,
                 generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled (user, positive, negative) batches; negatives uniform over items the user has not
    interacted with in training (collisions are redrawn)."""
    perm = torch.randperm(len(users), generator=generator).numpy()
    return _triple_batches(users[perm].astype(np.int64), items[perm].astype(np.int64), users, items, n_items,
                           batch_size, drop_last, generator)


def user_pair_batches(users: np.ndarray, items: np.ndarray, n_items: int, batch_size: int, drop_last: bool,
                      generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """LightGCN's own sampler: as many draws per epoch as there are training pairs, each a user
    uniform over the users with a pair, then one of that user's items uniformly, then a negative as
    in ``pair_batches``. Every user weighs the same in the loss whatever their activity, as every
    user weighs the same in HR/NDCG; pairs of heavy users are seen less than once per epoch."""
    order = np.argsort(users, kind="stable")
    su, si = users[order].astype(np.int64), items[order].astype(np.int64)
    active, starts, counts = np.unique(su, return_index=True, return_counts=True)
    n = len(users)
    pick = torch.randint(0, len(active), (n,), generator=generator).numpy()
    offset = (torch.rand(n, generator=generator, dtype=torch.float64).numpy() * counts[pick]).astype(np.int64)
    return _triple_batches(active[pick], si[starts[pick] + offset], users, items, n_items, batch_size,
                           drop_last, generator)


def _triple_batches(u: np.ndarray, i: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int,
                    batch_size: int, drop_last: bool, generator: torch.Generator):
    """(user, positive, negative) batches of the drawn pairs ``u``, ``i`` in their order; negatives
    avoid every training pair (``users``, ``items``)."""
    n = len(u)
    known = np.sort(users.astype(np.int64) * n_items + items)
    neg = sample_negatives(u, known, n_items, generator)
    nb = n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)
    return [(torch.from_numpy(u[k * batch_size:(k + 1) * batch_size]),
             torch.from_numpy(i[k * batch_size:(k + 1) * batch_size]),
             torch.from_numpy(neg[k * batch_size:(k + 1) * batch_size])) for k in range(nb)]


def sample_negatives(users: np.ndarray, known: np.ndarray, n_items: int, generator: torch.Generator,
                     rounds: int = 20) -> np.ndarray:
    """One item per entry of ``users`` (int64), uniform over the items that user has no pair with in
    ``known`` (sorted keys user·n_items + item). Collisions are redrawn for ``rounds`` rounds; the
    few left after that are drawn from the user's complement directly (a user with every item
    keeps a colliding draw)."""
    neg = torch.randint(0, n_items, (len(users),), generator=generator).numpy()
    for _ in range(rounds):
        hit = member(known, users * n_items + neg)
        if not hit.any():
            return neg
        neg[hit] = torch.randint(0, n_items, (int(hit.sum()),), generator=generator).numpy()
    for k in np.flatnonzero(member(known, users * n_items + neg)):
        lo, hi = np.searchsorted(known, [users[k] * n_items, (users[k] + 1) * n_items])
        free = np.setdiff1d(np.arange(n_items), known[lo:hi] - users[k] * n_items)
        if len(free):
            neg[k] = free[int(torch.randint(0, len(free), (1,), generator=generator))]
    return neg


def behavior_pair_batches(edges: dict[str, tuple[np.ndarray, np.ndarray]], target: str, n_items: int,
                          batch_size: int, negatives: int, generator: torch.Generator
                          ) -> list[dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Per step, a slice of every behavior's shuffled training pairs: behavior -> (users, positive
    items, negative items n×``negatives``). Negatives are uniform over the items the user has no
    training pair with in *that* behavior. Every behavior is cut into the same number of steps,
    ceil(|target pairs| / batch_size), in near-equal consecutive slices, so each pair of each
    behavior is seen exactly once per epoch (no last partial batch is dropped)."""
    n_steps = math.ceil(len(edges[target][0]) / batch_size)
    sliced = {}
    for name, (users, items) in edges.items():
        n = len(users)
        perm = torch.randperm(n, generator=generator).numpy()
        u, i = users[perm].astype(np.int64), items[perm].astype(np.int64)
        known = np.sort(users.astype(np.int64) * n_items + items)
        neg = sample_negatives(np.repeat(u, negatives), known, n_items, generator).reshape(n, negatives)
        bounds = (np.arange(n_steps + 1) * n) // max(n_steps, 1)
        sliced[name] = (torch.from_numpy(u), torch.from_numpy(i), torch.from_numpy(neg), bounds)
    return [{name: (u[b[k]:b[k + 1]], i[b[k]:b[k + 1]], neg[b[k]:b[k + 1]]) for name, (u, i, neg, b) in sliced.items()}
            for k in range(n_steps)]


def member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each of ``keys`` is in ``sorted_keys`` (ascending; may be empty)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def _meta(s: snap.Snapshot, behaviors: tuple[str, ...] | None = None) -> GraphMeta:
    """The snapshot as models see it, restricted to ``behaviors`` (a sub-cascade) when given: its
    relations are then the base and derived relations among those behaviors only."""
    order = tuple(behaviors) if behaviors is not None else s.behaviors.order
    keep = set(order) | {derived_name(a, b) for a in order for b in order if a != b}
    return GraphMeta(s.n_users, s.n_items, order, tuple(r for r in s.relations if r in keep))


def train_behaviors(s: snap.Snapshot, tc: TrainConfig) -> tuple[str, ...]:
    """The cascade a run trains on: ``train.behaviors`` checked against the snapshot, or all of it."""
    if tc.behaviors is None:
        return s.behaviors.order
    order = tuple(tc.behaviors)
    full = s.behaviors.order
    if (not order or order[-1] != full[-1] or any(b not in full for b in order)
            or list(order) != [b for b in full if b in order]):
        raise TrainError(f"train.behaviors {list(order)} must be part of the snapshot's cascade {' → '.join(full)} "
                         f"in the same order and end with the target {full[-1]!r}; e.g. --set "
                         f"train.behaviors=[{','.join(full[-2:])}], or remove the key to train on every behavior")
    return order


def model_batches(model: Recommender, data: TrainData, batch_size: int, drop_last: bool, gen: torch.Generator,
                  dev: torch.device | str):
    """One epoch of training batches in the form ``model.batching`` asks for."""
    if model.batching == "users":
        for users in user_batches(data.meta.n_users, batch_size, drop_last, gen):
            users = users.to(dev)
            yield Batch(users=users, positives={k: v.rows(users) for k, v in data.positives.items()})
    elif model.batching in ("pairs", "user_pairs"):
        t = data.meta.target
        u, i = data.edges[t]
        draw = pair_batches if model.batching == "pairs" else user_pair_batches
        for bu, bp, bn in draw(u, i, data.meta.n_items, batch_size, drop_last, gen):
            yield Batch(users=bu.to(dev), pos={t: bp.to(dev)}, neg={t: bn.to(dev)})
    elif model.batching == "behavior_pairs":
        t = data.meta.target
        edges = {r: data.edges[r] for r in type(model).label_relations(data.meta)}
        ratio = int(getattr(model, "negatives_per_positive", 1))
        for step in behavior_pair_batches(edges, t, data.meta.n_items, batch_size, ratio, gen):
            pairs = {r: tuple(x.to(dev) for x in v) for r, v in step.items()}
            yield Batch(users=pairs[t][0], pairs=pairs)
    else:
        raise TrainError(f"unknown batching {model.batching!r} of {type(model).__name__}")

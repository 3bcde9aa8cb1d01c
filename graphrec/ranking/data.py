"""Ranking data: candidate lists from a recall run, one label per behavior, per-behavior sequences.

Built from the recall run's snapshot (the export of the Neo4j graph; ``graphrec export`` refreshes
it) and the recall model itself:

* **Lists.** For every user, the recall model's top-N items, excluding what the recall evaluation
  excludes for that split, plus the user's held-out purchase when the top-N missed it (so every list
  can be scored; such rows are flagged ``retrieved = False`` and get their own position bucket).
* **Splits, without leaks.** The recall run must use the ``honest`` protocol: its model never saw
  the validation or test purchases. The ranking stage trains on the *validation* lists (labels: the
  validation purchase), early-stops on a held-out fraction of those users, and is tested once on
  the *test* lists (labels: the test purchase; train and validation purchases excluded from the
  candidates, as in the recall evaluation). Features come from training edges only.
* **Labels.** One per behavior of the cascade: the target label is "this is the held-out purchase
  of the list's split"; an upstream label (cart, view) is "the user has that behavior on the item".
* **Sequences.** Per behavior, the user's training items, most recent first when the data has
  timestamps, otherwise in snapshot order (ascending item id, which for the Beibei/Taobao files is
  also the file order), cut to ``seq_len``. Every item of the user's candidate list is removed from
  the user's sequences of that split: otherwise "the candidate is in my cart sequence" would read
  the cart label straight from the input.
* **Dense features.** log1p of the user's and the item's training-edge count per behavior,
  standardized, and per row the recall score standardized within its list (over the retrieved rows).
* **Training rows.** The ranking model trains on the retrieved rows only (what a production ranker
  sees); the appended rows are for scoring (AUC) on the valid and test lists.
* **Positions.** The recall rank r (0-based) falls in bucket ⌊log2(r + 1)⌋; appended rows use the
  last bucket. Only DMT's bias network reads it, in training only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from graphrec import snapshot as snap
from graphrec.config import RankingConfig
from graphrec.errors import UserError
from graphrec.evaluate import masked_topk
from graphrec.ranking.base import RankBatch, RankMeta
from graphrec.runs import open_model
from graphrec.sampling import member


class RankingDataError(UserError, ValueError):
    pass


@dataclass
class ListSet:
    """One split's candidate lists; group g = rows ``offsets[g]:offsets[g + 1]`` of user ``users[g]``."""

    users: np.ndarray          # int64 [G]
    offsets: np.ndarray        # int64 [G + 1]
    items: np.ndarray          # int64 [n]
    labels: np.ndarray         # float32 [n, T]
    position: np.ndarray       # int64 [n]
    recall_score: np.ndarray   # float32 [n]
    retrieved: np.ndarray      # bool [n]
    pseudo: np.ndarray         # float32 [n, T]: mean label of the user's earlier rows (STAN)
    seqs: tuple[np.ndarray, ...]      # int64 [G, L_b] per sequence behavior, padded with n_items
    seq_lens: tuple[np.ndarray, ...]  # int64 [G]

    @property
    def n_groups(self) -> int:
        return len(self.users)

    def __len__(self) -> int:
        return len(self.items)

    def retrieved_only(self) -> "ListSet":
        """The rows the recall model retrieved (appended held-out positives dropped)."""
        keep = self.retrieved
        counts = np.bincount(np.repeat(np.arange(self.n_groups), np.diff(self.offsets))[keep],
                             minlength=self.n_groups)
        return ListSet(self.users, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), self.items[keep],
                       self.labels[keep], self.position[keep], self.recall_score[keep], keep[keep],
                       self.pseudo[keep], self.seqs, self.seq_lens)

    def subset(self, groups: np.ndarray) -> "ListSet":
        groups = np.asarray(groups, dtype=np.int64)
        rows = _group_rows(self.offsets, groups)
        sizes = np.diff(self.offsets)[groups]
        return ListSet(self.users[groups], np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                       self.items[rows], self.labels[rows], self.position[rows], self.recall_score[rows],
                       self.retrieved[rows], self.pseudo[rows], tuple(s[groups] for s in self.seqs),
                       tuple(s[groups] for s in self.seq_lens))


@dataclass
class RankingData:
    meta: RankMeta
    user_dense: np.ndarray     # float32 [n_users, Fu]
    item_dense: np.ndarray     # float32 [n_items, Fi]
    lists: dict[str, ListSet]  # "train", "valid" (early stopping), "test"
    #: How the sequences are ordered, the recall run, sizes: printed and stored with the run.
    info: dict = field(default_factory=dict)

    def batches(self, split: str, users_per_batch: int, generator: torch.Generator | None = None,
                with_labels: bool = True) -> "list[RankBatch]":
        """Whole lists of ``users_per_batch`` users per batch; shuffled when a generator is given."""
        ls = self.lists[split]
        order = (torch.randperm(ls.n_groups, generator=generator).numpy() if generator is not None
                 else np.arange(ls.n_groups))
        return [self.batch(ls, order[i:i + users_per_batch], with_labels)
                for i in range(0, ls.n_groups, users_per_batch)]

    def batch(self, ls: ListSet, groups: np.ndarray, with_labels: bool = True) -> RankBatch:
        groups = np.asarray(groups, dtype=np.int64)
        rows = _group_rows(ls.offsets, groups)
        sizes = np.diff(ls.offsets)[groups]
        users = ls.users[groups]
        t = torch.from_numpy
        return RankBatch(
            users=t(users), seqs=tuple(t(s[groups]) for s in ls.seqs),
            seq_lens=tuple(t(s[groups]) for s in ls.seq_lens),
            user_dense=t(self.user_dense[users]), user_rows=t(sizes.astype(np.int64)),
            row_user=t(np.repeat(np.arange(len(groups), dtype=np.int64), sizes)), items=t(ls.items[rows]),
            item_dense=t(self.row_dense(ls, rows)), position=t(ls.position[rows]),
            labels=t(ls.labels[rows]) if with_labels else None, pseudo=t(ls.pseudo[rows]) if with_labels else None)

    def row_dense(self, ls: ListSet, rows: np.ndarray) -> np.ndarray:
        """Dense features of the given rows: the item's, plus the list-standardized recall score
        when the meta has room for it."""
        dense = self.item_dense[ls.items[rows]]
        if self.meta.n_item_dense > self.item_dense.shape[1]:
            dense = np.concatenate([dense, _list_zscore(ls, rows)[:, None]], 1)
        return dense


def _list_zscore(ls: ListSet, rows: np.ndarray) -> np.ndarray:
    """The recall score standardized within its list (scales differ between recall models): the
    one per-row feature from the recall stage."""
    sizes = np.diff(ls.offsets)
    group = np.repeat(np.arange(ls.n_groups), sizes)
    sc = ls.recall_score.astype(np.float64)
    w = ls.retrieved.astype(np.float64)  # moments of the retrieved rows, so appended rows do not shift them
    n = np.maximum(np.bincount(group, w, minlength=ls.n_groups), 1)
    mean = np.bincount(group, w * sc, minlength=ls.n_groups) / n
    var = np.bincount(group, w * sc * sc, minlength=ls.n_groups) / n - mean ** 2
    z = (sc - mean[group]) / np.sqrt(np.maximum(var[group], 1e-12))
    return z[rows].astype(np.float32)


def _group_rows(offsets: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Row indices of the given groups, group after group."""
    start, sizes = offsets[groups], np.diff(offsets)[groups]
    total = int(sizes.sum())
    shift = np.repeat(start - (np.cumsum(sizes) - sizes), sizes)
    return np.arange(total, dtype=np.int64) + shift


def position_bucket(rank: np.ndarray, n_candidates: int) -> np.ndarray:
    """⌊log2(r + 1)⌋ for 0-based recall ranks; -1 (not retrieved) maps to the last bucket."""
    last = n_positions(n_candidates) - 1
    r = np.asarray(rank, dtype=np.int64)
    out = np.floor(np.log2(np.maximum(r, 0) + 1)).astype(np.int64)
    return np.where(r < 0, last, np.minimum(out, last - 1))


def n_positions(n_candidates: int) -> int:
    return int(math.floor(math.log2(n_candidates))) + 2


def _pseudo_labels(labels: np.ndarray, offsets: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """STAN's pseudo-label: the mean of the user's labels over the rows before this one in its list
    (list order stands in for time); the first row of a list gets the prior (the task's base rate)."""
    n = len(labels)
    sizes = np.diff(offsets)
    group = np.repeat(np.arange(len(sizes)), sizes)
    csum = np.cumsum(labels, axis=0, dtype=np.float64)
    before = csum - labels  # inclusive prefix minus self = prefix over earlier rows (global)
    start = offsets[:-1][group]
    base = np.where((start > 0)[:, None], csum[np.maximum(start - 1, 0)], 0.0)
    count = (np.arange(n) - start)[:, None]
    earlier = before - base
    return np.where(count > 0, earlier / np.maximum(count, 1), prior[None, :]).astype(np.float32)


def _sequences(s: snap.Snapshot, train_users: np.ndarray, train_items: np.ndarray,
               ts: np.ndarray | None, list_users: np.ndarray, remove: tuple[np.ndarray, np.ndarray],
               seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """[G, seq_len] item ids (padded with n_items) and lengths for ``list_users``, each user's
    training items of one behavior minus the (user, item) pairs in ``remove``."""
    n_items = s.n_items
    keys = train_users.astype(np.int64) * n_items + train_items
    drop = member(np.sort(remove[0].astype(np.int64) * n_items + remove[1]), keys)
    u, i = train_users[~drop].astype(np.int64), train_items[~drop].astype(np.int64)
    # most recent first where timestamps exist, else snapshot (item id) order
    order = np.lexsort((-ts[~drop], u)) if ts is not None else np.lexsort((i, u))
    u, i = u[order], i[order]
    indptr = np.zeros(s.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=s.n_users), out=indptr[1:])
    starts, lens = indptr[list_users], np.minimum(np.diff(indptr)[list_users], seq_len)
    out = np.full((len(list_users), seq_len), n_items, dtype=np.int64)
    col = np.arange(seq_len)
    valid = col[None, :] < lens[:, None]
    src = (starts[:, None] + col[None, :])[valid]
    out[valid] = i[src]
    return out, lens.astype(np.int64)


class CandidateSource:
    """The recall side of the ranking stage: a trained recall run, its snapshot, the training edges
    features may use, and the lists it makes (top-N + held-out positives)."""

    def __init__(self, recall_run: str | Path, *, candidates: int = 50, seq_len: int = 50, device: str = "cpu",
                 snapshot_path: str | Path | None = None, batch_users: int = 1024,
                 recall_score_feature: bool = True, sequence_order: str = "time") -> None:
        info, self.model, self.tdata, graphs = open_model(recall_run, device, snapshot_path)
        if self.tdata.protocol != "honest":
            raise RankingDataError(
                f"recall run {recall_run} was trained under the {self.tdata.protocol!r} protocol, where the "
                "validation purchases are training purchases of the recall model; the ranking stage trains on them "
                "as labels, so that would leak. Train the recall model with --set train.protocol=honest")
        if candidates < 1 or seq_len < 1:
            raise RankingDataError(f"candidates and seq_len must be >= 1; got {candidates}, {seq_len}")
        self.recall_run, self.recall_info = Path(recall_run).resolve(), info
        self.snapshot = s = snap.read(snapshot_path or info.snapshot, verify_hashes=False)
        self.behaviors = s.behaviors.order
        self.candidates = min(candidates, s.n_items)
        self.seq_len, self.device, self.batch_users = seq_len, device, batch_users
        self.requested_order = sequence_order
        with torch.no_grad():
            self.score = self.model.scorer(graphs)
        n_items = s.n_items
        # training edges per behavior (all that features and sequences may use) and their timestamps
        self.train_edges, self.train_ts = {}, {}
        for b in self.behaviors:
            rel = s.relations[b]
            keep = rel.split == snap.SPLIT_CODES["train"] if rel.split is not None else np.ones(len(rel), bool)
            self.train_edges[b] = (rel.user[keep].astype(np.int64), rel.item[keep].astype(np.int64))
            timed = sequence_order == "time" and rel.ts is not None and (rel.ts[keep] != snap.NO_TS).all()
            self.train_ts[b] = rel.ts[keep] if timed else None
        self.upstream_keys = {b: np.sort(s.relations[b].user.astype(np.int64) * n_items + s.relations[b].item)
                              for b in self.behaviors[:-1]}

        def dense(node_ids: list[np.ndarray], n: int) -> np.ndarray:
            x = np.stack([np.log1p(np.bincount(ids, minlength=n)).astype(np.float32) for ids in node_ids], 1)
            return ((x - x.mean(0)) / np.maximum(x.std(0), 1e-6)).astype(np.float32)

        self.user_dense = dense([self.train_edges[b][0] for b in self.behaviors], s.n_users)
        self.item_dense = dense([self.train_edges[b][1] for b in self.behaviors], n_items)
        self.meta = RankMeta(n_users=s.n_users, n_items=n_items, tasks=self.behaviors, seq_behaviors=self.behaviors,
                             seq_lengths=(seq_len,) * len(self.behaviors), n_user_dense=self.user_dense.shape[1],
                             n_item_dense=self.item_dense.shape[1] + int(recall_score_feature),
                             n_positions=n_positions(self.candidates))

    @classmethod
    def from_config(cls, recall_run: str | Path, rc: RankingConfig, *, device: str = "cpu",
                    snapshot_path: str | Path | None = None) -> "CandidateSource":
        return cls(recall_run, candidates=rc.candidates, seq_len=rc.seq_len, device=device,
                   snapshot_path=snapshot_path, recall_score_feature=rc.recall_score_feature,
                   sequence_order=rc.sequence_order)

    @property
    def timestamped(self) -> bool:
        return all(self.train_ts[b] is not None for b in self.behaviors)

    def sequence_order(self) -> str:
        if self.timestamped:
            return "by timestamp, most recent first"
        if self.requested_order == "item":
            return "ascending item id (ranking.sequence_order: item), timestamps ignored"
        return ("no timestamps in the data: snapshot order (ascending item id; for the Beibei/Taobao files also "
                "the file order), so sequence positions carry no time information")

    def lists(self, users: torch.Tensor, exclude, held=None) -> ListSet:
        """Candidate lists of ``users`` (node ids): the recall top-N without ``exclude``'s items, plus
        ``held``'s items (the split's held-out purchases, the target label) where the top-N missed them.
        ``held=None`` (serving): top-N only, labels all zero."""
        s, n_items, N = self.snapshot, self.snapshot.n_items, self.candidates
        users = torch.as_tensor(users, dtype=torch.int64)
        tops, tscores, h_rows, h_items, h_scores = [], [], [], [], []
        with torch.no_grad():
            for i in range(0, len(users), self.batch_users):
                u = users[i:i + self.batch_users]
                sc = self.score(u.to(self.device)).float().cpu()
                top = masked_topk(sc, N, exclude.rows(u))
                tops.append(top)
                tscores.append(sc.gather(1, top))
                if held is not None:  # the held-out items, whose own scores appended rows carry
                    r, it = held.rows(u)
                    h_rows.append(r + i)
                    h_items.append(it)
                    h_scores.append(sc[r, it])
        top = torch.cat(tops).numpy().astype(np.int64)
        top_scores = torch.cat(tscores).numpy().astype(np.float32)
        uid = users.numpy()
        G = len(uid)
        if held is not None:
            h_row, h_item = torch.cat(h_rows).numpy().astype(np.int64), torch.cat(h_items).numpy().astype(np.int64)
            h_score = torch.cat(h_scores).numpy().astype(np.float32)
        else:
            h_row = h_item = np.zeros(0, np.int64)
            h_score = np.zeros(0, np.float32)
        missed = ~(top[h_row] == h_item[:, None]).any(1)
        grp = np.concatenate([np.repeat(np.arange(G), N), h_row[missed]])
        items = np.concatenate([top.reshape(-1), h_item[missed]])
        scores = np.concatenate([top_scores.reshape(-1), h_score[missed]])
        rank = np.concatenate([np.tile(np.arange(N), G), np.full(int(missed.sum()), -1)])
        order = np.lexsort((np.where(rank < 0, N, rank), grp))  # retrieved rows by rank, then appended ones
        grp, items, scores, rank = grp[order], items[order], scores[order], rank[order]
        offsets = np.zeros(G + 1, dtype=np.int64)
        np.cumsum(np.bincount(grp, minlength=G), out=offsets[1:])
        row_users = uid[grp]
        keys = row_users * n_items + items
        labels = np.zeros((len(items), len(self.behaviors)), dtype=np.float32)
        labels[:, -1] = member(np.sort(uid[h_row] * n_items + h_item), keys)
        for k, b in enumerate(self.behaviors[:-1]):
            labels[:, k] = member(self.upstream_keys[b], keys)
        seqs, lens = [], []
        for b in self.behaviors:
            sq, ln = _sequences(s, *self.train_edges[b], self.train_ts[b], uid, (row_users, items), self.seq_len)
            seqs.append(sq)
            lens.append(ln)
        return ListSet(uid, offsets, items, labels, position_bucket(rank, N), scores, rank >= 0,
                       np.zeros_like(labels), tuple(seqs), tuple(lens))


def build(recall_run: str | Path, rc: RankingConfig | None = None, *, device: str = "cpu",
          snapshot_path: str | Path | None = None, source: CandidateSource | None = None
          ) -> tuple[RankingData, CandidateSource]:
    """Candidate lists, labels and features for the ranking stage from a trained recall run, and
    the candidate source (kept for serving). ``source``: one already opened for this run and ``rc``
    (e.g. by ``open_ranking``), so the recall model is not loaded and run again."""
    rc = rc or RankingConfig()
    src = source or CandidateSource.from_config(recall_run, rc, device=device, snapshot_path=snapshot_path)
    seq_len, valid_fraction, seed = rc.seq_len, rc.valid_fraction, rc.seed

    def split_lists(split: str) -> ListSet:
        held, exclude = src.tdata.eval_sets[split]
        return src.lists(torch.nonzero(held.counts() > 0).flatten(), exclude, held)

    valid_lists, test_lists = split_lists("valid"), split_lists("test")
    perm = np.random.default_rng(seed).permutation(valid_lists.n_groups)
    n_val = max(1, int(round(valid_fraction * valid_lists.n_groups)))
    if n_val >= valid_lists.n_groups:
        raise RankingDataError(f"only {valid_lists.n_groups} users have a validation purchase; too few to hold "
                               f"out {valid_fraction:.0%} of them for early stopping")
    # Training sees what a ranker sees in production, the retrieved candidates; appended positives
    # would teach it to spot "what the recall model missed" instead of ranking what it found.
    train_lists = valid_lists.subset(np.sort(perm[n_val:])).retrieved_only()
    val_lists = valid_lists.subset(np.sort(perm[:n_val]))
    train_lists.pseudo = _pseudo_labels(train_lists.labels, train_lists.offsets, train_lists.labels.mean(0))
    lists = {"train": train_lists, "valid": val_lists, "test": test_lists}
    info = {
        "recall_run": str(src.recall_run), "recall_model": src.recall_info.model, "dataset": src.snapshot.dataset,
        "candidates": src.candidates, "seq_len": seq_len, "recall_score_feature": rc.recall_score_feature,
        "valid_fraction": valid_fraction, "seed": seed,
        "sequence_order": src.sequence_order(),
        "rows": {k: len(v) for k, v in lists.items()},
        "users": {k: v.n_groups for k, v in lists.items()},
        "positive_rate": {k: {t: round(float(v.labels[:, j].mean()), 5) for j, t in enumerate(src.behaviors)}
                          for k, v in lists.items()},
        # share of the held-out purchases that the recall top-N retrieved (the rest are appended rows)
        "target_retrieved": {k: round(float(v.labels[v.retrieved, -1].sum() / max(v.labels[:, -1].sum(), 1)), 5)
                             for k, v in lists.items()},
    }
    return RankingData(src.meta, src.user_dense, src.item_dense, lists, info), src

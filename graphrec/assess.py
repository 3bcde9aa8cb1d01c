"""Evaluating trained runs from their directories: the library behind ``graphrec evaluate``.

``evaluate.py`` computes metrics from scores; this module opens recall or ranking runs, evaluates
their splits under the protocols asked for, and returns tables (and, for the sparsity breakdown,
the CSV and plots it wrote) for the caller to print.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from graphrec.errors import BadValue
from graphrec.progress import format_table


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list]

    def render(self) -> str:
        return f"{self.title}\n{format_table(self.headers, self.rows)}"


@dataclass
class Report:
    tables: list[Table]
    written: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class SparsityRequest:
    """Test accuracy per group of users by number of training purchases (``--by-sparsity``)."""
    groups_file: str | Path | None = None  # a sparsity.split file; None: quantile groups
    n_groups: int = 5
    out: str | Path | None = None  # where the CSV and plots go; None: the first run's directory


def is_ranking_run(run: str | Path) -> bool:
    f = Path(run) / "run.json"
    try:
        info = json.loads(f.read_text()) if f.is_file() else None
    except ValueError:
        return False  # the recall loader says what is wrong with it
    return isinstance(info, dict) and info.get("stage") == "ranking"


def evaluate_runs(runs: Sequence[str | Path], *, ks: Sequence[int] = (10,), device: str = "auto",
                  snapshot: str | Path | None = None, sampled_negatives: int | None = None, seed: int = 0,
                  sparsity: SparsityRequest | None = None) -> Report:
    """Full-ranking HR/NDCG/Recall@K of every split of each recall run (plus the 1 + N sampled
    protocol when ``sampled_negatives`` is given and the sparsity breakdown when asked), or the
    ranking stage's list metrics when every run is a ranking run."""
    ranking = [is_ranking_run(r) for r in runs]
    if any(ranking):
        if not all(ranking):
            raise BadValue("--run mixes recall and ranking runs; evaluate them separately")
        if sampled_negatives is not None or sparsity is not None:
            raise BadValue("--sampled and --by-sparsity are for recall runs; a ranking run is evaluated on its lists")
        return Report([_ranking_table(runs, list(ks), device)])
    from graphrec.runs import open_model, pick_device, recorded_train

    dev = pick_device(device)
    opened, tables = [], []
    for run in runs:
        info, model, data, graphs = open_model(run, dev, snapshot)
        batch = recorded_train(info).eval_batch_size
        opened.append((run, info, model, data, graphs, batch))
        tables.append(_recall_table(run, info, model, data, graphs, list(ks), batch, dev, sampled_negatives, seed))
    report = Report(tables)
    if sparsity is not None:
        _by_sparsity(report, opened, list(ks), dev, snapshot, sparsity)
    return report


def _recall_table(run, info, model, data, graphs, ks: list[int], batch: int, dev: torch.device,
                  negatives: int | None, seed: int) -> Table:
    from graphrec.evaluate import evaluate_sampled, evaluate_split

    rows = []
    for split in data.eval_sets:
        m = evaluate_split(model, graphs, data, split, ks, batch, dev)
        rows.append([split, "full ranking", *[f"{m[f'{kind}@{k}']:.4f}" for kind in ("hr", "ndcg", "recall")
                                               for k in ks], m["users"]])
        if negatives is not None:
            test, _ = data.eval_sets[split]
            with torch.no_grad():
                users = torch.nonzero(test.counts() > 0).flatten()
                m = evaluate_sampled(_sampled_scores(model, graphs), users, test, all_known(data),
                                     data.meta.n_items, n_negatives=negatives, ks=tuple(ks), seed=seed, device=dev)
            rows.append([split, f"1 + {negatives} sampled", *[f"{m[f'{kind}@{k}']:.4f}"
                                                              for kind in ("hr", "ndcg") for k in ks],
                         *[""] * len(ks), m["users"]])
    headers = ["split", "protocol", *[f"{kind}@{k}" for kind in ("hr", "ndcg", "recall") for k in ks], "users"]
    return Table(f"{info.model} on {info.dataset} ({info.train['protocol']} protocol; run {run})", headers, rows)


def _sampled_scores(model, graphs):
    """The sampled protocol's scores of [N] users against their [N, M] items: pair scores where
    the model has them (a full row of NMTR costs a tower pass per item), else gathered rows."""
    pairs = model.pair_scorer(graphs)
    if pairs is not None:
        return lambda u, i: pairs(u[:, None], i)
    full = model.scorer(graphs)
    return lambda u, i: full(u).gather(1, i)


def all_known(data):
    """Every target item a user has in the snapshot (negatives of the sampled protocol avoid them)."""
    from graphrec.evaluate import UserItems

    pairs = [data.edges[data.meta.target]] + [(np.repeat(np.arange(len(t.indptr) - 1), np.diff(t.indptr.numpy())),
                                               t.indices.numpy()) for t, _ in data.eval_sets.values()]
    return UserItems.from_pairs(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]),
                                data.meta.n_users)


def _by_sparsity(report: Report, opened: list, ks: list[int], dev: torch.device, snapshot,
                 req: SparsityRequest) -> None:
    from graphrec import snapshot as snap
    from graphrec import sparsity
    from graphrec.evaluate import evaluate_split

    if len({info.snapshot_manifest_sha256 for _, info, *_ in opened}) > 1:
        raise BadValue("--by-sparsity compares runs on the same snapshot; these runs were trained on different ones")
    _, info, _, data, _, _ = opened[0]
    s = snap.read(snapshot or info.snapshot, verify_hashes=False)
    train_counts = np.bincount(data.edges[data.meta.target][0], minlength=data.meta.n_users)
    raw = (sparsity.read_split_file(req.groups_file, s.users) if req.groups_file
           else sparsity.quantile_groups(train_counts, req.n_groups))
    groups = sparsity.label_groups(raw, train_counts)
    distinct_models = len(opened) == len({i.model for _, i, *_ in opened})
    per_model, evaluated = {}, None
    for run, info, model, data, graphs, batch in opened:
        values = evaluate_split(model, graphs, data, "test", ks, batch, dev, per_user=True)
        evaluated = values.pop("users").cpu().numpy()
        per_model[info.model if distinct_models else Path(run).name] = {k: v.cpu().numpy() for k, v in values.items()}
    metrics = tuple(f"{kind}@{k}" for kind in ("hr", "ndcg") for k in ks)
    headers, rows = sparsity.table(groups, per_model, evaluated, metrics)
    source = (f"groups from {req.groups_file}" if req.groups_file
              else f"{len(groups)} quantile groups of training purchases")
    report.tables.append(Table(f"test accuracy by user sparsity ({source}; {info.train['protocol']} protocol)",
                               headers, [[r[0], r[1], *[f"{v:.4f}" for v in r[2:]]] for r in rows]))
    out = Path(req.out or opened[0][0])
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "sparsity.csv"
    with open(csv, "w") as fh:
        fh.write(",".join(headers) + "\n")
        for r in rows:
            fh.write(",".join(str(v) for v in r) + "\n")
    report.written.append(csv)
    for metric in metrics:
        png = sparsity.plot(headers, rows, metric, out / f"sparsity-{metric.replace('@', '')}.png",
                            f"{info.dataset}: test {metric} by training purchases")
        if png is not None:
            report.written.append(Path(png))


def _ranking_table(runs: Sequence[str | Path], ks: list[int], device: str) -> Table:
    from graphrec.ranking.data import build
    from graphrec.ranking.train import evaluate_lists, open_ranking, pick_device_name, predict, score_weights

    dev = pick_device_name(device)
    rows, data_cache, data = [], {}, None
    for run in runs:
        info, rc, model, src = open_ranking(run, dev)
        key = (info["recall_run"], json.dumps(info["ranking"], sort_keys=True))
        if key not in data_cache:
            data_cache[key] = build(info["recall_run"], rc, device=dev, source=src)[0]
        data = data_cache[key]
        ls = data.lists["test"]
        tasks = data.meta.tasks
        m = evaluate_lists(predict(model, data, ls, dev), ls, tasks, score_weights(rc, len(tasks)), ks)
        rows.append([info["model"], *[f"{m[f'auc_{t}']:.4f}" for t in tasks],
                     *[f"{m[f'auc_{t}_retrieved']:.4f}" for t in tasks],
                     *[f"{m[f'final_{kind}@{k}']:.4f}" for kind in ("ndcg", "mrr", "precision") for k in ks],
                     *[f"{m[f'recall_ndcg@{k}']:.4f}" for k in ks], str(run)])
    tasks = data.meta.tasks
    headers = ["model", *[f"AUC {t} (lists)" for t in tasks], *[f"AUC {t} (retrieved)" for t in tasks],
               *[f"{kind}@{k} final" for kind in ("NDCG", "MRR", "P") for k in ks],
               *[f"NDCG@{k} recall alone" for k in ks], "run"]
    title = ("ranking stage on the test lists (AUC grouped by user over each whole list, held-out purchases "
             "appended where the recall missed them, and over the retrieved rows only; 'final' = the retrieved "
             f"candidates re-ordered by the ranker; sequences: {data.info['sequence_order']})")
    return Table(title, headers, rows)

"""Training and evaluation of the ranking stage on candidate lists from a recall run.

The ranking loop is separate from graphrec.train's because its unit of work differs (lists of
candidates with one label per task, scored by AUC and list metrics, not full ranking over all
items); the run directory has the same shape: ``run.json`` (stage "ranking", model, params, the
ranking config and the recall run), ``metrics.jsonl``, ``best.pt``, ``results.md`` / ``results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from graphrec.config import RankingConfig
from graphrec.errors import UserError
from graphrec.progress import STDERR, format_table
from graphrec.ranking.base import Ranker
from graphrec.ranking.data import CandidateSource, ListSet, RankingData, build
from graphrec.ranking.metrics import grouped_auc, list_metrics
from graphrec.runs import RUN_FILE, load_weights, save_weights, write_atomic

METRICS_FILE = "metrics.jsonl"
BEST = "best.pt"


class RankingError(UserError, RuntimeError):
    pass


def pick_device_name(name: str) -> str:
    from graphrec.runs import pick_device

    return str(pick_device(name))


def score_weights(rc: RankingConfig, n_tasks: int) -> np.ndarray:
    w = rc.score_weights if rc.score_weights is not None else [1.0] * n_tasks
    if len(w) != n_tasks:
        raise RankingError(f"ranking.score_weights has {len(w)} values for {n_tasks} tasks")
    return np.asarray(w, dtype=np.float32)


def predict(model: Ranker, data: RankingData, ls: ListSet, device: torch.device, users_per_batch: int = 256
            ) -> np.ndarray:
    """Serving probabilities per task for every row of ``ls`` (row order kept)."""
    out = []
    for i in range(0, ls.n_groups, users_per_batch):
        b = data.batch(ls, np.arange(i, min(i + users_per_batch, ls.n_groups)), with_labels=False).to(device)
        out.append(model.predict(b).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(data.meta.tasks)), np.float32)


def _retrieved_offsets(ls: ListSet) -> np.ndarray:
    """Offsets of the retrieved rows, which lead every group (appended rows come last)."""
    counts = np.add.reduceat(ls.retrieved.astype(np.int64), ls.offsets[:-1]) if len(ls) else np.zeros(0, np.int64)
    counts = np.where(np.diff(ls.offsets) > 0, counts, 0)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def evaluate_lists(probs: np.ndarray, ls: ListSet, tasks: tuple[str, ...], weights: np.ndarray,
                   ks: list[int]) -> dict[str, float]:
    """AUC per task grouped by user over the whole lists (appended held-out rows included); list
    metrics of the weighted serving score against the target label over the *final list* (the
    retrieved rows, what a user would see), next to the recall model's own order of the same rows."""
    out: dict[str, float] = {}
    keep = ls.retrieved
    roff = _retrieved_offsets(ls)
    for k, t in enumerate(tasks):
        out[f"auc_{t}"] = grouped_auc(probs[:, k], ls.labels[:, k], ls.offsets).auc
        out[f"auc_{t}_retrieved"] = grouped_auc(probs[keep, k], ls.labels[keep, k], roff).auc
    score = probs @ weights
    target = ls.labels[:, -1]
    for name, v in list_metrics(score[keep], target[keep], roff, ks).items():
        out[f"final_{name}"] = v
    for name, v in list_metrics(ls.recall_score[keep], target[keep], roff, ks).items():
        out[f"recall_{name}"] = v
    out["users"] = float(ls.n_groups)
    return out


def fit_ranking(model_name: str, params: Any, rc: RankingConfig, recall_run: str | Path, run_dir: str | Path, *,
                device: str = "auto", log: TextIO | None = STDERR, data: RankingData | None = None) -> dict:
    from graphrec.models import build_model
    from graphrec.optimize import make_adam, optimize_epoch
    from graphrec.runs import pick_device

    dev = pick_device(device)
    run_dir = Path(run_dir)
    if (run_dir / METRICS_FILE).exists():
        raise RankingError(f"run directory {run_dir} already holds a run; choose another --run")
    torch.manual_seed(rc.seed)
    t0 = time.perf_counter()
    if data is None:
        data, _ = build(recall_run, rc, device=str(dev))
    _say(log, f"ranking data from {data.info['recall_model']} run {data.info['recall_run']} in "
              f"{time.perf_counter() - t0:.1f} s: {data.info['rows']['train']:,} training rows of "
              f"{data.info['users']['train']:,} users, tasks {', '.join(data.meta.tasks)}; sequences: "
              f"{data.info['sequence_order']}")
    weights = score_weights(rc, len(data.meta.tasks))
    model = build_model(model_name, params, data.meta).to(dev)
    opt = make_adam(model.parameters(), rc.lr)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"stage": "ranking", "model": model_name, "params": dataclasses.asdict(params),
            "ranking": dataclasses.asdict(rc), "recall_run": str(Path(recall_run).resolve()), "data": data.info,
            "device": str(dev), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_atomic(run_dir / RUN_FILE, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    gen = torch.Generator().manual_seed(rc.seed)
    # selection on the retrieved candidates: the appended rows' recall scores sit below every retrieved one by
    # construction, so their AUC rewards ignoring the recall score rather than ranking well
    target_auc = f"auc_{data.meta.target}_retrieved"
    best, best_epoch, bad = None, 0, 0
    with open(run_dir / METRICS_FILE, "a") as mf:
        for epoch in range(1, rc.epochs + 1):
            model.train()
            t1 = time.perf_counter()
            total, mean_loss, mean_parts = optimize_epoch(
                (model.loss(batch.to(dev)) for batch in data.batches("train", rc.users_per_batch, gen)), opt)
            if not math.isfinite(total):
                raise RankingError(f"epoch {epoch}: the loss is {total}; lower ranking.lr")
            secs = time.perf_counter() - t1
            rows = len(data.lists["train"])
            m = evaluate_lists(predict(model, data, data.lists["valid"], dev), data.lists["valid"], data.meta.tasks,
                               weights, rc.ks)
            row = {"epoch": epoch, "loss": mean_loss, "epoch_seconds": round(secs, 3),
                   "rows_per_second": round(rows / secs, 1), **mean_parts, "split": "valid", **m}
            line = (f"epoch {epoch:3d}  loss {row['loss']:.4f}  {secs:6.1f} s ({rows / secs:,.0f} rows/s)  valid "
                    + "  ".join(f"auc_{t} {m[f'auc_{t}']:.4f} / {m[f'auc_{t}_retrieved']:.4f}" for t in data.meta.tasks)
                    + f"  final ndcg@{rc.ks[-1]} {m[f'final_ndcg@{rc.ks[-1]}']:.4f}")
            if best is None or m[target_auc] > best:
                best, best_epoch, bad = m[target_auc], epoch, 0
                save_weights({"model": model.state_dict()}, run_dir, BEST)
                line += "  *"
            else:
                bad += 1
            mf.write(json.dumps(row) + "\n")
            mf.flush()
            _say(log, line)
            if bad >= rc.patience:
                _say(log, f"no improvement of valid {target_auc} for {rc.patience} epochs: stopping")
                break
    model.load_state_dict(load_weights(run_dir, BEST, dev)["model"])
    test = evaluate_lists(predict(model, data, data.lists["test"], dev), data.lists["test"], data.meta.tasks,
                          weights, rc.ks)
    results = {"model": model_name, "best_epoch": best_epoch, "epochs_run": epoch, "valid_" + target_auc: best,
               "test": test, "data": data.info}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (run_dir / "results.md").write_text(results_markdown(model_name, test, data.meta.tasks, rc.ks, data.info) + "\n")
    _say(log, results_markdown(model_name, test, data.meta.tasks, rc.ks, data.info))
    return results


def results_markdown(model: str, m: dict, tasks: tuple[str, ...], ks: list[int], info: dict) -> str:
    k = ks[-1]
    rows = [[model, *[f"{m[f'auc_{t}']:.4f}" for t in tasks], *[f"{m[f'auc_{t}_retrieved']:.4f}" for t in tasks],
             f"{m[f'final_ndcg@{k}']:.4f}", f"{m[f'recall_ndcg@{k}']:.4f}", f"{m[f'final_mrr@{k}']:.4f}",
             f"{m[f'final_precision@{k}']:.4f}"]]
    headers = ["model", *[f"AUC {t} (lists)" for t in tasks], *[f"AUC {t} (retrieved)" for t in tasks],
               f"NDCG@{k} final",
               f"NDCG@{k} recall alone", f"MRR@{k} final", f"P@{k} final"]
    return (f"## ranking stage, test lists ({info['users']['test']:,} users, top-{info['candidates']} of "
            f"{info['recall_model']})\n\n" + format_table(headers, rows))


def open_ranking(run_dir: str | Path, device: torch.device | str = "cpu"
                 ) -> tuple[dict, RankingConfig, Ranker, CandidateSource]:
    """A trained ranking run: its run.json, ranking config, model and its recall run's candidate
    source (for serving and evaluation)."""
    from graphrec.config import from_dict
    from graphrec.models import build_model, get_model

    f = Path(run_dir) / RUN_FILE
    if not f.is_file():
        raise RankingError(f"{run_dir} is not a run directory (no {RUN_FILE})")
    info = json.loads(f.read_text())
    if info.get("stage") != "ranking":
        raise RankingError(f"{run_dir} is a recall run, not a ranking run")
    rc = from_dict(RankingConfig, info["ranking"], "ranking")
    src = CandidateSource.from_config(info["recall_run"], rc, device=str(device))
    params = from_dict(get_model(info["model"]).params, info["params"], f"models.{info['model']}")
    model = build_model(info["model"], params, src.meta).to(device)
    model.load_state_dict(load_weights(Path(run_dir), BEST, device)["model"])
    model.eval()
    return info, rc, model, src


def _say(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        print(text, file=stream, flush=True)

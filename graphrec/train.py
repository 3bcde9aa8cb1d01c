"""The recall training loop: epochs, protocols, early stopping, checkpoints (the data it trains on
is graphrec.sampling, run directories and weights graphrec.runs, optimizers graphrec.optimize).

    config → snapshot → TrainData → model → fit → evaluate

A run directory holds ``run.json`` (resolved config, model params, dataset and snapshot hash),
``metrics.jsonl`` (one line per epoch and per evaluation), ``checkpoint.pt`` (latest state, for
``--resume``), ``best.pt`` (weights at the best evaluation), ``results.md`` / ``results.json``
and ``curve.png``. Everything loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np
import torch

from graphrec import distributed
from graphrec import snapshot as snap
from graphrec.config import TrainConfig
from graphrec.evaluate import evaluate_split
from graphrec.models import build_model, get_model
from graphrec.optimize import make_optimizer, optimize_epoch
from graphrec.progress import STDERR, format_table
from graphrec.runs import (
    BEST,
    CHECKPOINT,
    METRICS_FILE,
    RUN_FILE,
    RunInfo,
    TrainError,
    load_run,
    load_weights,
    manifest_hash,
    open_model,
    pick_device,
    recorded_train,
    run_lock,
    save_weights,
    write_atomic,
)
from graphrec.sampling import TrainData, model_batches

#: What each protocol's test figures mean, printed beside every results table.
PROTOCOL_NOTES = {
    "paper": "paper protocol: early stopping used the test split, as the reference code does; these test figures "
             "are for comparison with published numbers only",
    "honest": "honest protocol: model selected on the validation split; test evaluated once",
    "fixed": "fixed protocol: a fixed epoch budget on every non-test purchase, no model selection; test evaluated "
             "once, after the last epoch",
}


# ----------------------------------------------------------------------------------------------- data


# -------------------------------------------------------------------------------------------- batches


# ----------------------------------------------------------------------------------------------- runs


# ----------------------------------------------------------------------------------------------- fit


@dataclass
class FitResult:
    run_dir: Path
    best: dict
    final: dict
    epochs_run: int
    stopped_early: bool


def fit(model_name: str, params: Any, tc: TrainConfig, snapshot_path: str | Path, run_dir: str | Path, *,
        device: str = "auto", resume: bool = False, log: TextIO | None = STDERR,
        on_epoch: Callable[[int, dict], None] | None = None) -> FitResult:
    """Train ``model_name`` into ``run_dir`` (held exclusively meanwhile: see ``runs.run_lock``).
    Under torchrun every process calls this; graphrec.distributed says how they share the work."""
    ctx = distributed.from_env()
    dev = distributed.device_for(ctx, pick_device(device))
    owned = distributed.start(ctx, dev)
    finished = False
    try:
        run_dir = Path(distributed.broadcast(ctx, str(run_dir)))  # a default name may differ per process
        if not ctx.leader:
            result = _fit(model_name, params, tc, snapshot_path, run_dir, dev=dev, ctx=ctx, resume=resume, log=None,
                          on_epoch=on_epoch)
        else:
            with run_lock(run_dir):
                result = _fit(model_name, params, tc, snapshot_path, run_dir, dev=dev, ctx=ctx, resume=resume,
                              log=log, on_epoch=on_epoch)
        finished = True
        return result
    finally:
        if owned:
            distributed.stop(finished=finished)


def _evaluate(model, graphs, data: TrainData, split: str, tc: TrainConfig, dev: torch.device,
              ctx: distributed.Context) -> dict:
    """evaluate_split, sharded by users over the processes of a distributed run."""
    if not ctx.active:
        return evaluate_split(model, graphs, data, split, tc.ks, tc.eval_batch_size, dev)
    part = evaluate_split(model, graphs, data, split, tc.ks, tc.eval_batch_size, dev, per_user=True,
                          shard=(ctx.rank, ctx.world))
    keys = sorted(k for k in part if k != "users")
    sums = distributed.total(ctx, torch.tensor([float(part[k].sum()) for k in keys] + [float(part["users"].numel())],
                                               dtype=torch.float64)).tolist()
    n = int(sums[-1])
    return {**{k: v / n if n else math.nan for k, v in zip(keys, sums)}, "users": n}


def _fit(model_name: str, params: Any, tc: TrainConfig, snapshot_path: str | Path, run_dir: Path, *,
         dev: torch.device, ctx: distributed.Context, resume: bool, log: TextIO | None,
         on_epoch: Callable[[int, dict], None] | None) -> FitResult:
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    s = snap.read(snapshot_path)
    entry = get_model(model_name)
    data = TrainData.for_model(s, tc, entry.cls, dev)
    graphs = data.graphs(entry.cls.relations(data.meta), dev)
    model = build_model(model_name, params, data.meta).to(dev)
    opt = make_optimizer(model, tc)
    info = RunInfo(model_name, dataclasses.asdict(params), dataclasses.asdict(tc), s.dataset,
                   str(Path(snapshot_path).resolve()), manifest_hash(Path(snapshot_path)), str(dev),
                   time.strftime("%Y-%m-%dT%H:%M:%S"))
    gen = torch.Generator().manual_seed(tc.seed)
    state = {"epoch": 0, "best": None, "best_epoch": None, "bad": 0}
    if resume:
        ckpt_path = run_dir / CHECKPOINT
        if not ckpt_path.is_file():
            raise TrainError(f"--resume: no {CHECKPOINT} in {run_dir}")
        prev = load_run(run_dir)
        same_params = json.loads(json.dumps(info.params)) == prev.params
        if ((prev.model, prev.snapshot_manifest_sha256) != (info.model, info.snapshot_manifest_sha256)
                or not same_params):
            raise TrainError(f"--resume: {run_dir} was trained with a different model, params or snapshot; "
                             "start a new run directory instead")
        ckpt = load_weights(run_dir, CHECKPOINT, dev)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if dev.type == "cuda" and ckpt.get("cuda_rng"):
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        state = json.loads(ckpt["state"])
        distributed.barrier(ctx)  # every process has read the run before rank 0 rewrites its records
        if ctx.leader:
            # metrics written after the checkpoint (a run stopped between evaluations) are redone
            rows = (run_dir / METRICS_FILE).read_text().splitlines()
            (run_dir / METRICS_FILE).write_text("".join(r + "\n" for r in rows[:state["epoch"]]))
            info = dataclasses.replace(info, files=prev.files)  # the hashes of the files written so far
            write_atomic(run_dir / RUN_FILE, info.to_json().encode())  # epochs and patience may change on resume
        _say(log, f"resuming {run_dir} after epoch {state['epoch']}")
    else:
        if (run_dir / METRICS_FILE).exists():
            raise TrainError(f"run directory {run_dir} already holds a run; pass --resume to continue it or "
                             "choose another --run")
        distributed.barrier(ctx)  # every process has checked before rank 0 writes
        if ctx.leader:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(run_dir / RUN_FILE, info.to_json().encode())
    how = (f"early stop on {data.selection} by {tc.metric}" if data.selection else
           f"{tc.epochs} epochs, test evaluated once at the end")
    procs = f" | {ctx.world} processes" if ctx.active else ""
    _say(log, f"{model_name} on {s.dataset} ({data.meta.n_users:,} users, {data.meta.n_items:,} items, behaviors "
              f"{' → '.join(data.meta.behaviors)}) | device {dev}{procs} | protocol {tc.protocol}: {how} "
              f"| run {run_dir}")
    metrics_f = open(run_dir / METRICS_FILE, "a") if ctx.leader else None
    net = distributed.wrap(model, ctx, dev) if ctx.active else None

    def losses(batches):
        for b in batches:
            if net is None:
                yield model.loss(b, graphs)
                continue
            local, weight = distributed.shard(b, model.batching, data.meta.target, ctx)
            loss, parts = net(local, graphs)
            if model.loss_reduction == "mean":
                loss, parts = loss * weight, {k: v * weight for k, v in parts.items()}
            yield loss, parts

    stopped_early = False
    try:
        for epoch in range(state["epoch"], tc.epochs):
            model.train()
            t0 = time.perf_counter()
            batches = model_batches(model, data, tc.batch_size, tc.drop_last, gen, dev)
            total, mean_loss, mean_parts = optimize_epoch(losses(batches), opt)
            if ctx.active:  # the step's loss is the mean over processes of theirs
                g = distributed.mean(ctx, {"total": total, "loss": mean_loss})
                total, mean_loss = g["total"], g["loss"]
                mean_parts = distributed.mean(ctx, mean_parts)
            if not math.isfinite(total):
                raise TrainError(f"epoch {epoch + 1}: the loss is {total}; lower train.lr or check the params")
            epoch_s = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "loss": mean_loss, "epoch_seconds": round(epoch_s, 3), **mean_parts}
            line = f"epoch {epoch + 1:4d}  loss {row['loss']:.4f}  {epoch_s:6.1f} s"
            last = epoch + 1 == tc.epochs
            checkpoint = (epoch + 1) % tc.eval_every == 0 or last
            if data.selection is not None and checkpoint:
                t1 = time.perf_counter()
                m = _evaluate(model, graphs, data, data.selection, tc, dev, ctx)
                row.update({"split": data.selection, **m, "eval_seconds": round(time.perf_counter() - t1, 3)})
                line += "  " + "  ".join(f"{data.selection} {k} {m[k]:.4f}" for k in m if "@" in k)
                value = m[tc.metric]
                if state["best"] is None or value >= state["best"]:
                    state.update(best=value, best_epoch=epoch + 1, bad=0)
                    if ctx.leader:
                        save_weights({"model": model.state_dict()}, run_dir, BEST)
                    line += "  *"
                else:
                    state["bad"] += 1
            state["epoch"] = epoch + 1
            _say(log, line)
            if ctx.leader:
                _record(run_dir, metrics_f, row, model, opt, gen, state, dev,
                        final_weights=data.selection is None and last, checkpoint=checkpoint)
            if on_epoch is not None:
                on_epoch(epoch + 1, row)
            if state["bad"] >= tc.patience:
                stopped_early = True
                _say(log, f"no improvement of {data.selection} {tc.metric} for {tc.patience} evaluations: stopping")
                break
    finally:
        if metrics_f is not None:
            metrics_f.close()
    # rank 0 evaluates the best weights and writes the results; the others wait for them
    final = distributed.broadcast(ctx, finish(run_dir, log=log, device=str(dev)) if ctx.leader else None)
    return FitResult(run_dir, {"epoch": state["best_epoch"], tc.metric: state["best"]}, final, state["epoch"],
                     stopped_early)


def finish(run_dir: str | Path, *, log: TextIO | None = STDERR, device: str = "cpu") -> dict:
    """Evaluate the best weights on the test split, write results.md/json and the curve."""
    run_dir = Path(run_dir)
    info, model, data, graphs = open_model(run_dir, device)
    tc = recorded_train(info)
    ks = sorted(set(tc.ks) | {10})
    dev = torch.device(device)
    results = {}
    for split in data.eval_sets:
        t0 = time.perf_counter()
        results[split] = evaluate_split(model, graphs, data, split, ks, tc.eval_batch_size, dev)
        results[split]["seconds"] = round(time.perf_counter() - t0, 3)
    rows = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines() if line.strip()]
    evals = [r for r in rows if "split" in r]
    best = max(evals, key=lambda r: (r[tc.metric], r["epoch"])) if evals else None
    epoch_times = [r["epoch_seconds"] for r in rows]
    # under `fixed` the weights are those of the last epoch, reported as its "best" epoch
    best_epoch = best["epoch"] if best else (len(rows) if data.selection is None and rows else None)
    summary = {"model": info.model, "dataset": info.dataset, "protocol": tc.protocol, "selection": data.selection,
               "best_epoch": best_epoch, "epochs_run": len(rows),
               "median_epoch_seconds": float(np.median(epoch_times)) if epoch_times else None,
               "results": results, "device": device}
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    metric_names = [k for k in results["test"] if "@" in k]
    table = format_table(["split", *metric_names, "users"],
                         [[split, *[f"{r[k]:.4f}" for k in metric_names], r.get("users", "")]
                          for split, r in results.items()])
    note = PROTOCOL_NOTES[tc.protocol]
    text = (f"# {info.model} on {info.dataset}\n\nbest epoch {summary['best_epoch']} of {summary['epochs_run']}; "
            f"median epoch {summary['median_epoch_seconds']:.2f} s on {info.device}\n\n{table}\n\n{note}\n")
    (run_dir / "results.md").write_text(text)
    plot_curve(run_dir, rows, tc.metric)
    _say(log, text)
    return summary


def plot_curve(run_dir: Path, rows: list[dict], metric: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], color="tab:blue", label="loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss", color="tab:blue")
    evals = [r for r in rows if "split" in r]
    if evals:
        ax2 = ax1.twinx()
        ax2.plot([r["epoch"] for r in evals], [r[metric] for r in evals], "o-", color="tab:red")
        ax2.set_ylabel(f"{evals[0]['split']} {metric}", color="tab:red")
    fig.tight_layout()
    out = run_dir / "curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _record(run_dir: Path, metrics_f: TextIO, row: dict, model, opt, gen: torch.Generator, state: dict,
            dev: torch.device, *, final_weights: bool, checkpoint: bool) -> None:
    """The epoch's metrics line, the final weights of a fixed-budget run, and the checkpoint."""
    metrics_f.write(json.dumps(row) + "\n")
    metrics_f.flush()
    if final_weights:
        save_weights({"model": model.state_dict()}, run_dir, BEST)  # fixed: the final weights
    if checkpoint:
        cuda_rng = torch.cuda.get_rng_state_all() if dev.type == "cuda" else []  # dropout on the GPU
        save_weights({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                      "torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng, "state": json.dumps(state)},
                     run_dir, CHECKPOINT)


def _say(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        print(text, file=stream, flush=True)

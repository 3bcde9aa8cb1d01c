"""Training benchmark: epoch time and full-evaluation time per model, and the accuracy of finished runs
beside the published numbers.

    python bench/train.py --snapshot .graphrec/snapshots/beibei [--models hpmr,ghcf] [--epochs 3]
                          [--device auto] [--config configs/beibei.yaml] [--runs RUN_DIR ...]

Speed: each model trains ``--epochs`` full epochs with the dataset preset (median epoch time is
reported), then every user with a test purchase is scored against all items and ranked
(HR/NDCG@10, train purchases excluded). Accuracy: for each ``--runs`` directory, its test
HR@10/NDCG@10 beside the published numbers (bench/published.py: HPMR's Table 2 for Beibei/Taobao,
whose view logs ../shared/data does not have, and MuLe's table for taobao_mbcgcn); every row says
what data the comparison stands on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from graphrec import snapshot as snap
from graphrec.config import load_config, model_params, train_config
from graphrec.evaluate import evaluate_split
from graphrec.malloc import keep_freed_memory
from graphrec.models import build_model, get_model
from graphrec.optimize import make_optimizer
from graphrec.progress import format_table
from graphrec.runs import pick_device
from graphrec.sampling import TrainData, model_batches

from published import CAVEATS, published

ROOT = Path(__file__).resolve().parents[1]


def speed(snapshot_path: Path, models: list[str], epochs: int, device: torch.device, config: Path | None) -> list:
    s = snap.read(snapshot_path)
    cfg = load_config(config, [])
    rows = []
    for name in models:
        tc = train_config(cfg, name)
        entry = get_model(name)
        torch.manual_seed(tc.seed)
        t0 = time.perf_counter()
        data = TrainData.for_model(s, tc, entry.cls, device)
        graphs = data.graphs(entry.cls.relations(data.meta), device)
        model = build_model(name, model_params(cfg, name), data.meta).to(device)
        setup = time.perf_counter() - t0
        times, n, evals, m = time_training(model, data, graphs, tc, device, epochs,
                                           1024 if device.type == "cpu" else 8192, log_name=name)
        rows.append([name, n, round(setup, 2), round(statistics.median(times), 2), round(min(evals), 3),
                     m["users"]])
    return rows


def time_training(model, data: TrainData, graphs, tc, device: torch.device, epochs: int, eval_batch: int,
                  log_name: str | None = None) -> tuple[list[float], int, list[float], dict]:
    """``epochs`` epochs with the configured optimizer (Adagrad for EHCF and NMTR), then three full
    evaluations of the test split (the first includes one-time work: scorer set-up, kernels).
    Returns the epoch seconds, the steps of an epoch, the evaluation seconds and the metrics."""
    opt = make_optimizer(model, tc)
    gen = torch.Generator().manual_seed(tc.seed)
    times, steps = [], 0
    for epoch in range(epochs):
        model.train()
        _sync(device)
        t = time.perf_counter()
        steps = 0
        for batch in model_batches(model, data, tc.batch_size, tc.drop_last, gen, device):
            loss, _ = model.loss(batch, graphs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        _sync(device)
        times.append(time.perf_counter() - t)
        if log_name:
            print(f"  {log_name}: epoch {epoch + 1} {times[-1]:.2f} s ({steps} batches)", file=sys.stderr, flush=True)
    evals = []
    for _ in range(3):
        _sync(device)
        t = time.perf_counter()
        m = evaluate_split(model, graphs, data, "test", [10], eval_batch, device)
        _sync(device)
        evals.append(time.perf_counter() - t)
    return times, steps, evals, m


def accuracy(runs: list[Path]) -> list:
    rows = []
    for run in runs:
        res = json.loads((run / "results.json").read_text())
        test = res["results"]["test"]
        pub = published(res["dataset"], res["model"])
        rel = f"{100 * (test['hr@10'] / pub[0] - 1):+.1f}%" if pub else ""
        rows.append([res["dataset"], res["model"], res["protocol"], res["best_epoch"], res["epochs_run"],
                     f"{test['hr@10']:.4f}", f"{test['ndcg@10']:.4f}", f"{pub[0]:.4f}" if pub else "",
                     f"{pub[1]:.4f}" if pub else "", rel, CAVEATS.get(res["dataset"], "")])
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", default=str(ROOT / ".graphrec/snapshots/beibei"))
    ap.add_argument("--models", default="hpmr,ghcf,lightgcn_m,lightgcn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", help="dataset preset (default configs/DATASET.yaml)")
    ap.add_argument("--runs", nargs="*", default=[], help="finished run directories to tabulate")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench/out/train.md"))
    args = ap.parse_args()
    device = pick_device(args.device)
    parts = []
    if not args.skip_speed:
        s = snap.read(args.snapshot)
        config = Path(args.config) if args.config else ROOT / "configs" / f"{s.dataset}.yaml"
        rows = speed(Path(args.snapshot), args.models.split(","), args.epochs, device,
                     config if config.exists() else None)
        name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
        parts.append(f"## speed: {s.dataset} ({s.n_users:,} users, {s.n_items:,} items; {name})\n\n" + format_table(
            ["model", "batches/epoch", "setup s", "median epoch s", "full eval s (all test users)", "users"], rows))
    if args.runs:
        parts.append("## accuracy (test split; paper protocol = early stop on test, as the reference code)\n\n"
                     + format_table(["dataset", "model", "protocol", "best epoch", "epochs run", "HR@10", "NDCG@10",
                                     "published HR@10", "published NDCG@10", "HR rel. diff", "data"],
                                    accuracy([Path(r) for r in args.runs])))
    text = "\n\n".join(parts) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

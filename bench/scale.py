"""The cost curve: what a step, an epoch and a full evaluation cost, and how much memory they take,
as the log grows (issue 18).

    python bench/scale.py [--sizes 1M,10M] [--models hpmr,ghcf,lightgcn,ehcf] [--steps 8]
                          [--like taobao_mbcgcn] [--device auto] [--dir .graphrec/scale]

For each size, a seeded synthetic log shaped like ``--like`` (graphrec synth) and its snapshot, built
without a database exactly as ingest + export would build it (graphrec.synth.snapshot_from_log;
cached in ``--dir``). For each model, one fresh process (so that its peak RSS is its own) builds the
model from ``--like``'s preset, runs 2 warm-up steps and ``--steps`` timed ones of the first epoch
(the rest of the epoch's batches are drawn and counted, not trained), then one full evaluation of
every test user against every item (scored in chunks of users). The epoch figure is steps per epoch
× the median step; the whole graph is propagated every step, so every step of an epoch costs the same.

Peak memory is the process's maximum RSS (and CUDA's max allocated on a GPU), including torch's own
~0.5 GiB. Nothing in training or evaluation is (users × items): evaluation scores 1,024 users at a
time on the CPU (8,192 on a GPU); tests/test_scale.py checks that bound under an address-space limit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def build(s, cfg, tc, model_name: str, device: torch.device):
    """The training data, graphs and model of ``model_name`` on snapshot ``s`` (config ``cfg``, settings ``tc``)."""
    from graphrec.config import model_params
    from graphrec.models import build_model, get_model
    from graphrec.sampling import TrainData

    cls = get_model(model_name).cls
    data = TrainData.for_model(s, tc, cls, device)
    graphs = data.graphs(cls.relations(data.meta), device)
    return data, graphs, build_model(model_name, model_params(cfg, model_name), data.meta).to(device)


def one(snapshot: Path, model_name: str, steps: int, config: Path, device_name: str) -> dict:
    from graphrec import snapshot as snap
    from graphrec.config import load_config, train_config
    from graphrec.evaluate import evaluate_split
    from graphrec.optimize import make_optimizer
    from graphrec.runs import pick_device
    from graphrec.sampling import model_batches

    device = pick_device(device_name)
    cfg = load_config(config, [])
    tc = train_config(cfg, model_name)
    s = snap.read(snapshot)
    torch.manual_seed(tc.seed)
    t0 = time.perf_counter()
    data, graphs, model = build(s, cfg, tc, model_name, device)
    opt = make_optimizer(model, tc)
    setup = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(tc.seed)
    times, n = [], 0
    model.train()
    for batch in model_batches(model, data, tc.batch_size, tc.drop_last, gen, device):
        n += 1
        if n > steps + 2:
            continue
        _sync(device)
        t = time.perf_counter()
        loss, _ = model.loss(batch, graphs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if n > 2:
            times.append(time.perf_counter() - t)
    _sync(device)
    t = time.perf_counter()
    m = evaluate_split(model, graphs, data, "test", [10], 1024 if device.type == "cpu" else 8192, device)
    _sync(device)
    evaluation = time.perf_counter() - t
    nnz = sum(int(u.size) for u, _ in data.edges.values())
    return {"model": model_name, "users": s.n_users, "items": s.n_items, "train_edges": nnz, "steps_per_epoch": n,
            "step_s": statistics.median(times), "step_min": min(times), "step_max": max(times),
            "epoch_s": n * statistics.median(times), "setup_s": setup, "eval_s": evaluation, "eval_users": m["users"],
            "hr@10": m["hr@10"], "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cuda_max_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
            "device": (torch.cuda.get_device_name() if device.type == "cuda"
                       else f"cpu, {torch.get_num_threads()} threads")}


def measure(snapshot: Path, model_name: str, steps: int, preset: str, device: str) -> dict:
    """``one`` in a fresh process, so that the peak RSS is that model's own; ``preset`` names
    configs/PRESET.yaml."""
    cmd = [sys.executable, __file__, "--one", str(snapshot), model_name, "--steps", str(steps), "--like", preset,
           "--device", device]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode:
        sys.exit(f"{model_name} on {snapshot} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def snapshot_for(size: str, like: str, folder: Path) -> Path:
    from graphrec.synth import parse_count, synthesize

    out = folder / f"synth-{size.lower()}"
    if not (out / "manifest.json").exists():
        t = time.perf_counter()
        synthesize(like, parse_count(size), folder / f"synth-{size.lower()}.parquet", snapshot=out)
        print(f"  {out}: generated and built in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return out


def table(rows: list[dict]) -> str:
    from graphrec.progress import format_table

    body = [[r["size"], f"{r['users']:,} × {r['items']:,}", f"{r['train_edges'] / 1e6:.1f}M", r["model"],
             r["steps_per_epoch"], f"{r['step_s']:.3f} ({r['step_min']:.3f}–{r['step_max']:.3f})",
             f"{r['epoch_s']:.0f}", f"{r['eval_s']:.1f}", f"{r['peak_rss_mib'] / 1024:.2f}",
             "" if r["cuda_max_mib"] is None else f"{r['cuda_max_mib'] / 1024:.2f}", f"{r['setup_s']:.1f}"]
            for r in rows]
    return format_table(["events", "users × items", "train edges", "model", "steps/epoch",
                         "step s, median (min–max)", "epoch s", "full eval s", "peak RSS GiB", "CUDA max GiB",
                         "setup s"], body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1M,10M")
    ap.add_argument("--models", default="hpmr,ghcf,lightgcn,ehcf")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--like", default="taobao_mbcgcn")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dir", default=str(ROOT / ".graphrec/scale"))
    ap.add_argument("--out", default=str(ROOT / "bench/out/scale.md"))
    ap.add_argument("--one", nargs=2, metavar=("SNAPSHOT", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    config = ROOT / "configs" / f"{args.like}.yaml"
    if args.one:
        from graphrec.malloc import keep_freed_memory

        keep_freed_memory()
        print(json.dumps(one(Path(args.one[0]), args.one[1], args.steps, config, args.device)))
        return
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes.split(","):
        path = snapshot_for(size, args.like, folder)
        for name in args.models.split(","):
            rows.append({"size": size, **measure(path, name, args.steps, args.like, args.device)})
            print(f"  {size} {name}: step {rows[-1]['step_s']:.3f} s, epoch {rows[-1]['epoch_s']:.0f} s, "
                  f"eval {rows[-1]['eval_s']:.1f} s, peak RSS {rows[-1]['peak_rss_mib']:,.0f} MiB",
                  file=sys.stderr, flush=True)
    text = f"## cost curve ({rows[0]['device']}; logs shaped like {args.like})\n\n{table(rows)}\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()

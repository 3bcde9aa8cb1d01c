"""Full-evaluation time per model: this checkout against another one, alternating, in one run.

    python bench/evaluation.py --snapshot .graphrec/snapshots/beibei [--models hpmr,lightgcn,nmtr]
        [--runs nmtr=RUN_DIR] [--against OTHER_CHECKOUT] [--rounds 3] [--threads 2]

Each model is built with the dataset preset (seeded, untrained) or loaded from a trained run
(``--runs model=DIR``: rank counting's cost depends on how good the model is), then the test split
is evaluated (all users against all items, train purchases excluded). One measurement is a fresh
process (``--one``) timing ``--repeats`` evaluations after a warm-up one; with ``--against`` the
two checkouts' processes alternate ``--rounds`` times and the table gives the median (min-max)
of each, and the test metrics of both (they must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(snapshot: str, model_name: str, run: str | None, repeats: int, threads: int) -> dict:
    """Time ``repeats`` full evaluations of one model in this process (after one warm-up)."""
    import torch

    from graphrec import snapshot as snap
    from graphrec.config import load_config, model_params, train_config
    from graphrec.evaluate import evaluate_split
    from graphrec.models import build_model, get_model
    from graphrec.runs import open_model
    from graphrec.sampling import TrainData

    torch.set_num_threads(threads)
    if run:
        _, model, data, graphs = open_model(run, "cpu")
    else:
        s = snap.read(snapshot)
        cfg = load_config(ROOT / "configs" / f"{s.dataset}.yaml", [])
        tc = train_config(cfg, model_name)
        torch.manual_seed(tc.seed)
        data = TrainData.for_model(s, tc, get_model(model_name).cls, "cpu")
        graphs = data.graphs(get_model(model_name).cls.relations(data.meta), "cpu")
        model = build_model(model_name, model_params(cfg, model_name), data.meta)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        m = evaluate_split(model, graphs, data, "test", [10], 1024, torch.device("cpu"))
        times.append(time.perf_counter() - t)
    import graphrec

    return {"times": times[1:], "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"], "users": m["users"],
            "graphrec": str(Path(graphrec.__file__).parent)}


def measure(checkout: Path, args: argparse.Namespace, model: str, run: str | None) -> dict:
    # This script, with the other checkout's graphrec first on the path (it need not have this file).
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", "--snapshot", args.snapshot,
           "--models", model, "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if run:
        cmd += ["--runs", f"{model}={run}"]
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if Path(r["graphrec"]) != checkout / "graphrec":
        raise SystemExit(f"measured {r['graphrec']}, not {checkout}: is graphrec installed non-editable?")
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", default=str(ROOT / ".graphrec/snapshots/beibei"))
    ap.add_argument("--models", default="hpmr,ghcf,lightgcn_m,lightgcn,ehcf,nmtr")
    ap.add_argument("--runs", nargs="*", default=[], help="model=RUN_DIR: evaluate that trained run instead")
    ap.add_argument("--against", help="another checkout of graphrec (e.g. a git worktree of an older commit)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", action="store_true", help="(internal) measure in this process, print JSON")
    ap.add_argument("--out", default=str(ROOT / "bench/out/evaluation.md"))
    args = ap.parse_args()
    runs = dict(r.split("=", 1) for r in args.runs)
    models = args.models.split(",")
    if args.one:
        print(json.dumps(one(args.snapshot, models[0], runs.get(models[0]), args.repeats, args.threads)))
        return
    from graphrec.progress import format_table

    sides = [("this checkout", ROOT)] + ([("against", Path(args.against).resolve())] if args.against else [])
    rows = []
    for model in models:
        got: dict[str, list] = {name: [] for name, _ in sides}
        metrics = {}
        for _ in range(args.rounds):
            for name, checkout in sides:
                r = measure(checkout, args, model, runs.get(model))
                got[name] += r["times"]
                metrics[name] = r
        row = [model, "trained run" if model in runs else "untrained"]
        for name, _ in sides:
            t = got[name]
            row += [f"{statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f})", f"{metrics[name]['hr@10']:.4f}"]
            print(f"  {model} {name}: {row[-2]} s", file=sys.stderr, flush=True)
        if args.against:
            row.append(f"{statistics.median(got['against']) / statistics.median(got['this checkout']):.1f}x")
        rows.append(row)
    headers = ["model", "weights", "full evaluation s, this checkout", "HR@10"]
    if args.against:
        headers += ["full evaluation s, against", "HR@10 (against)", "speed-up"]
    text = (f"## full evaluation, {Path(args.snapshot).name} (cpu, {args.threads} threads; median (min-max) of "
            f"{args.rounds} x {args.repeats})\n\n" + format_table(headers, rows) + "\n")
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

"""The GPU check in one command: prepared here, run on a machine with torch alone.

    python bench/gpu.py bundle [--snapshots .graphrec/snapshots/beibei ...] [--out .graphrec/gpu-bundle]
    PYTHONPATH=. python bench/gpu.py run --bundle .graphrec/gpu-bundle [--device auto|cuda|cpu] [--out FILE]

``bundle`` (here, where the presets and their YAML are): copies each snapshot, resolves every
model's params and train settings from its data set's preset into ``plan.json``, and trains a
one-epoch LightGCN recall run on the first snapshot for the ranking row. It prints the command for
the GPU machine, which needs Python, torch and numpy only (no DGL, Java, YAML or network): carry
the bundle (``run`` tool: ``carry: [".graphrec/gpu-bundle"]``; Beibei + taobao_mbcgcn: 17 MiB).

``run`` prints one table: the CUDA-marked tests (when pytest is there), one propagation forward +
backward with the achieved memory bandwidth (bench/propagation.py), then per snapshot and model the
median epoch, the full evaluation of every test user, HR@10 after the epochs and the peak CUDA
memory, and the ranking stage's training rows/s; the goals of issue 16 beside them. With
``--device cpu`` it is the same script on the CPU (CI runs it on a tiny snapshot).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from train import time_training

from graphrec import snapshot as snap
from graphrec.config import TrainConfig, from_dict
from graphrec.malloc import keep_freed_memory
from graphrec.models import build_model, get_model
from graphrec.progress import format_table
from graphrec.runs import params_from_dict, pick_device
from graphrec.sampling import TrainData

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("hpmr", "ghcf", "lightgcn")
RANKER = "dmt"
#: Issue 16's goals on an H100/H200, shown beside the measured figures.
GOALS = {"epoch:hpmr:beibei": "≤ 1 s", "eval": "≤ 0.2 s", "propagation": "≥ 50% of peak"}


def bundle(snapshots: list[Path], out: Path, models: tuple[str, ...], ranking: bool) -> Path:
    from graphrec.config import load_config, model_params, preset_for, train_config
    from graphrec.train import fit

    if out.exists():
        if any(out.iterdir()) and not (out / "plan.json").is_file():
            raise SystemExit(f"{out} is not empty and holds no plan.json: not a bundle, so it is left alone; "
                             "pass another --out")
        shutil.rmtree(out)
    (out / "snapshots").mkdir(parents=True)
    plan: dict = {"datasets": {}, "ranking": None}
    for path in snapshots:
        s = snap.read(path)
        preset = preset_for(s.dataset)
        cfg = load_config(preset, [])
        dest = out / "snapshots" / path.name
        shutil.copytree(path, dest)
        plan["datasets"][path.name] = {
            "snapshot": str(dest.relative_to(out)), "preset": str(preset) if preset else None,
            "models": {m: {"params": dataclasses.asdict(model_params(cfg, m)),
                           # fixed: every non-test purchase trains, with or without a validation split
                           "train": dataclasses.asdict(dataclasses.replace(train_config(cfg, m), protocol="fixed"))}
                       for m in models}}
    if ranking and snapshots:
        first = snapshots[0]
        cfg = load_config(preset_for(snap.read(first).dataset), [])
        tc = dataclasses.replace(train_config(cfg, "lightgcn"), protocol="honest", epochs=1, eval_every=1)
        run = out / "recall-run"
        fit("lightgcn", model_params(cfg, "lightgcn"), tc, out / "snapshots" / first.name, run, device="cpu",
            log=None)
        for heavy in ("checkpoint.pt", "curve.png"):  # serving reads best.pt; the bundle travels
            (run / heavy).unlink(missing_ok=True)
        plan["ranking"] = {"recall_run": "recall-run", "snapshot": f"snapshots/{first.name}", "model": RANKER,
                           "params": dataclasses.asdict(model_params(cfg, RANKER)),
                           "ranking": dataclasses.asdict(cfg.ranking)}
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    return out


def _peak_mib(dev: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(dev) / 2**20:,.0f}" if dev.type == "cuda" else "-"


def cuda_tests(dev: torch.device) -> str:
    if dev.type != "cuda":
        return "not run: no CUDA device"
    try:
        import pytest  # noqa: F401
    except ImportError:
        return "not run: pytest is not installed on this machine"
    # only the modules with CUDA tests: the others import what the GPU machine lacks (neo4j, pandas);
    # one that cannot be imported there is counted as an error, the rest still run
    files = [str(p) for p in sorted((ROOT / "tests").glob("test_*.py")) if "mark.gpu" in p.read_text()]
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                            "--continue-on-collection-errors", *files], capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "not finished within 300 s"
    tail = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
    if r.returncode in (0, 5):
        return tail
    if "failed" not in tail:  # collection errors only: a module needs a package this machine lacks
        return f"{tail} (the errors: test modules that cannot be imported here)"
    return f"FAILED (exit {r.returncode}): {tail}"


def propagation(dev: torch.device, repeats: int) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.json"
        try:
            r = subprocess.run([sys.executable, str(ROOT / "bench" / "propagation.py"), "--device", dev.type,
                                "--repeats", str(repeats), "--json", str(out)], capture_output=True, text=True,
                               timeout=600, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return ["propagation fwd+bwd", "-", "-", "not finished within 600 s", "", ""]
        if r.returncode != 0:
            return ["propagation fwd+bwd", "-", "-", f"failed: {r.stderr.strip().splitlines()[-1:]}", "", ""]
        p = json.loads(out.read_text())
    ours = next(v for k, v in p["methods"].items() if k.startswith("ours:"))
    bw = (f"{p['bandwidth_gbps']:,.0f} GB/s" + (f" = {100 * p['bandwidth_gbps'] / p['peak_gbps']:.0f}% of peak"
                                                if p.get("peak_gbps") else "")) if "bandwidth_gbps" in p else "-"
    return [f"propagation fwd+bwd ({p['nnz']:,} nonzeros, d={p['dim']})", "-", f"{ours['total_ms']:.1f} ms", bw, "",
            GOALS["propagation"]]


def train_row(name: str, model_name: str, entry: dict, s: snap.Snapshot, dev: torch.device, epochs: int) -> list:
    params = params_from_dict(model_name, entry["params"])
    tc = from_dict(TrainConfig, entry["train"], "plan.json train")
    torch.manual_seed(tc.seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    cls = get_model(model_name).cls
    data = TrainData.for_model(s, tc, cls, dev)
    graphs = data.graphs(cls.relations(data.meta), dev)
    model = build_model(model_name, params, data.meta).to(dev)
    times, steps, evals, m = time_training(model, data, graphs, tc, dev, epochs, tc.eval_batch_size)
    epoch_s = statistics.median(times[1:] if len(times) > 1 else times)
    goal = GOALS.get(f"epoch:{model_name}:{s.dataset}", "")
    return [f"{model_name} on {name} ({steps} steps/epoch, {m['users']:,} test users)",
            f"{epoch_s:.4f} s", f"{min(evals[1:]):.4f} s", f"HR@10 {m['hr@10']:.4f} after {epochs} epochs",
            _peak_mib(dev), " / ".join(g for g in (goal, GOALS["eval"]) if g)]


def ranking_row(bundle_dir: Path, spec: dict, dev: torch.device, n_batches: int) -> list:
    from ranking import throughput

    from graphrec.config import RankingConfig

    rc = from_dict(RankingConfig, spec["ranking"], "plan.json ranking")
    params = {spec["model"]: params_from_dict(spec["model"], spec["params"])}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    text = throughput([spec["model"]], rc, params, bundle_dir / spec["recall_run"], str(dev), n_batches, None,
                      snapshot=bundle_dir / spec["snapshot"])
    last = text.strip().splitlines()[-1]
    cells = [c.strip() for c in last.strip("|").split("|")]
    return [f"ranking: {spec['model']} training ({n_batches} batches)", "-", "-",
            f"{cells[2]} training rows/s, {cells[3]} inference rows/s", _peak_mib(dev), ""]


def run(bundle_dir: Path, device: str, epochs: int, repeats: int, out: Path | None) -> str:
    plan = json.loads((bundle_dir / "plan.json").read_text())
    dev = pick_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    rows = [["CUDA-marked tests", "-", "-", cuda_tests(dev), "", ""], propagation(dev, repeats)]
    for ds, entry in plan["datasets"].items():
        s = snap.read(bundle_dir / entry["snapshot"])
        for model_name, model_entry in entry["models"].items():
            rows.append(train_row(ds, model_name, model_entry, s, dev, epochs))
            print(f"  {rows[-1][0]}: epoch {rows[-1][1]}, eval {rows[-1][2]}", file=sys.stderr, flush=True)
    if plan.get("ranking"):
        rows.append(ranking_row(bundle_dir, plan["ranking"], dev, 20))
    text = (f"GPU check on {dev} ({name}), torch {torch.__version__}; medians; eval = every test user scored "
            f"against all items and ranked\n\n"
            + format_table(["what", "epoch", "full eval", "result", "peak CUDA MiB", "goal"], rows))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return text


def main() -> None:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    b = sub.add_parser("bundle")
    b.add_argument("--snapshots", nargs="+", type=Path,
                   default=[ROOT / ".graphrec/snapshots/beibei", ROOT / ".graphrec/snapshots/taobao_mbcgcn"])
    b.add_argument("--out", type=Path, default=ROOT / ".graphrec/gpu-bundle")
    b.add_argument("--models", default=",".join(MODELS))
    b.add_argument("--no-ranking", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--bundle", type=Path, default=ROOT / ".graphrec/gpu-bundle")
    r.add_argument("--device", default="auto")
    r.add_argument("--epochs", type=int, default=3)
    r.add_argument("--repeats", type=int, default=5, help="propagation repeats")
    r.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args()
    if args.action == "bundle":
        missing = [p for p in args.snapshots if not (p / "manifest.json").is_file()]
        if missing:
            raise SystemExit(f"no snapshot in {', '.join(map(str, missing))}: graphrec export --dataset NAME first")
        out = bundle(args.snapshots, args.out, tuple(args.models.split(",")), not args.no_ranking)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        where = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
        print(f"bundle {out} ({size:.1f} MiB). On the GPU machine, from the repository root:\n"
              f"  PYTHONPATH=. python bench/gpu.py run --bundle {where} --out $OUT/gpu.md")
    else:
        print(run(args.bundle, args.device, args.epochs, args.repeats, args.out))


if __name__ == "__main__":
    main()

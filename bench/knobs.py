"""Knobs that matter at scale, measured (issue 18): index dtype and value dtype of the propagation,
users per batch (steps per epoch) and propagations per step (layers), each with its effect on
time, memory and HR@10.

    python bench/knobs.py spmm [--device auto] [--repeats 7]
    python bench/knobs.py batch|layers [--snapshot .graphrec/snapshots/beibei] [--model hpmr] [--sizes V,V,...]
                                       [--epochs 10] [--threads N]

``spmm``: one propagation Y = Â E forward + backward (graphrec.adjacency.spmm, the Beibei view graph
of bench/propagation.py, d = 64) with int32 against int64 indices and float32 against bfloat16
values and embeddings; the methods alternate round by round; the matrix's bytes (both directions)
and the error of bfloat16 against float32 beside the times.

``batch``: the model trains ``--epochs`` epochs under ``fixed`` (every non-test purchase, test
evaluated once at the end) at each users-per-batch size, each in a fresh process (its peak RSS is
its own); median epoch, steps per epoch, peak RSS and test HR@10 / NDCG@10. The reference setting
stays the default; a larger batch is fewer, larger steps, so at a fixed epoch budget it also means
fewer updates.

``layers``: the same at each number of propagations per step (``models.MODEL.layers``, default
1,2,3,4): every step propagates the whole graph that many times forward and back, so a step's cost
is about linear in it, while the memory holds every layer's activations for the backward.
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
from typing import Callable

import torch
from propagation import load_edges, time_methods

from graphrec.adjacency import SparseAdj, csr_tensor, normalized_bipartite, spmm
from graphrec.malloc import keep_freed_memory
from graphrec.progress import format_table

from scale import build

ROOT = Path(__file__).resolve().parents[1]


def _with_indices(adj: SparseAdj, dtype: torch.dtype) -> SparseAdj:
    def cast(m: torch.Tensor) -> torch.Tensor:
        return csr_tensor(m.crow_indices().to(dtype), m.col_indices().to(dtype), m.values(), tuple(m.shape))

    return SparseAdj(cast(adj.matrix), cast(adj.transpose), adj.perm)


def _bytes(adj: SparseAdj) -> int:
    return sum(t.element_size() * t.numel() for m in (adj.matrix, adj.transpose)
               for t in (m.crow_indices(), m.col_indices(), m.values()))


def spmm_knobs(device: torch.device, repeats: int) -> str:
    u, i, n_u, n_i, source = load_edges(0)
    n = n_u + n_i
    variants = {}
    for values in (torch.float32, torch.bfloat16):
        base = normalized_bipartite(u, i, n_u, n_i, device=device, dtype=values)
        for index in (torch.int32, torch.int64):
            variants[(index, values)] = _with_indices(base, index)
    torch.manual_seed(0)
    E32 = torch.randn(n, 64, device=device)
    G32 = torch.randn(n, 64, device=device)
    rows, reference = [], spmm(variants[(torch.int32, torch.float32)], E32)
    for values in (torch.float32, torch.bfloat16):
        E = E32.to(values).requires_grad_(True)
        G = G32.to(values)
        steps = {}
        for index in (torch.int32, torch.int64):
            adj = variants[(index, values)]
            steps[str(index)] = lambda x, adj=adj: spmm(adj, x)
        try:
            timed = time_methods(steps, E, G, repeats, device)
        except RuntimeError as exc:  # a dtype the device's sparse kernels do not take
            timed = {k: f"unsupported: {str(exc).splitlines()[0][:80]}" for k in steps}
        for index in (torch.int32, torch.int64):
            t = timed[str(index)]
            adj = variants[(index, values)]
            if isinstance(t, str):
                rows.append([str(index).split(".")[1], str(values).split(".")[1], t, "", "",
                             f"{_bytes(adj) / 2**20:.0f}", ""])
                continue
            with torch.no_grad():
                err = (spmm(adj, E32.to(values)).float() - reference).norm() / reference.norm()
            rows.append([str(index).split(".")[1], str(values).split(".")[1], f"{t['forward_ms']:.1f}",
                         f"{t['backward_ms']:.1f}", f"{t['total_ms']:.1f}", f"{_bytes(adj) / 2**20:.0f}",
                         f"{float(err):.1e}"])
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return (f"## propagation knobs ({name}; {source}; {adj.nnz:,} nonzeros, d = 64; medians of {repeats})\n\n"
            + format_table(["index", "values", "forward ms", "backward ms", "total ms", "matrix MiB (both directions)",
                            "relative error vs float32"], rows))


#: knob -> (its column's name, the config overrides that set it to a value, run-directory tag)
KNOBS: dict[str, tuple[str, Callable[[str, int], list[str]], str]] = {
    "batch": ("users (pairs) per batch",
              lambda m, v: [f"train.batch_size={v}", f"model_train.{m}.batch_size={v}"], "b"),
    # one propagation = one sparse product over every relation the model reads, forward and backward
    "layers": ("propagations (layers) per step", lambda m, v: [f"models.{m}.layers={v}"], "layers"),
}


def knob_run(snapshot: str, model: str, knob: str, value: int, epochs: int, threads: int | None,
             run_dir: Path) -> dict:
    from graphrec import cli

    args = ["train", "--model", model, "--snapshot", snapshot, "--run", str(run_dir), "--device", "cpu",
            "--set", "train.protocol=fixed", "--set", f"train.epochs={epochs}"]
    for override in KNOBS[knob][1](model, value):
        args += ["--set", override]
    if threads:
        args += ["--threads", str(threads)]
    code = cli.main(args)
    if code:
        raise SystemExit(code)
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = _steps_per_epoch(snapshot, model, value if knob == "batch" else None)
    res = json.loads((run_dir / "results.json").read_text())["results"]["test"]
    return {"value": value, "steps": steps,
            "epoch_s": statistics.median(r["epoch_seconds"] for r in rows[1:] or rows),
            "epoch_min": min(r["epoch_seconds"] for r in rows), "epoch_max": max(r["epoch_seconds"] for r in rows),
            "hr@10": res["hr@10"], "ndcg@10": res["ndcg@10"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _preset(snapshot: str):
    from graphrec import snapshot as snap
    from graphrec.config import load_config

    s = snap.read(snapshot)
    preset = ROOT / "configs" / f"{s.dataset}.yaml"
    return s, load_config(preset if preset.exists() else None, [])


def _steps_per_epoch(snapshot: str, model: str, size: int | None) -> int:
    from dataclasses import replace

    from graphrec.config import train_config
    from graphrec.sampling import model_batches

    s, cfg = _preset(snapshot)
    tc = replace(train_config(cfg, model), protocol="fixed")
    tc = replace(tc, batch_size=size) if size is not None else tc
    data, _, net = build(s, cfg, tc, model, torch.device("cpu"))
    return sum(1 for _ in model_batches(net, data, tc.batch_size, tc.drop_last, torch.Generator().manual_seed(0),
                                        "cpu"))


def _reference(cfg, model: str, knob: str) -> int | None:
    """The preset's (``cfg``'s) own value of ``knob`` for ``model``."""
    from graphrec.config import model_params, train_config

    if knob == "batch":
        return train_config(cfg, model).batch_size
    return getattr(model_params(cfg, model), "layers", None)


def knob_table(snapshot: str, model: str, knob: str, values: list[int], epochs: int, threads: int | None,
               out: Path) -> str:
    """``knob`` at each of ``values``, every run in a fresh process (its peak RSS is its own) and
    kept in ``out`` (a finished one is read back, not trained again)."""
    name, _, tag = KNOBS[knob]
    s, cfg = _preset(snapshot)
    reference = _reference(cfg, model, knob)
    rows = []
    for value in values:
        run_dir = out / f"{model}-{tag}{value}"
        if (run_dir / "results.json").exists() and (run_dir / "knob.json").exists():
            r = json.loads((run_dir / "knob.json").read_text())
        else:
            cmd = [sys.executable, __file__, knob, "--one", str(value), "--snapshot", snapshot, "--model", model,
                   "--epochs", str(epochs), "--out", str(out)] + (["--threads", str(threads)] if threads else [])
            p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if p.returncode:
                sys.exit(f"{knob} {value} failed:\n{p.stderr[-3000:]}")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            (run_dir / "knob.json").write_text(json.dumps(r) + "\n")
        rows.append([f"{value}{' (reference)' if value == reference else ''}", r["steps"],
                     f"{r['epoch_s']:.1f} ({r['epoch_min']:.1f}–{r['epoch_max']:.1f})",
                     f"{r['peak_rss_mib'] / 1024:.2f}", f"{r['hr@10']:.4f}", f"{r['ndcg@10']:.4f}"])
        print(f"  {knob} {value}: {rows[-1]}", file=sys.stderr, flush=True)
    return (f"## {name}: {model} on {s.dataset}, {epochs} epochs under fixed, "
            f"cpu {threads or torch.get_num_threads()} thread(s)\n\n"
            + format_table([name, "steps/epoch", "epoch s, median (min–max)", "peak RSS GiB",
                            "test HR@10", "test NDCG@10"], rows))


def main() -> None:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["spmm", *KNOBS])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--snapshot", default=str(ROOT / ".graphrec/snapshots/beibei"))
    ap.add_argument("--model", default="hpmr")
    ap.add_argument("--sizes", help="the knob's values (default: batch 128,256,512,1024; layers 1,2,3,4)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", default=str(ROOT / "bench/out/knobs"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    if args.one:
        t = time.perf_counter()
        run_dir = out / f"{args.model}-{KNOBS[args.what][2]}{args.one}"
        r = knob_run(args.snapshot, args.model, args.what, args.one, args.epochs, args.threads, run_dir)
        print(json.dumps({**r, "seconds": time.perf_counter() - t}))
        return
    if args.what == "spmm":
        from graphrec.runs import pick_device

        text = spmm_knobs(pick_device(args.device), args.repeats)
    else:
        sizes = args.sizes or ("128,256,512,1024" if args.what == "batch" else "1,2,3,4")
        text = knob_table(args.snapshot, args.model, args.what, [int(x) for x in sizes.split(",")], args.epochs,
                          args.threads, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.what}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

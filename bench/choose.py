"""Which model should I use? Accuracy beside cost, per model and data set (issue 19): one table and
one plot for docs/results.md.

    python bench/choose.py [--datasets taobao_mbcgcn,beibei,taobao] [--models hpmr,ghcf,...]
                           [--steps 8] [--device auto] [--accuracy docs/accuracy.csv]
                           [--costs docs/costs.json] [--report-only]

Cost is measured here, each model in a fresh process on the data set's snapshot
(.graphrec/snapshots/DATASET) with its preset (configs/DATASET.yaml), as bench/scale.py measures it:
2 warm-up steps, ``--steps`` timed ones, the epoch as steps per epoch × the median step, one full
evaluation of every test user against every item, the process's peak RSS. Accuracy is read from
``--accuracy``, the figures of finished runs recorded in docs/results.md (each row names its protocol,
seeds and run), because a 100-epoch run of every model does not fit in one benchmark. A model
without a recorded figure is shown with its cost only. The costs are kept in ``--costs`` (committed,
each with the day and the device it was measured on), so ``--report-only`` rebuilds the table and the
plot from a clean checkout after a new accuracy figure, without measuring again. The row ``floor`` is the untrained
history-popularity ranking of bench/ideas.py.

Writes bench/out/choose.md, docs/costs.json (unless --report-only) and docs/img/which-model.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import date
from pathlib import Path

from graphrec.runs import write_atomic

from scale import measure

ROOT = Path(__file__).resolve().parents[1]
MODELS = "histgcn,hpmr,mule,ghcf,lightgcn_m,ehcf,lightgcn,nmtr"
DATASETS = "taobao_mbcgcn,beibei,taobao"
FLOOR = "floor"


def read_accuracy(path: Path) -> dict[tuple[str, str], dict]:
    """(dataset, model) -> the recorded row (protocol, hr@10, ndcg@10, seeds, run)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for line, r in enumerate(rows, start=2):
        key = (r["dataset"], r["model"])
        if key in out:
            sys.exit(f"{path}, line {line}: a second row for {key[1]} on {key[0]}; keep one per model and data set")
        try:
            out[key] = {**r, "hr@10": float(r["hr@10"]), "ndcg@10": float(r["ndcg@10"]), "seeds": int(r["seeds"])}
        except ValueError as e:
            sys.exit(f"{path}, line {line}: {e}; hr@10 and ndcg@10 are decimals, seeds an integer")
    return out


def table(datasets: list[str], models: list[str], cost: dict, acc: dict) -> str:
    from graphrec.progress import format_table

    header = ["data set", "model", "protocol", "HR@10", "NDCG@10", "seeds", "epoch s", "steps/epoch",
              "full eval s", "peak RSS GiB"]
    body = []
    for d in datasets:
        rows = []
        for m in [*models, FLOOR]:
            a, c = acc.get((d, m)), cost.get(f"{d}/{m}")
            if a is None and c is None:
                continue
            rows.append([d, m, a["protocol"] if a else "", f"{a['hr@10']:.4f}" if a else "no figure yet",
                         f"{a['ndcg@10']:.4f}" if a else "", str(a["seeds"]) if a and a["seeds"] else "",
                         f"{c['epoch_s']:.1f}" if c else "", str(c["steps_per_epoch"]) if c else "",
                         f"{c['eval_s']:.2f}" if c else "", f"{c['peak_rss_mib'] / 1024:.2f}" if c else ""])
        body += sorted(rows, key=lambda r: -float(r[3]) if r[3][0].isdigit() else 1.0)
    return format_table(header, body)


def plot(datasets: list[str], models: list[str], cost: dict, acc: dict, device: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    shown = [d for d in datasets if any((d, m) in acc and f"{d}/{m}" in cost for m in models)]
    if not shown:
        return
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 4.2), squeeze=False)
    for ax, d in zip(axes[0], shown):
        for m in models:
            a, c = acc.get((d, m)), cost.get(f"{d}/{m}")
            if a and c:
                ax.scatter(c["epoch_s"], a["hr@10"], s=30)
                ax.annotate(m, (c["epoch_s"], a["hr@10"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if (d, FLOOR) in acc:
            ax.axhline(acc[(d, FLOOR)]["hr@10"], ls="--", c="grey", lw=1)
            # x in axes fractions, y in data: the label stays inside whatever the log axis spans
            ax.text(0.02, acc[(d, FLOOR)]["hr@10"], "no training (history floor)", transform=ax.get_yaxis_transform(),
                    va="top", fontsize=7, color="grey")
        proto = sorted({acc[(d, m)]["protocol"] for m in models if (d, m) in acc})
        ax.set(xscale="log", xlabel=f"seconds per epoch ({device})", ylabel="test HR@10",
               title=f"{d} ({', '.join(proto)})")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # a narrow log span labels every minor tick
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=DATASETS)
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--accuracy", default=str(ROOT / "docs/accuracy.csv"))
    ap.add_argument("--out", default=str(ROOT / "bench/out/choose.md"))
    ap.add_argument("--plot", default=str(ROOT / "docs/img/which-model.png"))
    ap.add_argument("--costs", default=str(ROOT / "docs/costs.json"))
    ap.add_argument("--report-only", action="store_true", help="reuse the costs in --costs, measure nothing")
    args = ap.parse_args()
    datasets, models = args.datasets.split(","), args.models.split(",")
    acc = read_accuracy(Path(args.accuracy))
    cost_file = Path(args.costs)
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
    if args.report_only and not cost:
        sys.exit(f"no costs in {cost_file}: run bench/choose.py without --report-only to measure them")
    if not args.report_only:
        cost_file.parent.mkdir(parents=True, exist_ok=True)
        for d in datasets:
            snapshot = ROOT / ".graphrec/snapshots" / d
            if not (snapshot / "manifest.json").is_file():
                sys.exit(f"no snapshot {snapshot}: run `graphrec ingest --dataset {d} --config configs/{d}.yaml` "
                         f"and `graphrec export --dataset {d}` first")
            for m in models:
                cost[f"{d}/{m}"] = c = {**measure(snapshot, m, args.steps, d, args.device),
                                        "measured": str(date.today())}
                print(f"  {d} {m}: epoch {c['epoch_s']:.1f} s, eval {c['eval_s']:.2f} s, "
                      f"peak RSS {c['peak_rss_mib']:,.0f} MiB", file=sys.stderr, flush=True)
                write_atomic(cost_file, (json.dumps(cost, indent=1) + "\n").encode())
    device = next(iter(cost.values()))["device"] if cost else "not measured"
    text = (f"## Which model should I use? (cost on {device})\n\n" + table(datasets, models, cost, acc) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    plot(datasets, models, cost, acc, device, Path(args.plot))
    print(text)


if __name__ == "__main__":
    main()

"""The ideas table of graphrec's own model (issue 19): each idea is a named set of config overrides
on the dataset's preset, trained for every seed under one protocol and budget, then tabulated as
mean ± std beside the default and the best published number (Markdown + CSV).

    python bench/ideas.py --dataset taobao_mbcgcn [--protocol fixed|honest|paper] [--ideas NAME,...]
                          [--seeds 0,1,2] [--set K=V] [--device auto] [--threads N] [--report-only]

Runs live in bench/out/ideas/DATASET-PROTOCOL/IDEA-seedS (DATASET-PROTOCOL-set-DIGEST with `--set`
overrides, listed in its overrides.txt) and resume from their checkpoints; a
second process started with the same command takes the runs the first has not locked. The first
row is not trained: it ranks each user's own upstream items (viewed, carted, … and not yet bought)
first, by their number of training purchases, then every other item by the same count. It is the
floor a learned model must clear on these data (the test purchases are mostly such items).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import torch

from graphrec import snapshot as snap
from graphrec.config import PROTOCOLS, load_config, model_params, train_config
from graphrec.evaluate import evaluate_split
from graphrec.malloc import keep_freed_memory
from graphrec.progress import format_table
from graphrec.runs import RunBusy, clear_run, run_lock
from graphrec.sampling import TrainData
from graphrec.train import CHECKPOINT, fit

from published import best_published
from reproduce import make_out_dir

ROOT = Path(__file__).resolve().parents[1]
HEURISTIC = "history popularity (no training)"

#: name -> (model, config overrides, what it tests). The default first; every other idea changes one thing.
IDEAS: dict[str, tuple[str, list[str], str]] = {
    "histgcn": ("histgcn", [], "the preset: union graph, 2 layers, history terms with per-item conversion, "
                "item bias, uniform negatives, Adam 3e-3, L2 1e-3"),
    "lr 1e-3 and L2 1e-4": ("histgcn", ["model_train.histgcn.lr=0.001", "models.histgcn.reg=0.0001"],
                            "the first preset: LightGCN's Adam step and L2"),
    "lr 1e-3": ("histgcn", ["model_train.histgcn.lr=0.001"], "a 3× smaller Adam step"),
    "lr 1e-2": ("histgcn", ["model_train.histgcn.lr=0.01"], "a 3× larger Adam step"),
    "L2 1e-4": ("histgcn", ["models.histgcn.reg=0.0001"], "a 10× weaker L2 on the batch's embeddings"),
    "L2 1e-2": ("histgcn", ["models.histgcn.reg=0.01"], "a 10× stronger L2"),
    "hard negatives 0.5": ("histgcn", ["models.histgcn.hard_negatives=0.5"],
                           "half the negatives from the user's upstream, non-purchased items"),
    "hard negatives 0.25": ("histgcn", ["models.histgcn.hard_negatives=0.25"], "a quarter of them"),
    "hard negatives 0.5 on item terms only": ("histgcn", ["models.histgcn.hard_negatives=0.5",
                                                        "models.histgcn.hard_negative_scope=terms"],
                                            "half, drawn pairs training b, w, c only"),
    "no conversion term": ("histgcn", ["models.histgcn.conversion_bias=false"], "one w_a per behavior, no c_{a,i}"),
    "no item bias": ("histgcn", ["models.histgcn.item_bias=false"], "without b_i"),
    "no history terms": ("histgcn", ["models.histgcn.history=false", "models.histgcn.conversion_bias=false"],
                         "graph and item bias only: is the history learnt through embeddings?"),
    "purchase graph": ("histgcn", ["models.histgcn.graph=target"], "propagation over training purchases only"),
    "1 layer": ("histgcn", ["models.histgcn.layers=1"], "shallower"),
    "3 layers": ("histgcn", ["models.histgcn.layers=3"], "deeper"),
    "dim 128": ("histgcn", ["models.histgcn.dim=128"], "wider embeddings"),
}


class HistoryPopularity:
    """Scores 1e6·1[the user did an upstream behavior with the item] + the item's training purchases."""

    def __init__(self, data: TrainData):
        meta = data.meta
        items = data.edges[meta.target][1]
        self.pop = torch.bincount(torch.as_tensor(items, dtype=torch.long), minlength=meta.n_items).float()
        self.meta = meta

    def eval(self) -> None:
        pass

    def pair_scorer(self, graphs):
        return None

    def scorer(self, graphs):
        nu = self.meta.n_users

        def score(users: torch.Tensor) -> torch.Tensor:
            s = self.pop.expand(len(users), -1).clone()
            for a in self.meta.behaviors[:-1]:
                local, col, _ = graphs[a].row_entries(users)
                s[local, col - nu] = self.pop.index_select(0, col - nu) + 1e6
            return s

        return score


def heuristic(dataset: str, protocol: str, snapshot: Path, config: Path) -> dict:
    cfg = load_config(config, [f"train.protocol={protocol}"])
    tc = train_config(cfg, "histgcn")
    s = snap.read(snapshot)
    from graphrec.models import get_model

    data = TrainData.for_model(s, tc, get_model("histgcn").cls, "cpu")
    graphs = data.graphs(data.meta.behaviors[:-1], "cpu")
    m = evaluate_split(HistoryPopularity(data), graphs, data, "test", [10], 1024, torch.device("cpu"))
    return {"hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"]}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def train_all(dataset: str, protocol: str, ideas: list[str], seeds: list[int], device: str, out: Path,
              config: Path, snapshot: Path, overrides: list[str]) -> None:
    for seed in seeds:  # seed-major: every idea gets its first seed before any gets a second
        for name in ideas:
            model, sets, _ = IDEAS[name]
            run = out / f"{slug(name)}-seed{seed}"
            if (run / "results.json").is_file():
                continue
            cfg = load_config(config, [f"train.protocol={protocol}", f"train.seed={seed}", *overrides, *sets])
            try:
                with run_lock(run):
                    resume = (run / CHECKPOINT).is_file()
                    if not resume:
                        clear_run(run)
                    print(f"{name}, seed {seed}: {'resuming' if resume else 'training'} in {run}", file=sys.stderr)
                    fit(model, model_params(cfg, model), train_config(cfg, model), snapshot, run, device=device,
                        resume=resume)
            except RunBusy:
                print(f"{name}, seed {seed}: being trained by another process; next", file=sys.stderr)


def _mean_std(xs: list[float]) -> str:
    if not xs:
        return ""
    return f"{statistics.mean(xs):.4f}" + (f" ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else "")


def _verdict(name: str, hr: list[float], ref: list[float]) -> str:
    """What the row says: a removed part ("no …") is kept when removing it costs; a change is
    adopted when it beats the default on as many seeds, a candidate when on fewer, and neither
    when the difference is within twice the default's spread over seeds."""
    if not hr or not ref:
        return ""
    diff, spread = statistics.mean(hr) - statistics.mean(ref), 2 * (statistics.stdev(ref) if len(ref) > 1 else 0.0)
    if abs(diff) <= spread:
        return "no difference (within 2 std of the default)"
    better = diff > 0
    if name.startswith("no "):
        return "part dropped" if better else "part kept"
    if not better:
        return "dropped"
    return "adopted" if len(hr) >= len(ref) else f"candidate ({len(hr)} seed{'s' * (len(hr) > 1)})"


def report(dataset: str, protocol: str, ideas: list[str], out: Path, base: dict | None) -> str:
    results = {}
    for name in ideas:
        runs = sorted(out.glob(f"{slug(name)}-seed*/results.json"))
        res = [json.loads(p.read_text()) for p in runs]
        results[name] = ([r["results"]["test"]["hr@10"] for r in res], [r["results"]["test"]["ndcg@10"] for r in res],
                         [r["median_epoch_seconds"] for r in res])
    ref = statistics.mean(results["histgcn"][0]) if results.get("histgcn", ([],))[0] else None
    pub = best_published(dataset)
    rows = []
    if base:
        rows.append([HEURISTIC, "", f"{base['hr@10']:.4f}", f"{base['ndcg@10']:.4f}",
                     f"{100 * (base['hr@10'] / ref - 1):+.1f}%" if ref else "", "", "0", "baseline"])
    for name in ideas:
        hr, nd, sec = results[name]
        delta = f"{100 * (statistics.mean(hr) / ref - 1):+.1f}%" if hr and ref else ""
        verdict = "default" if name == "histgcn" else _verdict(name, hr, results["histgcn"][0])
        rows.append([name, IDEAS[name][2], _mean_std(hr), _mean_std(nd), delta if name != "histgcn" else "",
                     f"{statistics.median(sec):.1f} s" if sec else "", str(len(hr)), verdict])
    header = ["idea", "what it changes", "HR@10", "NDCG@10", "HR@10 vs default", "median epoch", "seeds", "verdict"]
    with open(out / "ideas.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    pub_line = (f"Best published on {dataset}: {pub[2]} {pub[0]:.4f} / {pub[1]:.4f} ({pub[3]}).\n\n" if pub else "")
    return (f"# Ideas for graphrec's own model on {dataset}, protocol `{protocol}`\n\n" + pub_line
            + format_table(header, rows) + "\n")


def main() -> None:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="taobao_mbcgcn", choices=["beibei", "taobao", "taobao_mbcgcn"])
    ap.add_argument("--protocol", choices=list(PROTOCOLS), help="default: the preset's train.protocol")
    ap.add_argument("--ideas", default=",".join(IDEAS), help="comma-separated names from IDEAS")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--snapshot", help="default .graphrec/snapshots/DATASET")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ideas = [i for i in args.ideas.split(",") if i]
    unknown = [i for i in ideas if i not in IDEAS]
    if unknown:
        raise SystemExit(f"unknown idea(s) {unknown}; choose from: {', '.join(IDEAS)}")
    if "histgcn" not in ideas:
        ideas.insert(0, "histgcn")  # every row is compared with the default
    config = ROOT / "configs" / f"{args.dataset}.yaml"
    protocol = args.protocol or load_config(config).train.protocol
    out = make_out_dir(ROOT / "bench/out/ideas", args.dataset, protocol, args.set)
    snapshot = Path(args.snapshot or ROOT / ".graphrec/snapshots" / args.dataset)
    if not args.report_only:
        train_all(args.dataset, protocol, ideas, [int(s) for s in args.seeds.split(",")], args.device, out, config,
                  snapshot, args.set)
    base_file = out / "history-popularity.json"
    if not base_file.is_file() and snapshot.is_dir():
        base_file.write_text(json.dumps(heuristic(args.dataset, protocol, snapshot, config)))
    base = json.loads(base_file.read_text()) if base_file.is_file() else None
    text = report(args.dataset, protocol, ideas, out, base)
    (out / "ideas.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Reproduce the published comparison with graphrec: train each model (and HPMR's ablations, and
HPMR without views), then write one table beside the published numbers (Markdown + CSV).

    python bench/reproduce.py --dataset beibei|taobao|taobao_mbcgcn [--models lightgcn,lightgcn_m,ehcf,ghcf,hpmr]
                              [--ablations] [--without-views] [--protocol paper|honest|fixed]
                              [--device auto] [--set K=V] [--report-only]

Runs live in bench/out/reproduce/DATASET-PROTOCOL/VARIANT (DATASET-PROTOCOL-set-DIGEST with
`--set` overrides, listed in its overrides.txt) and resume from their checkpoints, so a
long comparison survives a stopped process: run the same command again. Models run in the order
given (default: those that finish soonest first). The protocol defaults to the preset's
(configs/DATASET.yaml: `fixed` for taobao_mbcgcn, the published table's protocol). The snapshot is
.graphrec/snapshots/DATASET (`graphrec export --dataset DATASET` makes it). Beibei's and Taobao's
published numbers used a view log that ../shared/data does not have; taobao_mbcgcn's used the very
files graphrec trains on. Every table says which, and every row names its protocol.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

from graphrec.config import PROTOCOLS, load_config, model_params, train_config
from graphrec.malloc import keep_freed_memory
from graphrec.progress import format_table
from graphrec.runs import RunBusy, clear_run, run_lock
from graphrec.train import CHECKPOINT, METRICS_FILE, PROTOCOL_NOTES, fit

from published import ABLATIONS, CAVEATS, ablation_order_violations, published, views

ROOT = Path(__file__).resolve().parents[1]

ABLATION_FLAGS = {
    "w/o URR": dict(use_urr=False),
    "w/o URS": dict(use_urs=False),
    "w/o SIT": dict(use_sit=False),
    "w/o PTN": dict(use_sit=False, use_urr=False, use_urs=False),
}


WITHOUT_VIEWS = "hpmr without views"


def variants(models: list[str], ablations: bool, without_views: bool = False) -> list[tuple[str, str, dict]]:
    """(variant name, model, params overrides)."""
    out = [(m, m, {}) for m in models]
    if ablations:
        out += [(f"hpmr {name}", "hpmr", flags) for name, flags in ABLATION_FLAGS.items()]
    if without_views:
        out.append((WITHOUT_VIEWS, "hpmr", {}))
    return out


def without_views(cfg, params) -> tuple[dict, list[str]]:
    """The same HPMR on the cascade without its view behavior: the params' per-behavior lists lose
    the view entry, training keeps every other behavior (train.behaviors)."""
    order = list(cfg.ingest.behaviors or [])
    if "view" not in order:
        raise SystemExit(f"--without-views needs a preset whose ingest.behaviors has view; got {order}")
    k = order.index("view")
    drop = lambda v: None if v is None else tuple(x for j, x in enumerate(v) if j != k)  # noqa: E731
    rest = [b for b in order if b != "view"]
    return ({"coefficient": drop(params.coefficient), "neg_weight": drop(params.neg_weight)},
            [f"train.behaviors=[{','.join(rest)}]"])


def out_dir_name(dataset: str, protocol: str, overrides: list[str]) -> str:
    """DATASET-PROTOCOL, plus a digest of the ``--set`` overrides when there are any: runs made with
    other settings live apart, so a finished default run is never reported for an overridden one."""
    name = f"{dataset}-{protocol}"
    if not overrides:
        return name
    return f"{name}-set-{hashlib.sha256(chr(10).join(sorted(overrides)).encode()).hexdigest()[:8]}"


def make_out_dir(base: Path, dataset: str, protocol: str, overrides: list[str]) -> Path:
    """base/out_dir_name(...), created, with the overrides listed in its overrides.txt."""
    out = base / out_dir_name(dataset, protocol, overrides)
    out.mkdir(parents=True, exist_ok=True)
    if overrides:
        (out / "overrides.txt").write_text("".join(f"--set {kv}\n" for kv in overrides))
    return out


def run_dir_name(variant: str) -> str:
    return variant.replace("/", "").replace(" ", "-")


def train_all(dataset: str, protocol: str, todo: list[tuple[str, str, dict]], device: str, out: Path,
              config: Path, snapshot: Path, overrides: list[str]) -> None:
    base = [f"train.protocol={protocol}", *overrides]
    for variant, model, flags in todo:
        cfg = load_config(config, base)
        if variant == WITHOUT_VIEWS:
            flags, extra = without_views(cfg, model_params(cfg, model))
            cfg = load_config(config, base + extra)
        run = out / run_dir_name(variant)
        if (run / "results.json").is_file():
            print(f"{variant}: done ({run})", file=sys.stderr)
            continue
        params = dataclasses.replace(model_params(cfg, model), **flags)
        try:
            with run_lock(run):
                resume = (run / CHECKPOINT).is_file()
                if not resume:
                    clear_run(run)  # stopped before its first checkpoint: start over
                print(f"{variant}: {'resuming' if resume else 'training'} in {run}", file=sys.stderr)
                fit(model, params, train_config(cfg, model), snapshot, run, device=device, resume=resume)
        except RunBusy:
            # a second reproduce process takes the next variant, so two can share the list
            print(f"{variant}: being trained by another process ({run}); next", file=sys.stderr)


def run_status(run: Path) -> tuple[float | None, float | None, str, bool]:
    """(HR@10, NDCG@10, status, finished) of one run directory: a finished run's test result, else its
    best test evaluation so far (HR and NDCG of the same epoch), or how far a `fixed` run has got."""
    res_file = run / "results.json"
    if res_file.is_file():
        res = json.loads(res_file.read_text())
        test = res["results"]["test"]
        status = (f"epoch {res['best_epoch']} of {res['epochs_run']} (fixed budget)" if res.get("selection", "") is None
                  else f"best epoch {res['best_epoch']} of {res['epochs_run']}")
        return test["hr@10"], test["ndcg@10"], status, True
    evals = [e for e in _evaluations(run) if e["split"] == "test"]
    best = max(evals, key=lambda e: (e["hr@10"], e["epoch"]), default=None)
    if best:
        return (best["hr@10"], best["ndcg@10"],
                f"unfinished: best so far at epoch {best['epoch']} of {evals[-1]['epoch']}", False)
    done = _epochs_done(run)
    return None, None, (f"running: epoch {done}, no test evaluation before the end" if done else "not run"), False


def report(dataset: str, protocol: str, todo: list[tuple[str, str, dict]], out: Path) -> str:
    rows, ablations = [], []
    for variant, model, flags in todo:
        hr, ndcg, status, finished = run_status(out / run_dir_name(variant))
        if flags:
            ablations.append((variant.removeprefix("hpmr "), hr, status, finished))
            continue
        pub = published(dataset, model) if variant == model else None
        rows.append([variant, protocol, _f(hr), _f(ndcg), _f(pub[0] if pub else None), _f(pub[1] if pub else None),
                     _rel(hr, pub[0] if pub else None),
                     "ours without the view behavior" if variant == WITHOUT_VIEWS else views(dataset, model), status])
    headers = ["model", "protocol", "HR@10", "NDCG@10", "published HR@10", "published NDCG@10", "HR@10 rel. diff",
               "views in the published run", "run"]
    text = (f"## {dataset}, {protocol} protocol\n\n{CAVEATS.get(dataset, '')}; {PROTOCOL_NOTES[protocol]}.\n\n"
            + format_table(headers, rows))
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(headers)
        w.writerows(rows)
    if ablations:
        text += "\n\n### HPMR ablations (Table 4)\n\n" + ablation_report(dataset, out, ablations)
    out.with_suffix(".md").write_text(text + "\n")
    return text


def _epochs_done(run: Path) -> int:
    metrics = run / METRICS_FILE
    return sum(1 for x in metrics.read_text().splitlines() if x.strip()) if metrics.is_file() else 0


def _evaluations(run: Path) -> list[dict]:
    """The evaluation rows of a run's metrics (every split), in epoch order; none when it has not run."""
    metrics = run / METRICS_FILE
    return [json.loads(x) for x in metrics.read_text().splitlines() if '"split"' in x] if metrics.is_file() else []


def ablation_report(dataset: str, out: Path, ablations: list[tuple[str, float | None, str, bool]]) -> str:
    """The ablation table, (variant, best HR@10, status, finished) per variant, with full HPMR at the
    ablations' epoch budget first (its best test HR@10 among evaluations up to that epoch, from the
    hpmr run's metrics), and Table 4's ordering checked on the finished variants."""
    run_files = [out / run_dir_name(f"hpmr {v}") / "run.json" for v in ABLATION_FLAGS]
    budget = max((json.loads(f.read_text())["train"]["epochs"] for f in run_files if f.is_file()), default=None)
    within = [e for e in _evaluations(out / "hpmr")
              if e["split"] == "test" and (budget is None or e["epoch"] <= budget)]
    full = max((e["hr@10"] for e in within), default=None)
    upto = f" up to epoch {budget}" if budget else ""
    status = f"best test evaluation{upto} of the hpmr run" if within else f"no test evaluation{upto} in the hpmr run"
    hr_full, _, full_status, finished = run_status(out / "hpmr")
    hpmr_run = out / "hpmr" / "run.json"
    same_budget = budget is None or (hpmr_run.is_file()
                                     and json.loads(hpmr_run.read_text())["train"]["epochs"] == budget)
    if not within and finished and same_budget:
        # `fixed` and `honest` test once, at the end: the finished run under the same epoch budget
        full, status = hr_full, f"the hpmr run, {full_status}"
    pub = (published(dataset, "hpmr") or (None,))[0]
    rows = [["hpmr (full)", _f(full), _f(pub), _rel(full, pub), views(dataset, "hpmr"), status]]
    for variant, hr, variant_status, _ in ablations:
        vpub = ABLATIONS.get((dataset, variant))
        rows.append([f"hpmr {variant}", _f(hr), _f(vpub), _rel(hr, vpub), views(dataset, variant), variant_status])
    # only finished variants count: an unfinished run's best so far is not its result
    hr = {v: x for v, x, _, finished in ablations if finished and x is not None}
    if full is not None:
        hr["full"] = full
    missing = [v for v in ("full", *ABLATION_FLAGS) if v not in hr]  # not finished or not run
    broken = ablation_order_violations(hr)
    verdict = ("not checked: " + ", ".join(missing) + " missing" if missing else
               "holds" if not broken else "does not hold: " + "; ".join(broken))
    budget_note = f"Every variant trained for at most {budget} epochs. " if budget else ""
    return (budget_note + "Table 4's ordering HPMR > w/o URR > w/o URS, w/o SIT > w/o PTN: " + verdict + ".\n\n"
            + format_table(["variant", "HR@10", "published HR@10", "rel. diff", "views in the published run", "run"],
                           rows))


def _f(v) -> str:
    return "" if v is None else f"{v:.4f}"


def _rel(ours, pub) -> str:
    return "" if ours is None or not pub else f"{100 * (ours / pub - 1):+.1f}%"


def main() -> None:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="beibei", choices=["beibei", "taobao", "taobao_mbcgcn"])
    ap.add_argument("--models", default="lightgcn,lightgcn_m,ehcf,ghcf,hpmr")
    ap.add_argument("--ablations", action="store_true", help="also HPMR w/o URR, URS, SIT, PTN")
    ap.add_argument("--without-views", action="store_true",
                    help="also HPMR on the same cascade without its view behavior, same settings and budget")
    ap.add_argument("--protocol", choices=list(PROTOCOLS), help="default: the preset's train.protocol")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--snapshot", help="default .graphrec/snapshots/DATASET")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run, e.g. train.epochs=40 (a capped budget for ablations)")
    ap.add_argument("--report-only", action="store_true", help="tabulate what has finished; train nothing")
    args = ap.parse_args()
    config = ROOT / "configs" / f"{args.dataset}.yaml"
    protocol = args.protocol or load_config(config).train.protocol
    out = make_out_dir(ROOT / "bench/out/reproduce", args.dataset, protocol, args.set)
    todo = variants([m for m in args.models.split(",") if m], args.ablations, args.without_views)
    if not args.report_only:
        snapshot = Path(args.snapshot or ROOT / ".graphrec/snapshots" / args.dataset)
        train_all(args.dataset, protocol, todo, args.device, out, config, snapshot, args.set)
    print(report(args.dataset, protocol, todo, out))


if __name__ == "__main__":
    main()

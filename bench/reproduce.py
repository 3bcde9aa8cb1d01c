"""Reproduce the published comparison with graphrec: train each model (and HPMR's ablations), then
write one table beside the published numbers (Markdown + CSV).

    python bench/reproduce.py --dataset beibei [--models lightgcn,lightgcn_m,ehcf,ghcf,hpmr]
                              [--ablations] [--protocol paper|honest] [--device auto] [--set K=V] [--report-only]

Runs live in bench/out/reproduce/DATASET-PROTOCOL/VARIANT and resume from their checkpoints, so a
long comparison survives a stopped process: run the same command again. Models run in the order
given (default: those that finish soonest first). The snapshot is .graphrec/snapshots/DATASET
(`graphrec export --dataset DATASET` makes it). The published numbers used the view behavior,
which ../shared/data does not have; the tables say so on every row.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphrec.config import load_config, model_params, train_config  # noqa: E402
from graphrec.progress import format_table  # noqa: E402
from graphrec.published import (ABLATIONS, DATA_CAVEAT, EHCF_CORRECTED_BEIBEI, TABLE2,  # noqa: E402
                                ablation_order_violations, views)
from graphrec.train import CHECKPOINT, METRICS_FILE, fit  # noqa: E402

ABLATION_FLAGS = {
    "w/o URR": dict(use_urr=False),
    "w/o URS": dict(use_urs=False),
    "w/o SIT": dict(use_sit=False),
    "w/o PTN": dict(use_sit=False, use_urr=False, use_urs=False),
}


def variants(models: list[str], ablations: bool) -> list[tuple[str, str, dict]]:
    """(variant name, model, params overrides)."""
    out = [(m, m, {}) for m in models]
    if ablations:
        out += [(f"hpmr {name}", "hpmr", flags) for name, flags in ABLATION_FLAGS.items()]
    return out


def run_dir_name(variant: str) -> str:
    return variant.replace("/", "").replace(" ", "-")


def train_all(dataset: str, protocol: str, todo: list[tuple[str, str, dict]], device: str, out: Path,
              config: Path, snapshot: Path, overrides: list[str]) -> None:
    cfg = load_config(config, [f"train.protocol={protocol}", *overrides])
    for variant, model, flags in todo:
        run = out / run_dir_name(variant)
        if (run / "results.json").is_file():
            print(f"{variant}: done ({run})", file=sys.stderr)
            continue
        params = dataclasses.replace(model_params(cfg, model), **flags)
        resume = (run / CHECKPOINT).is_file()
        if not resume and run.exists():
            shutil.rmtree(run)  # stopped before its first checkpoint: start over
        print(f"{variant}: {'resuming' if resume else 'training'} in {run}", file=sys.stderr)
        fit(model, params, train_config(cfg, model), snapshot, run, device=device, resume=resume)


def report(dataset: str, protocol: str, todo: list[tuple[str, str, dict]], out: Path) -> str:
    rows, ablations = [], []
    for variant, model, flags in todo:
        res_file = out / run_dir_name(variant) / "results.json"
        finished = res_file.is_file()
        if finished:
            res = json.loads(res_file.read_text())
            test, status = res["results"]["test"], f"best epoch {res['best_epoch']} of {res['epochs_run']}"
            hr, ndcg = test["hr@10"], test["ndcg@10"]
        else:
            evals = [e for e in _evaluations(out / run_dir_name(variant)) if e["split"] == "test"]
            best = max(evals, key=lambda e: (e["hr@10"], e["epoch"]), default=None)
            hr, ndcg = (best["hr@10"], best["ndcg@10"]) if best else (None, None)
            status = (f"unfinished: best so far at epoch {best['epoch']} of {evals[-1]['epoch']}" if best else
                      "not run")
        if flags:
            ablations.append((variant.removeprefix("hpmr "), hr, status, finished))
            continue
        pub = TABLE2.get((dataset, model))
        if model == "ehcf" and dataset == "beibei":
            pub = EHCF_CORRECTED_BEIBEI  # the EHCF repository's own correction of the paper's row
        rows.append([model, _f(hr), _f(ndcg), _f(pub[0] if pub else None), _f(pub[1] if pub else None),
                     _rel(hr, pub[0] if pub else None), views(dataset, model), status])
    headers = ["model", "HR@10", "NDCG@10", "published HR@10", "published NDCG@10", "HR@10 rel. diff",
               "views in the published run", "run"]
    note = ("paper protocol: early stopping on the test split, as the reference code does; for comparison with "
            "published numbers only" if protocol == "paper" else
            "honest protocol: selection on a validation purchase, test evaluated once")
    text = f"## {dataset}, {protocol} protocol\n\n{DATA_CAVEAT}; {note}.\n\n" + format_table(headers, rows)
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(headers)
        w.writerows(rows)
    if ablations:
        text += "\n\n### HPMR ablations (Table 4)\n\n" + ablation_report(dataset, out, ablations)
    out.with_suffix(".md").write_text(text + "\n")
    return text


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
    pub = TABLE2.get((dataset, "hpmr"), (None,))[0]
    rows = [["hpmr (full)", _f(full), _f(pub), _rel(full, pub), views(dataset, "hpmr"), status]]
    for variant, hr, run_status, _ in ablations:
        vpub = ABLATIONS.get((dataset, variant))
        rows.append([f"hpmr {variant}", _f(hr), _f(vpub), _rel(hr, vpub), views(dataset, variant), run_status])
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="beibei", choices=["beibei", "taobao"])
    ap.add_argument("--models", default="lightgcn,lightgcn_m,ehcf,ghcf,hpmr")
    ap.add_argument("--ablations", action="store_true", help="also HPMR w/o URR, URS, SIT, PTN")
    ap.add_argument("--protocol", default="paper", choices=["paper", "honest"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--snapshot", help="default .graphrec/snapshots/DATASET")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run, e.g. train.epochs=40 (a capped budget for ablations)")
    ap.add_argument("--report-only", action="store_true", help="tabulate what has finished; train nothing")
    args = ap.parse_args()
    out = ROOT / "bench/out/reproduce" / f"{args.dataset}-{args.protocol}"
    out.mkdir(parents=True, exist_ok=True)
    todo = variants([m for m in args.models.split(",") if m], args.ablations)
    if not args.report_only:
        snapshot = Path(args.snapshot or ROOT / ".graphrec/snapshots" / args.dataset)
        train_all(args.dataset, args.protocol, todo, args.device, out, ROOT / "configs" / f"{args.dataset}.yaml",
                  snapshot, args.set)
    print(report(args.dataset, args.protocol, todo, out))


if __name__ == "__main__":
    main()

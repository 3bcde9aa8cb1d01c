"""The ranking stage on a recall run's candidates: every ranking model trained on the same lists,
one comparison table (Markdown + CSV) and the training throughput.

    python bench/ranking.py --recall-run DIR [--models mlp_single,shared_bottom,mmoe,ple,dmt,stan]
                            [--config configs/beibei.yaml] [--set ranking.epochs=5] [--device auto]

Runs live in bench/out/ranking/NAME/MODEL (NAME = the recall run's directory name); a model whose
run has results.json is not trained again. The table has AUC per task (grouped by user), RelaImpr
of the target AUC against the single-task MLP, and the final list's NDCG@K / MRR@K / P@K (the
retrieved candidates re-ordered by the ranker) next to the recall model's own order of the same
candidates. It ends with the seed papers' orderings checked on this data (MMoE ≥ Shared-Bottom,
DMT ≥ MMoE, STAN ≥ PLE on the target task's test AUC): reported, never tuned for.

    python bench/ranking.py --recall-run DIR --orders time,item

trains every model twice, on sequences in time order (most recent first) and in item-id order, into
bench/out/ranking/NAME/ORDER/MODEL, and adds a table of what the time order changes (a log with
timestamps, such as retailrocket; without timestamps both orders are the item order).

    python bench/ranking.py --recall-run DIR --throughput 30 [--device cuda] [--threads 2]

times 30 training steps and 30 inference batches per model instead (fresh models, no runs) and
writes throughput-DEVICE.md: the samples/s figure to compare between CPU and GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from graphrec.config import load_config, model_params
from graphrec.malloc import keep_freed_memory
from graphrec.progress import format_table
from graphrec.ranking.data import build
from graphrec.ranking.metrics import rela_impr, rela_impr_auc
from graphrec.ranking.train import fit_ranking, pick_device_name

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_MODELS = "mlp_single,shared_bottom,mmoe,ple,dmt,stan"
CLAIMS = [("mmoe", "shared_bottom"), ("dmt", "mmoe"), ("stan", "ple")]


def main() -> None:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recall-run", required=True, help="a recall run trained under the honest protocol")
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--config", help="YAML with ranking: and models: sections (default configs/DATASET.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", help="default bench/out/ranking/NAME")
    ap.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    ap.add_argument("--orders", help="comma-separated sequence orders to train and compare, e.g. time,item")
    ap.add_argument("--throughput", type=int, metavar="BATCHES", help="only time BATCHES training steps and the "
                    "inference of as many batches per model (fresh models, no training run)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    recall = Path(args.recall_run)
    dataset = json.loads((recall / "run.json").read_text())["dataset"]
    config = Path(args.config) if args.config else ROOT / "configs" / f"{dataset}.yaml"
    cfg = load_config(config if config.is_file() else None, args.set)
    rc = cfg.ranking
    out = Path(args.out) if args.out else ROOT / "bench/out/ranking" / recall.name
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device_name(args.device)
    models = [m for m in args.models.split(",") if m]
    if args.throughput:
        print(throughput(models, cfg.ranking, {m: model_params(cfg, m) for m in models}, recall, device,
                         args.throughput, out))
        return
    if args.orders:
        by_order = {}
        for order in args.orders.split(","):
            ocfg = load_config(config if config.is_file() else None, [*args.set, f"ranking.sequence_order={order}"])
            by_order[order] = train_models(models, ocfg, recall, out / order, device)
            print(report(by_order[order], rc.ks[-1], out / order, dataset, device))
        print(compare_orders(by_order, rc.ks[-1], out))
        return
    results = train_models(models, cfg, recall, out, device)
    print(report(results, rc.ks[-1], out, dataset, device))


def train_models(models: list[str], cfg, recall: Path, out: Path, device: str) -> dict:
    """Each ranking model trained on the recall run's lists (runs with results.json are reused)."""
    rc = cfg.ranking
    out.mkdir(parents=True, exist_ok=True)
    data = None
    results = {}
    for name in models:
        run = out / name
        if (run / "results.json").is_file():
            results[name] = json.loads((run / "results.json").read_text())
            print(f"{name}: done ({run})", file=sys.stderr)
            continue
        if run.exists():
            import shutil

            shutil.rmtree(run)  # an unfinished run: ranking runs are short, start it again
        if data is None:
            t0 = time.perf_counter()
            data, _ = build(recall, rc, device=device)
            print(f"ranking data built in {time.perf_counter() - t0:.1f} s: {json.dumps(data.info)}", file=sys.stderr)
        print(f"--- {name}", file=sys.stderr)
        results[name] = fit_ranking(name, model_params(cfg, name), rc, recall, run, device=device, data=data)
    return results


def compare_orders(by_order: dict[str, dict], k: int, out: Path) -> str:
    """Per model, the target's test AUC (retrieved) and the final NDCG@k under each sequence order."""
    orders = list(by_order)
    first = by_order[orders[0]]
    target = [key.removeprefix("auc_") for key in next(iter(first.values()))["test"]
              if key.startswith("auc_") and not key.endswith("_retrieved")][-1]
    headers = ["model", *[f"AUC {target} ({o})" for o in orders], *[f"NDCG@{k} ({o})" for o in orders]]
    if len(orders) == 2:
        headers.append(f"NDCG@{k} {orders[0]} − {orders[1]}")
    rows = []
    for name in first:
        res = [by_order[o][name]["test"] for o in orders]
        row = [name, *[f"{r[f'auc_{target}_retrieved']:.4f}" for r in res],
               *[f"{r[f'final_ndcg@{k}']:.4f}" for r in res]]
        if len(orders) == 2:
            row.append(f"{res[0][f'final_ndcg@{k}'] - res[1][f'final_ndcg@{k}']:+.4f}")
        rows.append(row)
    how = {o: next(iter(by_order[o].values()))["data"]["sequence_order"] for o in orders}
    text = ("## What the sequence order changes\n\n" + "".join(f"- {o}: {how[o]}\n" for o in orders) + "\n"
            + format_table(headers, rows))
    (out / "orders.md").write_text(text + "\n")
    return text


def throughput(models: list[str], rc, params: dict, recall: Path, device: str, n_batches: int, out: Path | None,
               snapshot: Path | None = None) -> str:
    """Training steps and inference per second on the same batches for every model (``params``:
    model name -> its params; ``snapshot``: where the recall run's snapshot is, if it moved)."""
    import torch

    from graphrec.models import build_model

    data, _ = build(recall, rc, device=device, snapshot_path=snapshot)
    gen = torch.Generator().manual_seed(rc.seed)
    batches = [b.to(device) for b in data.batches("train", rc.users_per_batch, gen)[:n_batches + 3]]
    rows = sum(b.n_rows for b in batches[3:])
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    table = []
    for name in models:
        torch.manual_seed(rc.seed)
        model = build_model(name, params[name], data.meta).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=rc.lr)
        model.train()
        for i, b in enumerate(batches):
            if i == 3:  # warm-up steps excluded
                sync()
                t0 = time.perf_counter()
            loss, _ = model.loss(b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        train_s = time.perf_counter() - t0
        with torch.no_grad():
            t1 = time.perf_counter()
            for b in batches[3:]:
                model.predict(b)
            sync()
        infer_s = time.perf_counter() - t1
        n_params = sum(p.numel() for p in model.parameters())
        table.append([name, f"{n_params:,}", f"{rows / train_s:,.0f}", f"{rows / infer_s:,.0f}"])
        print(f"{name}: {rows / train_s:,.0f} training rows/s, {rows / infer_s:,.0f} inference rows/s",
              file=sys.stderr)
    threads = torch.get_num_threads() if device == "cpu" else "-"
    text = (f"Ranking throughput on {device} ({threads} threads), {n_batches} batches of {rc.users_per_batch} users' "
            f"lists ({rows / n_batches:,.0f} rows per batch) after 3 warm-up steps\n\n"
            + format_table(["model", "parameters", "training rows/s", "inference rows/s"], table))
    if out is not None:
        (out / f"throughput-{device.split(':')[0]}.md").write_text(text + "\n")
    return text


def _rows_per_s(run: Path) -> float:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return sorted(r["rows_per_second"] for r in rows)[len(rows) // 2]


def report(results: dict, k: int, out: Path, dataset: str, device: str) -> str:
    any_res = next(iter(results.values()))
    tasks = [key.removeprefix("auc_") for key in any_res["test"] if key.startswith("auc_") and
             not key.endswith("_retrieved")]
    target = tasks[-1]
    base = results.get("mlp_single", {}).get("test")
    headers = ["model", *[f"AUC {t} (lists)" for t in tasks], *[f"AUC {t} (retrieved)" for t in tasks],
               f"RelaImpr AUC {target}", f"NDCG@{k} final", f"RelaImpr NDCG@{k}", f"MRR@{k} final", f"P@{k} final",
               "best epoch", "train rows/s"]
    rows = []
    for name, res in results.items():
        m = res["test"]
        ri_auc = (f"{100 * rela_impr_auc(m[f'auc_{target}_retrieved'], base[f'auc_{target}_retrieved']):+.2f}%"
                  if base else "")
        ri_ndcg = f"{100 * rela_impr(m[f'final_ndcg@{k}'], base[f'final_ndcg@{k}']):+.2f}%" if base else ""
        rows.append([name, *[f"{m[f'auc_{t}']:.4f}" for t in tasks], *[f"{m[f'auc_{t}_retrieved']:.4f}" for t in tasks],
                     ri_auc, f"{m[f'final_ndcg@{k}']:.4f}", ri_ndcg, f"{m[f'final_mrr@{k}']:.4f}",
                     f"{m[f'final_precision@{k}']:.4f}", res["best_epoch"], f"{_rows_per_s(out / name):,.0f}"])
    rows.append([f"recall order ({any_res['data']['recall_model']})", *[""] * (2 * len(tasks) + 1),
                 f"{any_res['test'][f'recall_ndcg@{k}']:.4f}", "", f"{any_res['test'][f'recall_mrr@{k}']:.4f}",
                 f"{any_res['test'][f'recall_precision@{k}']:.4f}", "", ""])
    with open(out / "ranking.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(headers)
        w.writerows(rows)
    info = any_res["data"]
    claims = []
    for a, b in CLAIMS:
        if a in results and b in results:
            x, y = (results[a]["test"][f"auc_{target}_retrieved"], results[b]["test"][f"auc_{target}_retrieved"])
            claims.append(f"- {a} ≥ {b} on test AUC {target} (retrieved): {x:.4f} vs {y:.4f} → "
                          f"{'holds' if x >= y else 'does NOT hold'}")
    final = {n: r["test"][f"final_ndcg@{k}"] for n, r in results.items()}
    recall_ndcg = any_res["test"][f"recall_ndcg@{k}"]
    best = max(final, key=final.get)
    feature = ("the recall score (standardized per list) is a feature" if info.get("recall_score_feature", True)
               else "the recall score is not a feature")
    text = (f"## Ranking stage on {dataset}: top-{info['candidates']} candidates of {info['recall_model']} "
            f"({info['recall_run']})\n\n"
            f"Test lists of {info['users']['test']:,} users ({info['rows']['test']:,} rows); the test purchase was "
            f"retrieved for {100 * info['target_retrieved']['test']:.1f}% of them and appended to the list otherwise. "
            "'AUC (lists)' is grouped by user over whole lists, appended purchases included; 'AUC (retrieved)' over "
            "the retrieved candidates only (users whose list has both classes); 'final' list metrics re-order the "
            f"retrieved candidates. Models train on the retrieved candidates; {feature}. "
            f"Sequences: {info['sequence_order']}. Device: {device}. Tasks: {', '.join(tasks)}"
            + ("" if "view" in tasks else " (the view behavior is absent from this data)") + ".\n\n"
            + format_table(headers, rows) +
            f"\n\nDoes the ranking stage improve the final list? Recall order NDCG@{k} {recall_ndcg:.4f}; best ranker "
            f"{best} {final[best]:.4f} ({'better' if final[best] > recall_ndcg else 'not better'}).\n\n"
            "Seed papers' orderings on this data:\n" + "\n".join(claims))
    (out / "ranking.md").write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()

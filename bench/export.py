"""Export benchmark: Neo4j → snapshot → validated DGL heterograph, timed per phase.

    python bench/export.py [--dataset beibei] [--data FOLDER] [--home .graphrec]

Uses the managed server in --home (started if needed). The dataset is ingested first when that
home does not hold it yet (not timed). Then the timed part: export (ids + every relationship
streamed out + snapshot written with hashes), snapshot read with hash verification, and the DGL
heterograph build with validation. Target on the 2-core machine: Beibei end to end ≤ 60 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from graphrec import datasets, graph, snapshot
from graphrec.config import load_config
from graphrec.export import export_dataset
from graphrec.ingest import load
from graphrec.ingest.readers import read_source
from graphrec.neo4j import connection, server
from graphrec.progress import Progress, format_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="beibei")
    ap.add_argument("--data", help="source folder (default: the registered data set, found or fetched)")
    ap.add_argument("--home", default=str(ROOT / ".graphrec"))
    ap.add_argument("--out", default=str(ROOT / "bench/out/export.md"))
    args = ap.parse_args()
    home = Path(args.home)
    server.start(home, log=lambda s: None)
    driver = connection.connect(connection.resolve(home=home), log=lambda s: None)
    try:
        state = load.dataset_state(driver, args.dataset)
        if state is None or state.get("status") != "complete":
            source = datasets.resolve(args.dataset, args.data, log=lambda s: print(s, file=sys.stderr))
            cfg_path = ROOT / "configs" / f"{args.dataset}.yaml"
            cfg = load_config(cfg_path if cfg_path.exists() else None, []).ingest
            print(f"ingesting {args.dataset} from {source} first (not timed) ...", file=sys.stderr)
            data = read_source(source, cfg.format, cfg.behaviors, cfg.columns)
            load.ingest(driver, load.prepare(data, args.dataset, cfg.split), progress=Progress(every=30.0))
        out = Path(tempfile.mkdtemp(prefix="graphrec-bench-export-")) / args.dataset
        progress = Progress(every=30.0)
        t0 = time.perf_counter()
        report = export_dataset(driver, args.dataset, out, progress=progress)
        t_export = time.perf_counter() - t0
    finally:
        driver.close()
    t1 = time.perf_counter()
    s = snapshot.read(out)
    t_read = time.perf_counter() - t1
    t2 = time.perf_counter()
    data = graph.load(s)
    t_graph = time.perf_counter() - t2
    total = time.perf_counter() - t0
    edges = sum(len(r) for r in s.relations.values())
    rows = [[p.name, p.rows, round(p.seconds, 2), round(p.rate)] for p in progress.results]
    rows += [["export total (incl. checks)", edges, round(t_export, 2), round(edges / t_export)],
             ["read snapshot + sha256 + validate", edges, round(t_read, 2), round(edges / t_read)],
             ["DGL heterograph build + validate", data.graph.num_edges(), round(t_graph, 2),
              round(data.graph.num_edges() / t_graph)],
             ["TOTAL Neo4j → heterograph", edges, round(total, 2), round(edges / total)]]
    files = sorted(out.iterdir())
    text = (f"## export benchmark: {args.dataset} ({s.n_users:,} users, {s.n_items:,} items)\n\n"
            + format_table(["phase", "rows", "seconds", "rows/s"], rows)
            + "\n\nsnapshot: " + ", ".join(f"{f.name} {f.stat().st_size / 2**20:.2f} MiB" for f in files)
            + f"\nsnapshot total: {report.bytes / 2**20:.2f} MiB\n")
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

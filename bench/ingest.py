"""Ingest benchmark: full Beibei (bundled) and a synthetic log of Beibei's published size.

    python bench/ingest.py [--only beibei|synthetic] [--home DIR] [--out bench/out/ingest.md]

Runs the real CLI path (read → validate → split → Neo4j, derived relations included) against the
managed server, from a fresh data directory, and prints per-phase rows/s, wall time and store size.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graphrec import datasets
from graphrec.config import SplitConfig
from graphrec.ingest import load
from graphrec.ingest.readers import read_source
from graphrec.neo4j import connection, server
from graphrec.progress import Progress, format_table

from synthetic import BEIBEI_SIZE, cascade_log

ROOT = Path(__file__).resolve().parents[1]


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


def run_one(name: str, source: Path, behaviors, home: Path) -> list[list]:
    t0 = time.perf_counter()
    data = read_source(source, behaviors=behaviors)
    prepared = load.prepare(data, name, SplitConfig())
    t_read = time.perf_counter() - t0
    driver = connection.connect(connection.resolve(home=home), log=lambda s: None)
    t1 = time.perf_counter()
    progress = Progress(every=30.0)
    report = load.ingest(driver, prepared, replace=True, progress=progress)
    t_db = time.perf_counter() - t1
    driver.close()
    wall = time.perf_counter() - t0
    rels = sum(v for k, v in report.counts.items() if k not in ("users", "items") and ":" not in k)
    rows = [[name, "read + validate + split", data.raw_rows, round(t_read, 1), round(data.raw_rows / t_read)]]
    rows += [[name, p.name, p.rows, round(p.seconds, 1), round(p.rate)] for p in report.phases]
    rows += [[name, "verify + finalize", rels, round(t_db - sum(p.seconds for p in report.phases), 1), ""]]
    rows += [[name, "TOTAL wall (excl. server start)", rels, round(wall, 1), round(rels / wall)]]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["beibei", "synthetic"])
    ap.add_argument("--data", help="Beibei's folder (default: the registered data set, found or fetched)")
    ap.add_argument("--home", help="graphrec home for the managed server (default: a fresh temp dir)")
    ap.add_argument("--out", default=str(ROOT / "bench/out/ingest.md"))
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="graphrec-bench-"))
    t = time.perf_counter()
    server.start(home, log=lambda s: None)
    start_s = time.perf_counter() - t
    rows: list[list] = []
    try:
        if args.only in (None, "beibei"):
            rows += run_one("beibei", datasets.resolve("beibei", args.data, log=lambda s: print(s, file=sys.stderr)),
                            None, home)
        if args.only in (None, "synthetic"):
            tmp = Path(tempfile.mkdtemp(prefix="graphrec-synth-"))
            csv = tmp / "beibei_size.csv"
            t = time.perf_counter()
            cascade_log(**BEIBEI_SIZE, seed=0).to_csv(csv, index=False)
            print(f"synthetic log written in {time.perf_counter() - t:.1f} s ({csv.stat().st_size / 2**20:.0f} MiB)",
                  file=sys.stderr)
            rows += run_one("synthetic-beibei-size", csv, ["view", "cart", "buy"], home)
            shutil.rmtree(tmp)
    finally:
        server.stop(home)
        data_dir = home / "neo4j" / "data"
        store, txlogs = du(data_dir / "data"), du(data_dir / "data" / "transactions")
    table = format_table(["dataset", "phase", "rows", "seconds", "rows/s"], rows)
    text = (f"{table}\n\nserver start: {start_s:.1f} s; on disk after these datasets: {store / 2**20:,.0f} MiB, of "
            f"which {(store - txlogs) / 2**20:,.0f} MiB store files and {txlogs / 2**20:,.0f} MiB transaction logs\n")
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

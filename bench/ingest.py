"""Ingest benchmark: full Beibei (bundled) and a synthetic log (``graphrec synth``) of any size.

    python bench/ingest.py [--only beibei|synthetic] [--events 3.36M] [--like taobao_mbcgcn]
                           [--bulk] [--home DIR] [--out bench/out/ingest.md]

The synthetic log defaults to Beibei's published size (2.41M views + 642,622 carts + 304,576 buys,
HPMR / GHCF Table 1) shaped like taobao_mbcgcn, the real view → cart → buy log of the same shop.

Runs the real CLI path (read → validate → split → Neo4j, derived relations included) against the
managed server, from a fresh data directory, and prints per-phase rows/s, wall time and store size.
``--bulk`` takes the offline-importer path instead (``graphrec ingest --bulk``), each data set in a
home of its own (a bulk load rebuilds the whole store).
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
from graphrec.ingest import bulk, load
from graphrec.ingest.readers import read_source
from graphrec.neo4j import connection, server
from graphrec.progress import Progress, format_table
from graphrec.synth import parse_count, synthesize

#: Beibei's published interactions (HPMR / GHCF Table 1: views, carts, buys).
BEIBEI_EVENTS = 2_412_586 + 642_622 + 304_576

ROOT = Path(__file__).resolve().parents[1]


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


def run_one(name: str, source: Path, behaviors, home: Path, use_bulk: bool = False) -> list[list]:
    t0 = time.perf_counter()
    data = read_source(source, behaviors=behaviors)
    prepared = load.prepare(data, name, SplitConfig())
    t_read = time.perf_counter() - t0
    t1 = time.perf_counter()
    progress = Progress(every=30.0)
    if use_bulk:
        report = bulk.bulk_ingest(prepared, home / name, replace=True, progress=progress)
        server.stop(home / name)
    else:
        driver = connection.connect(connection.resolve(home=home), log=lambda s: None)
        t1 = time.perf_counter()
        report = load.ingest(driver, prepared, replace=True, progress=progress)
        driver.close()
    t_db = time.perf_counter() - t1
    wall = time.perf_counter() - t0
    rels = sum(v for k, v in report.counts.items() if k not in ("users", "items") and ":" not in k)
    rows = [[name, "read + validate + split", data.raw_rows, round(t_read, 1), round(data.raw_rows / t_read)]]
    rows += [[name, p.name, p.rows, round(p.seconds, 1), round(p.rate)] for p in report.phases]
    rows += [[name, "server restarts + finalize" if use_bulk else "verify + finalize", rels,
              round(t_db - sum(p.seconds for p in report.phases), 1), ""]]
    rows += [[name, "TOTAL wall (excl. server start)", rels, round(wall, 1), round(rels / wall)]]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["beibei", "synthetic"])
    ap.add_argument("--data", help="Beibei's folder (default: the registered data set, found or fetched)")
    ap.add_argument("--events", default=str(BEIBEI_EVENTS), help="rows of the synthetic log (e.g. 1M, 10M)")
    ap.add_argument("--like", default="taobao_mbcgcn", help="the real log the synthetic one is shaped like")
    ap.add_argument("--bulk", action="store_true", help="the offline-importer path (graphrec ingest --bulk)")
    ap.add_argument("--home", help="graphrec home for the managed server (default: a fresh temp dir)")
    ap.add_argument("--out", default=str(ROOT / "bench/out/ingest.md"))
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="graphrec-bench-"))
    t = time.perf_counter()
    if not args.bulk:
        server.start(home, log=lambda s: None)
    start_s = time.perf_counter() - t
    rows: list[list] = []
    try:
        if args.only in (None, "beibei"):
            rows += run_one("beibei", datasets.resolve("beibei", args.data, log=lambda s: print(s, file=sys.stderr)),
                            None, home, args.bulk)
        if args.only in (None, "synthetic"):
            tmp = Path(tempfile.mkdtemp(prefix="graphrec-synth-"))
            events = parse_count(args.events)
            _, r = synthesize(args.like, events, tmp / "log.parquet", seed=0)
            print(f"synthetic log of {r.rows:,} rows shaped like {args.like} written in {r.seconds:.1f} s "
                  f"({r.path.stat().st_size / 2**20:.0f} MiB)", file=sys.stderr)
            rows += run_one(f"synthetic-{args.events}-like-{args.like}", r.path, None, home, args.bulk)
            shutil.rmtree(tmp)
    finally:
        server.stop(home)
        homes = [h for h in home.iterdir() if (h / "neo4j").is_dir()] if args.bulk else [home]
        store = sum(du(h / "neo4j/data/data") for h in homes)
        txlogs = sum(du(h / "neo4j/data/data/transactions") for h in homes)
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

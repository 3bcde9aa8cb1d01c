"""Bulk ingest into the managed server with Neo4j's offline importer (``neo4j-admin database import full``).

The Cypher path (:mod:`graphrec.ingest.load`) writes through Bolt at 20–35k relationships/s; the
importer writes store files directly at several times that. Community allows it only into a whole,
empty database with the server stopped, so a bulk ingest rebuilds the managed server's ``neo4j``
database, and only when that database holds nothing but this dataset (or nothing at all).

Steps, each one safe to kill: the derived relations M_up ⊙ (J − M_down) are computed from the
prepared edges (the same definition as the Cypher query, checked in Cypher afterwards); node and
relationship CSV files and the import run in a staging folder beside the store; the server stops;
the new store replaces the old by renames that a crash leaves recoverable
(:func:`graphrec.neo4j.server.recover_store_swap` finishes or undoes them before any start); the
server starts; the constraints are created; the database's counts are checked against the input's
and each derived relation is recounted in Cypher from the base relations; only then is the
dataset marked complete. An interrupted bulk ingest leaves either the old store untouched or the
new one with status ``loading``, and running the same command again redoes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from graphrec.errors import UserError, WorkFailed
from graphrec.ingest import load
from graphrec.neo4j import connection, server
from graphrec.progress import Progress
from graphrec.schema import DATASET_LABEL, ITEM_LABEL, SCHEMA_VERSION, USER_LABEL, cypher, rel_type

# The Cypher definition of a derived relation (the Cypher path's CREATE_DERIVED), evaluated read-only
# for a sample of users: the users whose imported derived items differ from what it gives.
SAMPLE_DEFINITION = """
UNWIND $users AS uid
MATCH (u:User {dataset: $dataset, id: uid})
CALL {
  WITH u
  MATCH (u)-[:${UP}]->(i)
  WHERE NOT EXISTS { MATCH (u)-[d:${DOWN}]->(i) WHERE coalesce(d.split, 'train') = 'train' }
  RETURN collect(i.id) AS want
}
CALL {
  WITH u
  MATCH (u)-[:${DERIVED}]->(i)
  RETURN collect(i.id) AS got
}
WITH uid, want, got WHERE size(want) <> size(got) OR any(x IN want WHERE NOT x IN got)
RETURN collect(uid) AS bad
"""
VERIFY_SAMPLE_USERS = 2000

OTHER_CONTENT = """
OPTIONAL MATCH (d:Dataset) WHERE d.name <> $dataset
WITH collect(DISTINCT d.name)[..5] AS others
OPTIONAL MATCH (n) WHERE NOT n:Dataset AND coalesce(n.dataset, '') <> $dataset
WITH others, n LIMIT 1
RETURN others, n IS NOT NULL AS foreign
"""


class BulkRefused(UserError, RuntimeError):
    """The managed database holds more than this dataset, which a bulk ingest would replace."""


class ImportFailed(WorkFailed, RuntimeError):
    """neo4j-admin's importer stopped with an error; the store was not touched."""


def _codes(values: pd.Series, keys: pa.Array) -> np.ndarray:
    """Positions of ``values`` in ``keys`` (Arrow's hash lookup: 13× pandas' get_indexer on strings)."""
    return pc.index_in(pa.array(values), value_set=keys).to_numpy(zero_copy_only=False)


def derive(up_u: np.ndarray, up_i: np.ndarray, down_u: np.ndarray, down_i: np.ndarray, n_items: int) -> np.ndarray:
    """Mask over the upstream edges (integer codes) that have no downstream edge: M_up ⊙ (J − M_down)."""
    n = np.int64(n_items)
    return ~np.isin(up_u.astype(np.int64) * n + up_i, down_u.astype(np.int64) * n + down_i)


def derived_edges(prepared: load.PreparedData, codes: dict[str, tuple[np.ndarray, np.ndarray]], rel,
                  n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One derived relation's edges as (user code, item code) and, where its downstream is the target
    with held-out purchases, each edge's ``holdout`` (the split of the held-out purchase that would
    otherwise have removed it; None elsewhere). ``codes``: each behavior's integer codes."""
    up_u, up_i = codes[rel.upstream]
    down = prepared.edges[rel.downstream]
    train = (down["split"] == "train").to_numpy() if "split" in down else np.ones(len(down), bool)
    du, di = codes[rel.downstream]
    keep = derive(up_u, up_i, du[train], di[train], n_items)
    ku, ki = up_u[keep], up_i[keep]
    if rel.downstream != prepared.behaviors.target or train.all():
        return ku, ki, None
    held = ~train
    at = pd.Index(du[held].astype(np.int64) * n_items + di[held]).get_indexer(ku.astype(np.int64) * n_items + ki)
    if not (at >= 0).any():
        return ku, ki, None
    split = down["split"].to_numpy()[held]
    return ku, ki, np.where(at >= 0, split[np.maximum(at, 0)], None)


def snapshot_of(prepared: load.PreparedData, source: dict | None = None):
    """The snapshot ``graphrec export`` would write after ingesting ``prepared``, built without a
    database: the same node ids (graphrec.snapshot.sort_keys), relations, splits, holdouts, ``ts``
    and ``count`` columns, and snapshot.build's checks. For graphs made where no Neo4j runs (the
    synthetic cost curve, a GPU host); the graph of record stays the one in Neo4j."""
    from graphrec import snapshot as snap

    users, items = snap.sort_keys(prepared.users.tolist()), snap.sort_keys(prepared.items.tolist())
    user_keys, item_keys = pa.array(users), pa.array(items)
    codes = {b: (_codes(e["user"], user_keys), _codes(e["item"], item_keys)) for b, e in prepared.edges.items()}
    edges: dict[str, dict[str, np.ndarray]] = {}
    for b, e in prepared.edges.items():
        cols = {"user": codes[b][0], "item": codes[b][1]}
        if "split" in e:
            cols["split"] = e["split"].map(snap.SPLIT_CODES).to_numpy(np.int8)
        if "ts" in e and e["ts"].notna().any():
            cols["ts"] = e["ts"].astype("Int64").to_numpy(np.int64, na_value=snap.NO_TS)
        count = e["count"].to_numpy()
        if (count > 1).any():
            cols["count"] = count.astype(np.int32)
        edges[b] = cols
    for rel in prepared.behaviors.derived:
        ku, ki, holdout = derived_edges(prepared, codes, rel, len(items))
        edges[rel.name] = {"user": ku, "item": ki}
        if rel.downstream == prepared.behaviors.target:
            edges[rel.name]["holdout"] = (np.full(len(ku), snap.NO_HOLDOUT, np.int8) if holdout is None else
                                          pd.Series(holdout).map(snap.SPLIT_CODES).fillna(snap.NO_HOLDOUT)
                                          .to_numpy(np.int8))
    return snap.build(prepared.dataset, prepared.behaviors, users, items, edges,
                      source={"dataset_fingerprint": prepared.fingerprint, "split_method": prepared.split_method,
                              "built": "from the log, without a database", **(source or {})})


def _write_csv(table: pa.Table, path: Path) -> None:
    pacsv.write_csv(table, path, pacsv.WriteOptions(include_header=True, quoting_style="needed"))


def write_import_files(prepared: load.PreparedData, folder: Path, progress: Progress) -> tuple[list[str], int]:
    """Node and relationship CSVs for the importer; returns its ``--nodes``/``--relationships``
    arguments and the number of relationships written."""
    folder.mkdir(parents=True, exist_ok=True)
    ds, users, items = prepared.dataset, prepared.users, prepared.items
    n_u, n_i = len(users), len(items)
    args: list[str] = []
    with progress.phase("bulk files: nodes", total=n_u + n_i + 1) as ph:
        for label, keys, first in ((USER_LABEL, users, 0), (ITEM_LABEL, items, n_u)):
            path = folder / f"{label.lower()}.csv"
            _write_csv(pa.table({":ID": pa.array(np.arange(first, first + len(keys), dtype=np.int64)),
                                 "id": pa.array(keys.astype(str)),
                                 "dataset": pa.repeat(pa.scalar(ds), len(keys))}), path)
            args.append(f"--nodes={label}={path}")
            ph.advance(len(keys))
        path = folder / "dataset.csv"
        record = {":ID": [n_u + n_i], "name": [ds], "status": ["loading"], "fingerprint": [prepared.fingerprint],
                  "behaviors:string[]": [";".join(prepared.behaviors.order)], "target": [prepared.behaviors.target],
                  "split_method": [prepared.split_method], "schema_version:long": [SCHEMA_VERSION]}
        _write_csv(pa.table(record), path)
        args.append(f"--nodes={DATASET_LABEL}={path}")
        ph.advance(1)

    with progress.phase("bulk files: id codes", total=sum(len(e) for e in prepared.edges.values())) as ph:
        user_keys, item_keys = pa.array(users), pa.array(items)
        codes = {b: (_codes(e["user"], user_keys), _codes(e["item"], item_keys)) for b, e in prepared.edges.items()}
        ph.advance(sum(len(e) for e in prepared.edges.values()))
    written = 0
    for b, e in prepared.edges.items():
        with progress.phase(f"bulk files: {rel_type(b)}", total=len(e)) as ph:
            u, i = codes[b]
            cols = {":START_ID": pa.array(u.astype(np.int64)), ":END_ID": pa.array(i.astype(np.int64) + n_u)}
            if "split" in e:
                cols["split"] = pa.array(e["split"].astype(str).tolist())
            if "ts" in e and e["ts"].notna().any():
                cols["ts:long"] = pa.array(e["ts"].astype("Int64"), type=pa.int64(), from_pandas=True)
            count = e["count"].to_numpy()
            if (count > 1).any():
                cols["count:long"] = pa.array(count.astype(np.int64), mask=count <= 1)
            path = folder / f"{rel_type(b).lower()}.csv"
            _write_csv(pa.table(cols), path)
            ph.advance(len(e))
        args.append(f"--relationships={rel_type(b)}={path}")
        written += len(e)

    for rel in prepared.behaviors.derived:
        with progress.phase(f"bulk files: {rel.rel_type}", total=prepared.expected[rel.rel_type]) as ph:
            ku, ki, holdout = derived_edges(prepared, codes, rel, n_i)
            cols = {":START_ID": pa.array(ku.astype(np.int64)), ":END_ID": pa.array(ki.astype(np.int64) + n_u)}
            if holdout is not None:
                cols["holdout"] = pa.array(holdout.tolist(), type=pa.string())
            path = folder / f"{rel.rel_type.lower()}.csv"
            _write_csv(pa.table(cols), path)
            ph.advance(len(ku))
        args.append(f"--relationships={rel.rel_type}={path}")
        written += len(ku)
    return args, written


def run_importer(args: list[str], stage: Path, log_path: Path, threads: int | None = None) -> None:
    """``neo4j-admin database import full`` into ``stage/data`` (the classpath is the launcher's)."""
    conf = stage / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (stage / "home").mkdir(exist_ok=True)
    (conf / "neo4j.conf").write_text(f"server.directories.data={stage / 'data'}\n")
    rt = server.runtime_dir()
    java = os.environ.get("JAVA", "java")
    cmd = [java, "-Xmx1g", "-cp", str(rt / "target/lib/*"), "org.neo4j.cli.AdminTool",
           "database", "import", "full", "neo4j", *args, "--id-type=INTEGER", "--overwrite-destination=true",
           f"--threads={threads or os.cpu_count() or 1}", "--bad-tolerance=0", "--skip-bad-relationships=false",
           f"--report-file={stage / 'import.report'}"]
    env = {**os.environ, "NEO4J_HOME": str(stage / "home"), "NEO4J_CONF": str(conf)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-15:])
        raise ImportFailed(f"the Neo4j importer failed (exit {proc.returncode}; log {log_path}); the store was "
                           f"not touched:\n{tail}")


def _check_store(driver, dataset: str, replace: bool, fingerprint: str) -> dict | None:
    """The dataset's state when a bulk ingest may proceed (None: not there); raises otherwise."""
    with driver.session() as s:
        rec = s.run(OTHER_CONTENT, dataset=dataset).single()
    if rec["others"] or rec["foreign"]:
        what = (f"the datasets {', '.join(map(repr, rec['others']))}" if rec["others"]
                else "nodes that belong to no graphrec dataset")
        raise BulkRefused(
            f"--bulk rebuilds the whole database of the managed server (Neo4j Community's importer writes only "
            f"into an empty database), and it holds {what}. Drop them first (graphrec drop --dataset NAME), "
            f"give this dataset a store of its own (--home DIR), or ingest without --bulk (the Cypher path)")
    state = load.dataset_state(driver, dataset)
    if state is not None and not replace and state.get("fingerprint") != fingerprint:
        raise load.conflict(dataset, state)
    return state


def _connect(home: Path):
    return connection.connect(connection.resolve(home=home), log=lambda s: None)


def bulk_ingest(prepared: load.PreparedData, home: Path, *, replace: bool = False, threads: int | None = None,
                progress: Progress | None = None, after_phase: Callable[[str], None] | None = None,
                log: Callable[[str], None] = lambda s: None) -> load.IngestReport:
    """Load ``prepared`` into the managed server of ``home`` with the offline importer (see the module)."""
    progress = progress or Progress(stream=None)
    after_phase = after_phase or (lambda phase: None)
    t0 = time.perf_counter()
    ds, home = prepared.dataset, Path(home)
    with server.store_lock(home):
        state = None
        if server.has_store(home):  # else nothing to check, and no server to start for it
            driver = _connect(home)
            try:
                state = _check_store(driver, ds, replace, prepared.fingerprint)
            finally:
                driver.close()
        if state is not None and state.get("status") == "complete" and not replace:
            progress.note(f"dataset {ds!r} is already complete with identical input; nothing to do")
            return load.IngestReport(ds, "unchanged", json.loads(state["counts"]), [], time.perf_counter() - t0)
        outcome = "loaded" if state is None or replace else "resumed"

        stage = server.bulk_stage(home)
        shutil.rmtree(stage, ignore_errors=True)
        args, n_rels = write_import_files(prepared, stage / "csv", progress)
        after_phase("files")
        with progress.phase("import (neo4j-admin)", total=n_rels + prepared.expected["users"]
                            + prepared.expected["items"]) as ph:
            try:
                run_importer(args, stage, server.server_dir(home) / "logs/import.log", threads)
            except ImportFailed:
                shutil.rmtree(stage, ignore_errors=True)  # its CSVs are as large as the store; the log stays
                raise
            ph.advance(n_rels + prepared.expected["users"] + prepared.expected["items"])
        after_phase("import")
        log("stopping the managed Neo4j to put the imported store in place ...")
        server.stop(home)
        server.swap_in_store(home, stage / "data")
        shutil.rmtree(stage, ignore_errors=True)
        after_phase("swap")

    driver = _connect(home)
    try:
        with progress.phase("constraints and indexes", unit="steps", total=1) as ph:
            load.ensure_schema(driver)
            ph.advance(1)
        counts = _verify(driver, prepared, progress)
        with driver.session() as s:
            s.run("MATCH (d:Dataset {name: $name}) SET d.status = 'complete', d.counts = $counts, "
                  "d.phases_done = $phases, d.started_at = datetime($started), d.ingested_at = datetime(), "
                  "d.n_users = $u, d.n_items = $i, d.loader = 'bulk'",
                  name=ds, counts=json.dumps(counts, sort_keys=True), phases=_phases(prepared),
                  started=pd.Timestamp.now("UTC").isoformat(), u=counts["users"], i=counts["items"]).consume()
    finally:
        driver.close()
    after_phase("complete")
    return load.IngestReport(ds, outcome, counts, list(progress.results), time.perf_counter() - t0)


def _phases(prepared: load.PreparedData) -> list[str]:
    return (["users", "items"] + [f"rel:{rel_type(b)}" for b in prepared.behaviors.order]
            + [f"derived:{r.rel_type}" for r in prepared.behaviors.derived])


def _verify(driver, prepared: load.PreparedData, progress: Progress, sample_users: int = VERIFY_SAMPLE_USERS
            ) -> dict[str, int]:
    """The database's counts equal the input's, and for a seeded sample of users every derived
    relation holds exactly what its Cypher definition gives over the imported base relations; else
    the dataset stays ``loading``. The store holds this dataset alone (checked before the import),
    so node and relationship counts come from Neo4j's count store in constant time; the split
    counts from a scan of the target relation."""
    ds, beh = prepared.dataset, prepared.behaviors
    target = rel_type(beh.target)
    with progress.phase("verify counts", unit="checks", total=2 + len(beh.derived)) as ph, \
            driver.session(default_access_mode="READ") as s:
        counts = {"users": s.run(f"MATCH (n:{USER_LABEL}) RETURN count(n) AS n").single()["n"],
                  "items": s.run(f"MATCH (n:{ITEM_LABEL}) RETURN count(n) AS n").single()["n"]}
        for t in [rel_type(b) for b in beh.order] + [r.rel_type for r in beh.derived]:
            counts[t] = s.run(cypher("MATCH ()-[r:${REL}]->() RETURN count(r) AS n", REL=t)).single()["n"]
        ph.advance(1)
        # from the users: the relationship-type index is dropped on the managed server (connection._tune_managed)
        for rec in s.run(cypher("MATCH (:User)-[r:${REL}]->() RETURN r.split AS split, count(*) AS n", REL=target)):
            if rec["split"] is not None:
                counts[f"{target}:{rec['split']}"] = rec["n"]
        ph.advance(1)
        mismatch: dict[str, tuple[int, int]] = {}
        rng = np.random.default_rng(0)
        users = prepared.users[rng.choice(len(prepared.users), min(sample_users, len(prepared.users)), replace=False)]
        for rel in beh.derived:
            q = cypher(SAMPLE_DEFINITION, UP=rel_type(rel.upstream), DOWN=rel_type(rel.downstream),
                       DERIVED=rel.rel_type)
            bad = s.run(q, dataset=ds, users=users.tolist()).single()["bad"]
            if bad:
                mismatch[f"{rel.rel_type} against its Cypher definition, users {bad[:3]}"] = (0, len(bad))
            ph.advance(1)
    load.check_counts(ds, prepared.expected, counts, mismatch)
    return counts



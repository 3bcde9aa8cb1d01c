"""Append new events to a complete dataset (``graphrec ingest --append``), through Cypher, so it works
on any server.

What an append does: new users and items are merged in; a (user, item, behavior) already stored
gets the new events' ``count`` added and the earlier ``ts`` kept, a new one is created (target
relationships as ``train``, or as ``test`` for a new test window: the stored train/valid/test
assignment never changes); the derived
relations are rebuilt for the touched users only. The result equals one ingest of the concatenated
log whenever that ingest would assign the same splits (a test file, no validation draw).

Resumable and idempotent: the dataset's status is ``appending`` with the new part's fingerprint
until the end, every relationship an append touches carries that fingerprint while it runs (so a
rerun after a kill never adds a count twice), each phase is recorded when done, and the marks are
removed before the dataset is complete again. A part whose fingerprint is already in the dataset's
``appends`` history is a no-op.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import neo4j
import numpy as np

from graphrec.errors import BadValue
from graphrec.ingest import load
from graphrec.ingest.readers import Interactions
from graphrec.progress import Progress
from graphrec.schema import ITEM_LABEL, SCHEMA_VERSION, USER_LABEL, cypher, rel_type

# SET items run in order: `appended` is assigned last, so the CASEs read the value from before this
# statement. A relationship already marked with this append's fingerprint was updated by a killed
# attempt and is left as it is.
APPEND_RELS = """
UNWIND $rows AS r
MATCH (u:User {dataset: $dataset, id: r[0]})
MATCH (i:Item {dataset: $dataset, id: r[1]})
MERGE (u)-[x:${REL}]->(i)
ON CREATE SET x.count = CASE WHEN r[2] > 1 THEN r[2] END, x.ts = r[3], x.split = $split, x.appended = $fp
ON MATCH SET
  x.count = CASE WHEN x.appended = $fp THEN x.count ELSE coalesce(x.count, 1) + r[2] END,
  x.ts = CASE WHEN x.appended = $fp OR r[3] IS NULL THEN x.ts
              WHEN x.ts IS NULL OR r[3] < x.ts THEN r[3] ELSE x.ts END,
  x.appended = $fp
"""

# One transaction per batch of users: their derived edges are deleted and built again, so a batch
# run twice ends the same.
DELETE_USER_DERIVED = """
UNWIND $users AS ueid
MATCH (u) WHERE elementId(u) = ueid
MATCH (u)-[d:${DERIVED}]->()
DELETE d
"""

UNMARK = """
UNWIND $users AS ueid
MATCH (u) WHERE elementId(u) = ueid
MATCH (u)-[x]->() WHERE x.appended = $fp
REMOVE x.appended
"""

APPENDING = "appending"


def part_fingerprint(data: Interactions) -> str:
    return f"v{SCHEMA_VERSION}:append:{data.fingerprint()}"


def dataset_for_append(driver: neo4j.Driver, dataset: str, database: str | None = None) -> dict:
    """The dataset's record, which must be complete (or in an append to be resumed)."""
    state = load.dataset_state(driver, dataset, database)
    if state is None:
        raise BadValue(f"dataset {dataset!r} does not exist; --append adds to a complete dataset: ingest it "
                       "first without --append")
    if state.get("status") not in ("complete", APPENDING):
        raise BadValue(f"dataset {dataset!r} is {state.get('status')!r}, not complete; finish its ingest first "
                       "(run the same ingest command again), then append")
    return state


def append(driver: neo4j.Driver, dataset: str, data: Interactions, *, split: str = "train", batch_rows: int = 20000,
           progress: Progress | None = None, after_phase: Callable[[str], None] | None = None,
           database: str | None = None) -> load.IngestReport:
    """Append ``data`` (read with the dataset's behaviors) to ``dataset`` (see the module); new target
    relationships get ``split`` ("train", or "test": a new test window)."""
    progress = progress or Progress(stream=None)
    after_phase = after_phase or (lambda phase: None)
    t0 = time.perf_counter()
    with load._server_lost_says_how_to_resume(dataset, "append"):
        state = dataset_for_append(driver, dataset, database)
        if list(data.behaviors.order) != list(state["behaviors"]):
            raise BadValue(f"the appended events have the behaviors {list(data.behaviors.order)}, dataset "
                           f"{dataset!r} has {state['behaviors']}; append with the same behavior order")
        if split not in ("train", "test"):
            raise BadValue(f"appended purchases go to train or to test; got split {split!r}")
        fp = part_fingerprint(data) + ("" if split == "train" else ":test")
        if fp in (state.get("appends") or []):
            progress.note(f"these events were appended to {dataset!r} before; nothing to do")
            return load.IngestReport(dataset, "unchanged", json.loads(state["counts"]), [], time.perf_counter() - t0)
        if state["status"] == APPENDING and state.get("append_fingerprint") != fp:
            raise BadValue(f"dataset {dataset!r} is in the middle of another append; run that append again to "
                           "finish it, then this one")
        outcome = "resumed" if state["status"] == APPENDING else "loaded"
        done = set(state.get("append_phases") or []) if outcome == "resumed" else set()
        if data.frame["split"].eq("test").any():
            raise BadValue("an append adds training events; test purchases (a test file or split column) cannot "
                           "be appended: drop --test, or ingest the whole log again with --replace")
        with driver.session(database=database) as s:
            load._autocommit(s, "MATCH (d:Dataset {name: $name}) SET d.status = $st, d.append_fingerprint = $fp, "
                                "d.append_phases = CASE WHEN d.append_fingerprint = $fp "
                                "THEN coalesce(d.append_phases, []) ELSE [] END",
                             name=dataset, st=APPENDING, fp=fp)

        def mark(phase: str) -> None:
            with driver.session(database=database) as s:
                load._autocommit(s, "MATCH (d:Dataset {name: $name}) SET d.append_phases = "
                                    "[p IN d.append_phases WHERE p <> $phase] + $phase", name=dataset, phase=phase)
            after_phase(phase)

        frame = data.frame
        target = data.behaviors.target
        users = load.sorted_unique(frame["user"])
        items = load.sorted_unique(frame["item"])
        with driver.session(database=database) as s:
            user_eid = load._merge_nodes(s, USER_LABEL, dataset, users, batch_rows, progress)
            load._merge_nodes(s, ITEM_LABEL, dataset, items, batch_rows, progress)
            for b in data.behaviors.order:
                phase = f"rel:{rel_type(b)}"
                e = frame[frame["behavior"] == b]
                if phase in done or len(e) == 0:
                    continue
                _append_rels(s, rel_type(b), dataset, e, split if b == target else None, fp, batch_rows, progress)
                mark(phase)
            eids = user_eid.to_numpy()
            for rel in data.behaviors.derived:
                phase = f"derived:{rel.rel_type}"
                if phase in done:
                    continue
                _rebuild_derived(s, rel, target, eids, batch_rows, progress)
                mark(phase)
            with progress.phase("unmark", total=len(eids), unit="users") as ph:
                for chunk in load.batches(eids, batch_rows):
                    s.execute_write(lambda tx: tx.run(UNMARK, users=chunk, fp=fp).consume())
                    ph.advance(len(chunk))
        counts = load.count_dataset(driver, dataset, data.behaviors, database)
        with driver.session(database=database) as s:
            load._autocommit(s, "MATCH (d:Dataset {name: $name}) SET d.status = 'complete', d.counts = $counts, "
                                "d.appends = coalesce(d.appends, []) + $fp, d.n_users = $u, d.n_items = $i, "
                                "d.appended_at = datetime() REMOVE d.append_fingerprint, d.append_phases",
                             name=dataset, counts=json.dumps(counts, sort_keys=True), fp=fp,
                             u=counts["users"], i=counts["items"])
    after_phase("complete")
    return load.IngestReport(dataset, outcome, counts, list(progress.results), time.perf_counter() - t0)


def _append_rels(session: neo4j.Session, rtype: str, dataset: str, edges, split: str | None, fp: str,
                 batch: int, progress: Progress) -> None:
    ts = edges["ts"] if "ts" in edges else None
    rows = [[u, i, int(c), None if t is None else int(t)] for u, i, c, t in zip(
        edges["user"].tolist(), edges["item"].tolist(), edges["count"].tolist(),
        load._none_if_na(ts) if ts is not None else [None] * len(edges))]
    q = cypher(APPEND_RELS, REL=rtype)
    with progress.phase(f"append :{rtype}", total=len(rows)) as ph:
        for chunk in load.batches(rows, batch):
            session.execute_write(lambda tx: tx.run(q, rows=chunk, dataset=dataset, split=split, fp=fp).consume())
            ph.advance(len(chunk))


def _rebuild_derived(session: neo4j.Session, rel, target: str, user_eids: np.ndarray, batch: int,
                     progress: Progress) -> None:
    create, mark = load.derived_queries(rel, target)
    delete = cypher(DELETE_USER_DERIVED, DERIVED=rel.rel_type)
    per_tx = max(1, batch // 50)  # users per transaction: ~50 upstream edges each at most in the common case

    def rebuild(tx: neo4j.ManagedTransaction, users: list[str]) -> int:
        tx.run(delete, users=users).consume()
        return load._derive_chunk(tx, create, mark, users)

    with progress.phase(f"derived :{rel.rel_type} (touched users)", total=len(user_eids), unit="users") as ph:
        for chunk in load.batches(user_eids, per_tx):
            session.execute_write(rebuild, chunk)
            ph.advance(len(chunk))

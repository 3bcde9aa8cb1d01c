"""Neo4j → snapshot: stream a complete dataset's relationships, splits and id maps out of the graph.

Relationships are read per user with pattern comprehensions (one record per user holding the
item keys), which the driver decodes ~9× faster than one record per relationship (Beibei's cart
relation: 0.9 s against 14 s). The exported counts are checked against the counts the ingest
verified and stored on the (:Dataset) node, so a snapshot never silently misses edges.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import neo4j
import numpy as np
import pandas as pd

from graphrec import snapshot as snap
from graphrec.errors import WorkFailed
from graphrec.progress import Progress
from graphrec.schema import SPLITS, Behaviors, cypher, rel_type

USER_KEYS = "MATCH (u:User {dataset: $dataset}) RETURN u.id AS key"
ITEM_KEYS = "MATCH (i:Item {dataset: $dataset}) RETURN i.id AS key"
# One record per user: the item keys of one relationship type, plus the property lists asked for.
EDGES = """
MATCH (u:User {dataset: $dataset})
RETURN u.id AS user, [(u)-[r:${REL}]->(i:Item) | i.id] AS items${PROPS}
"""
PROP_LIST = ", [(u)-[r:${REL}]->(i:Item) | r.%s] AS %s"
# Derived edges carry `holdout` only on the few edges a held-out purchase would have removed.
HOLDOUT = """
MATCH (u:User {dataset: $dataset})-[r:${REL}]->(i:Item) WHERE r.holdout IS NOT NULL
RETURN u.id AS user, i.id AS item, r.holdout AS holdout
"""
HAS_PROPERTY = """
RETURN EXISTS { MATCH (:User {dataset: $dataset})-[r:${REL}]->(:Item) WHERE r[$property] IS NOT NULL } AS present
"""


class ExportError(WorkFailed, RuntimeError):
    """The dataset cannot be exported as it is (missing, incomplete, or counts changed)."""


@dataclass
class ExportReport:
    snapshot: snap.Snapshot
    path: Path
    seconds: float
    bytes: int


def export_dataset(driver: neo4j.Driver, dataset: str, out: str | Path, *, database: str | None = None,
                   progress: Progress | None = None, source: dict | None = None) -> ExportReport:
    """Read ``dataset`` from Neo4j, validate it, and write it as a snapshot directory ``out``."""
    progress = progress or Progress(stream=None)
    t0 = time.perf_counter()
    # A read session: on a cluster (neo4j:// URI) the driver routes it to a reader.
    with driver.session(database=database, default_access_mode=neo4j.READ_ACCESS) as s:
        state = s.run("MATCH (d:Dataset {name: $name}) RETURN properties(d) AS p", name=dataset).single()
        if state is None:
            names = [r["n"] for r in s.run("MATCH (d:Dataset) RETURN d.name AS n ORDER BY n")]
            raise ExportError(f"no dataset named {dataset!r} in this database; among choices: "
                              f"{', '.join(names) or '(none: run graphrec ingest first)'}")
        state = dict(state["p"])
        if state.get("status") != "complete":
            raise ExportError(f"dataset {dataset!r} is not complete (status {state.get('status')!r}): its ingest was "
                              "interrupted; re-run the same `graphrec ingest` command to resume it, then export")
        behaviors = Behaviors(tuple(state["behaviors"]))
        with progress.phase("ids :User") as ph:
            user_keys = snap.sort_keys(str(r["key"]) for r in s.run(USER_KEYS, dataset=dataset))
            ph.advance(len(user_keys))
        with progress.phase("ids :Item") as ph:
            item_keys = snap.sort_keys(str(r["key"]) for r in s.run(ITEM_KEYS, dataset=dataset))
            ph.advance(len(item_keys))
        user_index, item_index = pd.Index(user_keys), pd.Index(item_keys)
        edges = {}
        expected = json.loads(state.get("counts") or "{}")
        for name, kind in snap.relation_names(behaviors):
            rtype = name.upper() if kind == "derived" else rel_type(name)
            props = [p for p in ("ts", "count") if kind == "base" and _has_property(s, dataset, rtype, p)]
            if name == behaviors.target:
                props.insert(0, "split")
            edges[name] = _read_relation(s, dataset, rtype, props, user_index, item_index,
                                         expected.get(rtype), progress)
            if kind == "derived" and name.endswith(f"_not_{behaviors.target}"):
                edges[name]["holdout"] = _read_holdout(s, dataset, rtype, edges[name], user_index, item_index)
    snapshot = snap.build(dataset, behaviors, user_keys, item_keys, edges,
                          source={"dataset_fingerprint": state.get("fingerprint"),
                                  "split_method": state.get("split_method"),
                                  "ingested_at": str(state.get("ingested_at")), **(source or {})})
    mismatch = {k: (v, snapshot.counts().get(k, 0)) for k, v in expected.items() if snapshot.counts().get(k, 0) != v}
    if mismatch:
        detail = ", ".join(f"{k}: {e:,} at ingest, {f:,} exported" for k, (e, f) in mismatch.items())
        raise ExportError(f"dataset {dataset!r} changed since it was ingested ({detail}); re-ingest it with "
                          "`graphrec ingest --replace` and export again")
    with progress.phase("write snapshot", unit="files") as ph:
        path = snap.write(snapshot, out)
        ph.advance(len(snapshot.relations) + 3)
    size = sum(f.stat().st_size for f in path.iterdir())
    return ExportReport(snapshot, path, time.perf_counter() - t0, size)


def _has_property(session: neo4j.Session, dataset: str, rtype: str, prop: str) -> bool:
    return bool(session.run(cypher(HAS_PROPERTY, REL=rtype), dataset=dataset, property=prop).single()["present"])


#: Items per conversion of streamed records into index arrays: Python objects for at most this
#: many edges are alive at once, the rest is int32/int64 arrays.
STREAM_CHUNK = 1 << 20


def _read_relation(session: neo4j.Session, dataset: str, rtype: str, props: list[str], user_index: pd.Index,
                   item_index: pd.Index, expected: int | None, progress: Progress) -> dict[str, np.ndarray]:
    # property names come from the fixed tuple above, never from input
    prop_sql = "".join(PROP_LIST % (p, p) for p in props)
    q = cypher(EDGES.replace("${PROPS}", prop_sql), REL=rtype)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("user", "item", *props)}
    users, lengths, items = [], [], []
    values: dict[str, list] = {p: [] for p in props}

    def flush() -> None:
        user = np.repeat(user_index.get_indexer(users), lengths)
        item = item_index.get_indexer(items)
        if (item < 0).any() or (user < 0).any():
            raise ExportError(f"{rtype}: an edge points to a node that is not in the id map; was the dataset "
                              "modified during the export? Export again")
        parts["user"].append(user)
        parts["item"].append(item)
        if "split" in props:
            codes = pd.Series(values["split"], dtype=object).map(snap.SPLIT_CODES)
            if codes.isna().any():
                bad = values["split"][int(np.flatnonzero(codes.isna().to_numpy())[0])]
                raise ExportError(f"{rtype}: split value {bad!r} is not one of {', '.join(SPLITS)}; "
                                  "re-ingest the dataset")
            parts["split"].append(codes.to_numpy(np.int8))
        if "ts" in props:
            parts["ts"].append(np.array([snap.NO_TS if v is None else v for v in values["ts"]], dtype=np.int64))
        if "count" in props:
            parts["count"].append(np.array([1 if v is None else v for v in values["count"]], dtype=np.int32))
        users.clear(), lengths.clear(), items.clear()
        for v in values.values():
            v.clear()

    with progress.phase(f"rels :{rtype}", total=expected) as ph:
        for rec in session.run(q, dataset=dataset):
            its = rec["items"]
            if not its:
                continue
            users.append(rec["user"])
            lengths.append(len(its))
            items.extend(its)
            for p in props:
                values[p].extend(rec[p])
            ph.advance(len(its))
            if len(items) >= STREAM_CHUNK:
                flush()
        flush()
    return {k: np.concatenate(v) for k, v in parts.items()}


def _read_holdout(session: neo4j.Session, dataset: str, rtype: str, cols: dict[str, np.ndarray],
                  user_index: pd.Index, item_index: pd.Index) -> np.ndarray:
    rows = session.run(cypher(HOLDOUT, REL=rtype), dataset=dataset).values()
    holdout = np.full(len(cols["user"]), snap.NO_HOLDOUT, dtype=np.int8)
    if rows:
        u = user_index.get_indexer([r[0] for r in rows]).astype(np.int64)
        i = item_index.get_indexer([r[1] for r in rows]).astype(np.int64)
        n_items = len(item_index)
        key = cols["user"].astype(np.int64) * n_items + cols["item"]
        order = np.argsort(key, kind="stable")
        pos = order[np.searchsorted(key, u * n_items + i, sorter=order)]
        holdout[pos] = [snap.SPLIT_CODES[r[2]] for r in rows]
    return holdout

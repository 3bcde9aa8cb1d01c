"""Write normalized interactions into Neo4j: nodes, base relationships, derived unique relationships.

Atomicity per dataset: a ``(:Dataset {name})`` node carries ``status`` ("loading" until the very
end, then "complete"), the input's ``fingerprint`` and ``phases_done``. Each phase (users, items,
one per behavior, one per derived relation) first deletes whatever a crashed earlier attempt left
of it, then writes it and records it as done. Re-running the same command therefore resumes and
ends with exactly the counts of an uninterrupted run; a dataset is never marked complete unless
the database's counts equal the counts computed independently from the input.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import neo4j
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from graphrec.config import SplitConfig
from graphrec.errors import BadValue, UserError, WorkFailed
from graphrec.ingest.readers import Interactions
from graphrec.ingest.split import assign_splits
from graphrec.progress import PhaseResult, Progress
from graphrec.schema import (
    DATASET_NAME_RE,
    ITEM_LABEL,
    SCHEMA_VERSION,
    USER_LABEL,
    Behaviors,
    DerivedRelation,
    cypher,
    rel_type,
)

CONSTRAINTS = (
    "CREATE CONSTRAINT graphrec_user_key IF NOT EXISTS FOR (n:User) REQUIRE (n.dataset, n.id) IS UNIQUE",
    "CREATE CONSTRAINT graphrec_item_key IF NOT EXISTS FOR (n:Item) REQUIRE (n.dataset, n.id) IS UNIQUE",
    "CREATE CONSTRAINT graphrec_dataset_name IF NOT EXISTS FOR (n:Dataset) REQUIRE n.name IS UNIQUE",
)

MERGE_NODES = """
UNWIND $keys AS k
MERGE (n:${LABEL} {dataset: $dataset, id: k})
RETURN k AS key, elementId(n) AS eid
"""

# Rows are grouped per user: [user_eid, [item_eid, ...]] when the relationships carry no properties,
# else [user_eid, [[item_eid, prop, ...], ...]]. Sending only the properties the data has is ~30%
# faster than one template with null placeholders (measured on Beibei's cart relation).
CREATE_RELS_BARE = """
UNWIND $rows AS r
MATCH (u) WHERE elementId(u) = r[0]
UNWIND r[1] AS e
MATCH (i) WHERE elementId(i) = e
CREATE (u)-[:${REL}]->(i)
"""
CREATE_RELS_PROPS = """
UNWIND $rows AS r
MATCH (u) WHERE elementId(u) = r[0]
UNWIND r[1] AS e
MATCH (i) WHERE elementId(i) = e[0]
CREATE (u)-[x:${REL}]->(i)
"""
#: Relationship properties a base relationship may carry, in the order they are sent.
REL_PROPERTIES = ("split", "ts", "count")

# M_up ⊙ (J − M_down) over the given users. Only train edges of the target count as "down", so a
# held-out purchase never removes an edge from a training relation.
CREATE_DERIVED = """
UNWIND $users AS ueid
MATCH (u) WHERE elementId(u) = ueid
MATCH (u)-[:${UP}]->(i)
WHERE NOT EXISTS { MATCH (u)-[d:${DOWN}]->(i) WHERE coalesce(d.split, 'train') = 'train' }
CREATE (u)-[:${DERIVED}]->(i)
RETURN count(*) AS created
"""

# `holdout` records the split of the held-out purchase a derived edge would otherwise have been
# removed by. A separate pass over the few held-out purchases is cheaper than a second
# expand-into per derived edge in the query above.
MARK_HOLDOUT = """
UNWIND $users AS ueid
MATCH (u) WHERE elementId(u) = ueid
MATCH (u)-[h:${DOWN}]->(i) WHERE h.split IN ['valid', 'test']
MATCH (u)-[d:${DERIVED}]->(i)
SET d.holdout = h.split
"""

DELETE_RELS = """
MATCH (u:User {dataset: $dataset})-[r:${REL}]->()
CALL { WITH r DELETE r } IN TRANSACTIONS OF 20000 ROWS
"""

DELETE_NODES = """
MATCH (n:${LABEL} {dataset: $dataset})
CALL { WITH n DETACH DELETE n } IN TRANSACTIONS OF 200 ROWS
"""

COUNT_RELS = """
MATCH (u:User {dataset: $dataset})-[r]->(:Item)
RETURN type(r) AS type, r.split AS split, count(*) AS n
"""


class DatasetConflict(UserError, RuntimeError):
    """The dataset name already holds different data and --replace was not given."""


class IntegrityError(WorkFailed, RuntimeError):
    """The database's counts disagree with the input's after loading; the dataset stays incomplete."""


def conflict(dataset: str, state: dict) -> DatasetConflict:
    return DatasetConflict(
        f"dataset {dataset!r} already exists (status {state.get('status')}) with different data or split settings; "
        f"pass --replace to rebuild it from this source, or ingest under another --dataset name"
    )


def check_counts(dataset: str, expected: dict[str, int], counts: dict[str, int],
                 more: dict[str, tuple[int, int]] | None = None) -> None:
    """Raise IntegrityError unless the database's ``counts`` equal the input's ``expected`` ones (and
    ``more``, other (expected, found) disagreements, is empty)."""
    mismatch = {k: (v, counts.get(k, 0)) for k, v in expected.items() if counts.get(k, 0) != v}
    mismatch.update(more or {})
    if mismatch:
        detail = ", ".join(f"{k}: expected {e:,}, found {f:,}" for k, (e, f) in mismatch.items())
        raise IntegrityError(f"dataset {dataset!r} stays incomplete: counts differ from the input ({detail}); "
                             "re-run with --replace to rebuild it")


@dataclass
class PreparedData:
    """Deduplicated edges per behavior with the target split applied, plus the expected counts."""

    dataset: str
    behaviors: Behaviors
    edges: dict[str, pd.DataFrame]  # behavior -> user, item, split?, ts?, count
    users: np.ndarray
    items: np.ndarray
    split_method: str
    fingerprint: str
    expected: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestReport:
    dataset: str
    outcome: str  # "loaded", "resumed" or "unchanged"
    counts: dict[str, int]
    phases: list[PhaseResult]
    seconds: float


def validate_dataset_name(name: str) -> str:
    if not DATASET_NAME_RE.match(name or ""):
        raise BadValue(
            f"dataset name {name!r} is not allowed: use 1–64 letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return name


def prepare(data: Interactions, dataset: str, split_cfg: SplitConfig) -> PreparedData:
    validate_dataset_name(dataset)
    frame = data.frame
    edges: dict[str, pd.DataFrame] = {}
    for b in data.behaviors.order:
        e = frame[frame["behavior"] == b].drop(columns=["behavior"]).reset_index(drop=True)
        if b != data.behaviors.target:
            e = e.drop(columns=["split"])
        edges[b] = e
    target = data.behaviors.target
    if len(edges[target]) == 0:
        raise BadValue(f"dataset {dataset!r} has no {target!r} interactions (the target behavior)")
    labels, method = assign_splits(edges[target], split_cfg, data.has_test_file)
    edges[target]["split"] = labels
    users, items = sorted_unique(frame["user"]), sorted_unique(frame["item"])
    fp = f"v{SCHEMA_VERSION}:{data.fingerprint()}:{method}:{split_cfg.seed}:{split_cfg.valid}"
    prepared = PreparedData(dataset, data.behaviors, edges, users, items, method, fp)
    prepared.expected = expected_counts(prepared)
    return prepared


def sorted_unique(ids: pd.Series) -> np.ndarray:
    """The distinct ids in code-point order, as a NumPy string array (``np.unique``'s result): hashed
    in Arrow first, so only the distinct ids are sorted (8× faster than ``np.unique`` at 1M rows)."""
    distinct = pc.unique(pa.array(ids)).to_numpy(zero_copy_only=False).astype(str)
    return np.sort(distinct)


def train_pairs(edges: pd.DataFrame) -> pd.DataFrame:
    """(user, item) pairs that count as observed for the derived relations (train edges only)."""
    if "split" in edges:
        edges = edges[edges["split"] == "train"]
    return edges[["user", "item"]]


def derived_pairs(prepared: PreparedData, rel: DerivedRelation) -> pd.DataFrame:
    """The derived relation computed in pandas: the independent check of the Cypher result."""
    up = prepared.edges[rel.upstream][["user", "item"]]
    down = train_pairs(prepared.edges[rel.downstream])
    m = up.merge(down, on=["user", "item"], how="left", indicator=True)
    return m.loc[m["_merge"] == "left_only", ["user", "item"]].reset_index(drop=True)


def expected_counts(prepared: PreparedData) -> dict[str, int]:
    out = {"users": len(prepared.users), "items": len(prepared.items)}
    for b, e in prepared.edges.items():
        out[rel_type(b)] = len(e)
    for s, n in prepared.edges[prepared.behaviors.target]["split"].value_counts().items():
        out[f"{rel_type(prepared.behaviors.target)}:{s}"] = int(n)
    for rel in prepared.behaviors.derived:
        out[rel.rel_type] = len(derived_pairs(prepared, rel))
    return out


def ensure_schema(driver: neo4j.Driver, database: str | None = None) -> None:
    with driver.session(database=database) as s:
        for stmt in CONSTRAINTS:
            _autocommit(s, stmt)
        s.run("CALL db.awaitIndexes(300)").consume()


TRANSIENT_TRIES = 6  # auto-commit statements retried on TransientError, backing off 0.2 s, 0.4 s, ...


class ServerLost(WorkFailed):
    """The server went away in the middle of an ingest or a delete."""


def _autocommit(session: neo4j.Session, query: str, **params: Any) -> None:
    """An auto-commit statement (``CALL {} IN TRANSACTIONS`` needs one), retried on transient
    errors such as ``Transaction.Outdated`` when another ingest or drop runs on the same server;
    every statement sent through here is idempotent."""
    for attempt in range(TRANSIENT_TRIES):
        try:
            session.run(query, **params).consume()
            return
        except neo4j.exceptions.TransientError:
            if attempt == TRANSIENT_TRIES - 1:
                raise
            time.sleep(0.2 * 2 ** attempt)


@contextmanager
def _server_lost_says_how_to_resume(dataset: str, action: str) -> Iterator[None]:
    try:
        yield
    except (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired) as exc:
        raise ServerLost(f"the Neo4j server went away during the {action} of {dataset!r} ({type(exc).__name__}); "
                         f"nothing done so far is lost: run the same command again to finish it") from None


DELETING = "deleting"  # the status of a dataset whose delete began and has not finished


def dataset_state(driver: neo4j.Driver, dataset: str, database: str | None = None) -> dict | None:
    with driver.session(database=database) as s:
        rec = s.run("MATCH (d:Dataset {name: $name}) RETURN properties(d) AS p", name=dataset).single()
    return dict(rec["p"]) if rec else None


def delete_dataset(driver: neo4j.Driver, dataset: str, database: str | None = None,
                   progress: Progress | None = None) -> None:
    """Remove a dataset (see _delete_dataset); a server lost on the way is one line saying how to finish."""
    with _server_lost_says_how_to_resume(dataset, "delete"):
        _delete_dataset(driver, dataset, database, progress)


def _delete_dataset(driver: neo4j.Driver, dataset: str, database: str | None = None,
                    progress: Progress | None = None) -> None:
    """Remove a dataset's nodes, relationships and record, in bounded transactions. The record is
    marked ``deleting`` first and removed last, so an interrupted delete is visible (never a
    ``complete`` dataset with nodes missing) and running it again, or ingesting again, finishes it."""
    progress = progress or Progress(stream=None)
    with driver.session(database=database) as s:
        _autocommit(s, "MATCH (d:Dataset {name: $name}) SET d.status = $status", name=dataset, status=DELETING)
        with progress.phase("delete old dataset", unit="steps") as ph:
            for label in (USER_LABEL, ITEM_LABEL):
                _autocommit(s, cypher(DELETE_NODES, LABEL=label), dataset=dataset)
                ph.advance(1)
            _autocommit(s, "MATCH (d:Dataset {name: $name}) DELETE d", name=dataset)
            ph.advance(1)


def ingest(driver: neo4j.Driver, prepared: PreparedData, **kw: Any) -> IngestReport:
    """Load ``prepared`` into Neo4j (see _ingest); a server lost on the way is one line saying that
    running the same command again resumes."""
    with _server_lost_says_how_to_resume(prepared.dataset, "ingest"):
        return _ingest(driver, prepared, **kw)


def _ingest(
    driver: neo4j.Driver,
    prepared: PreparedData,
    *,
    replace: bool = False,
    batch_rows: int = 20000,
    progress: Progress | None = None,
    after_phase: Callable[[str], None] | None = None,
    database: str | None = None,
) -> IngestReport:
    """Load ``prepared`` into Neo4j (resuming an interrupted load of the same input)."""
    progress = progress or Progress(stream=None)
    t0 = time.perf_counter()
    ds = prepared.dataset
    ensure_schema(driver, database)
    state = dataset_state(driver, ds, database)
    outcome = "loaded"
    if state is not None and (replace or state.get("status") == DELETING):
        if not replace:
            progress.note(f"finishing the interrupted delete of {ds!r} first")
        delete_dataset(driver, ds, database, progress)
        state = None
    elif state is not None and state.get("fingerprint") != prepared.fingerprint:
        raise conflict(ds, state)
    elif state is not None and state.get("status") == "complete":
        counts = json.loads(state["counts"])
        progress.note(f"dataset {ds!r} is already complete with identical input; nothing to do")
        return IngestReport(ds, "unchanged", counts, [], time.perf_counter() - t0)
    elif state is not None:
        outcome = "resumed"
        progress.note(f"resuming the interrupted ingest of {ds!r}; "
                      f"done: {', '.join(state.get('phases_done') or []) or 'none'}")

    if state is None:
        with driver.session(database=database) as s:
            s.run(
                "CREATE (d:Dataset {name: $name, status: 'loading', fingerprint: $fp, behaviors: $behaviors, "
                "target: $target, split_method: $method, schema_version: $sv, phases_done: [], "
                "started_at: datetime()})",
                name=ds, fp=prepared.fingerprint, behaviors=list(prepared.behaviors.order),
                target=prepared.behaviors.target, method=prepared.split_method, sv=SCHEMA_VERSION,
            ).consume()
        done: set[str] = set()
    else:
        done = set(state.get("phases_done") or [])

    def mark(phase: str) -> None:
        with driver.session(database=database) as s:
            _autocommit(s, "MATCH (d:Dataset {name: $name}) SET d.phases_done = "
                           "[p IN d.phases_done WHERE p <> $phase] + $phase", name=ds, phase=phase)
        if after_phase is not None:
            after_phase(phase)

    with driver.session(database=database) as s:
        # Node phases are idempotent (MERGE) and return the element ids the relationship phases need.
        user_eid = _merge_nodes(s, USER_LABEL, ds, prepared.users, batch_rows, progress)
        if "users" not in done:
            mark("users")
        item_eid = _merge_nodes(s, ITEM_LABEL, ds, prepared.items, batch_rows, progress)
        if "items" not in done:
            mark("items")
        for b in prepared.behaviors.order:
            phase = f"rel:{rel_type(b)}"
            if phase in done:
                continue
            _autocommit(s, cypher(DELETE_RELS, REL=rel_type(b)), dataset=ds)
            _create_rels(s, rel_type(b), prepared.edges[b], user_eid, item_eid, batch_rows, progress)
            mark(phase)
        user_eids = user_eid.to_numpy()
        for rel in prepared.behaviors.derived:
            phase = f"derived:{rel.rel_type}"
            if phase in done:
                continue
            _autocommit(s, cypher(DELETE_RELS, REL=rel.rel_type), dataset=ds)
            _create_derived(s, rel, prepared.behaviors.target, user_eids, prepared.expected[rel.rel_type],
                            batch_rows, progress)
            mark(phase)

    counts = count_dataset(driver, ds, prepared.behaviors, database)
    check_counts(ds, prepared.expected, counts)
    with driver.session(database=database) as s:
        _autocommit(s, "MATCH (d:Dataset {name: $name}) SET d.status = 'complete', d.counts = $counts, "
                    "d.ingested_at = datetime(), d.n_users = $u, d.n_items = $i",
                    name=ds, counts=json.dumps(counts, sort_keys=True), u=counts["users"], i=counts["items"])
    if after_phase is not None:
        after_phase("complete")
    return IngestReport(ds, outcome, counts, list(progress.results), time.perf_counter() - t0)


def count_dataset(driver: neo4j.Driver, dataset: str, behaviors: Behaviors,
                  database: str | None = None) -> dict[str, int]:
    """Counts of nodes, relationships per type, and target relationships per split, read from Neo4j."""
    target = rel_type(behaviors.target)
    with driver.session(database=database) as s:
        out = {
            "users": s.run("MATCH (n:User {dataset: $ds}) RETURN count(n) AS n", ds=dataset).single()["n"],
            "items": s.run("MATCH (n:Item {dataset: $ds}) RETURN count(n) AS n", ds=dataset).single()["n"],
        }
        for rec in s.run(COUNT_RELS, dataset=dataset):
            out[rec["type"]] = out.get(rec["type"], 0) + rec["n"]
            if rec["type"] == target and rec["split"] is not None:
                out[f"{target}:{rec['split']}"] = rec["n"]
    return out


def batches(values: list | np.ndarray, size: int) -> Iterator[list]:
    """``values`` in consecutive lists of at most ``size`` (one write transaction each)."""
    for k in range(0, len(values), size):
        chunk = values[k:k + size]
        yield chunk.tolist() if isinstance(chunk, np.ndarray) else chunk


def _merge_nodes(session: neo4j.Session, label: str, ds: str, keys: np.ndarray, batch: int,
                 progress: Progress) -> pd.Series:
    keys_list = keys.tolist()
    eids: dict[str, str] = {}
    q = cypher(MERGE_NODES, LABEL=label)
    with progress.phase(f"nodes :{label}", total=len(keys_list)) as ph:
        for chunk in batches(keys_list, batch):
            recs = session.execute_write(lambda tx: list(tx.run(q, keys=chunk, dataset=ds)))
            eids.update((r["key"], r["eid"]) for r in recs)
            ph.advance(len(chunk))
    return pd.Series(eids)


def _set_clause(names: list[str]) -> str:
    """``SET x.split = e[1], ...`` for property names from the REL_PROPERTIES whitelist."""
    for name in names:
        if name not in REL_PROPERTIES:
            raise ValueError(f"{name!r} is not a relationship property graphrec writes")
    return "SET " + ", ".join("x." + name + " = e[" + str(k + 1) + "]" for k, name in enumerate(names))


def _none_if_na(values: pd.Series) -> list:
    return values.astype(object).where(values.notna(), None).tolist()


def _create_rels(session: neo4j.Session, rtype: str, edges: pd.DataFrame, user_eid: pd.Series,
                 item_eid: pd.Series, batch: int, progress: Progress) -> None:
    edges = edges.sort_values(["user", "item"], kind="stable")
    u = edges["user"].map(user_eid).to_numpy()
    i = edges["item"].map(item_eid).tolist()
    n = len(edges)
    columns = {}
    if "split" in edges:
        columns["split"] = edges["split"].tolist()
    if "ts" in edges and edges["ts"].notna().any():
        columns["ts"] = _none_if_na(edges["ts"])
    count = edges["count"].to_numpy()
    if (count > 1).any():
        columns["count"] = [int(c) if c > 1 else None for c in count]
    if columns:
        props = [list(t) for t in zip(i, *columns.values())]
        q = cypher(CREATE_RELS_PROPS, REL=rtype) + _set_clause(list(columns))
    else:
        props, q = i, cypher(CREATE_RELS_BARE, REL=rtype)
    # group boundaries per user, then batches of whole users of about `batch` edges
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], n]
    with progress.phase(f"rels :{rtype}", total=n) as ph:
        g = 0
        while g < len(starts):
            rows, size = [], 0
            while g < len(starts) and (size == 0 or size + (ends[g] - starts[g]) <= batch):
                rows.append([u[starts[g]], props[starts[g]:ends[g]]])
                size += int(ends[g] - starts[g])
                g += 1
            session.execute_write(lambda tx: tx.run(q, rows=rows).consume())
            ph.advance(size)


def derived_queries(rel: DerivedRelation, target: str) -> tuple[str, str | None]:
    """The Cypher that builds ``rel`` for a list of users, and the one that marks its holdout edges
    (None when its downstream behavior is not the target)."""
    names = dict(UP=rel_type(rel.upstream), DOWN=rel_type(rel.downstream), DERIVED=rel.rel_type)
    mark = cypher(MARK_HOLDOUT, DOWN=names["DOWN"], DERIVED=names["DERIVED"]) if rel.downstream == target else None
    return cypher(CREATE_DERIVED, **names), mark


def _derive_chunk(tx: neo4j.ManagedTransaction, create: str, mark: str | None, users: list[str]) -> int:
    created = tx.run(create, users=users).single()["created"]
    if mark is not None:
        tx.run(mark, users=users).consume()
    return created


def _create_derived(session: neo4j.Session, rel: DerivedRelation, target: str, user_eids: np.ndarray,
                    expected: int, batch: int, progress: Progress) -> None:
    q, mark = derived_queries(rel, target)
    n_users = len(user_eids)
    per_tx = max(1, int(batch * n_users / max(expected, 1)))  # about `batch` new edges per transaction
    with progress.phase(f"derived :{rel.rel_type}", total=expected) as ph:
        for chunk in batches(user_eids, per_tx):
            ph.advance(session.execute_write(_derive_chunk, q, mark, chunk))

"""Top-k recommendations from a trained run, with seen items excluded; optional write-back to Neo4j.

"Seen" = every item the user has with the target behavior in the snapshot (train, valid and test
purchases): at serving time all of them are known. Keys go in and come out as the external ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from graphrec.errors import BadValue
from graphrec.runs import open_model
from graphrec.schema import RECOMMENDED_TYPE, cypher


@dataclass(frozen=True)
class Recommendation:
    user: str
    item: str
    rank: int
    score: float


def recommend(run_dir: str | Path, users: list[str], k: int = 10, device: str = "cpu",
              snapshot_path: str | Path | None = None) -> list[Recommendation]:
    if k < 1:
        raise BadValue(f"-k must be >= 1; got {k}")
    info, model, data, graphs = open_model(run_dir, device, snapshot_path)
    from graphrec import snapshot as snap

    s = snap.read(snapshot_path or info.snapshot, verify_hashes=False)
    idx = torch.as_tensor(s.users.indices(users), device=device)
    target = s.target
    with torch.no_grad():
        scores = model.scorer(graphs)(idx).float()
        for row, u in enumerate(idx.tolist()):
            seen = target.item[target.user == u]
            scores[row, torch.as_tensor(seen.astype(np.int64), device=device)] = float("-inf")
        k = min(k, s.n_items)
        top = torch.topk(scores, k, dim=1)
    out = []
    for row, key in enumerate(users):
        for rank, (item, score) in enumerate(zip(top.indices[row].tolist(), top.values[row].tolist()), start=1):
            if score == float("-inf"):
                break  # fewer unseen items than k
            out.append(Recommendation(key, s.items.key(item), rank, float(score)))
    return out


WRITE_BACK_DELETE = """
MATCH (u:User {dataset: $dataset})-[r:${REL}]->(:Item) WHERE r.run = $run AND u.id IN $users
DELETE r
"""
WRITE_BACK_CREATE = """
UNWIND $rows AS row
MATCH (u:User {dataset: $dataset, id: row.user})
MATCH (i:Item {dataset: $dataset, id: row.item})
CREATE (u)-[:${REL} {score: row.score, rank: row.rank, model: $model, run: $run}]->(i)
"""


def write_back(driver, dataset: str, model: str, run: str, recs: list[Recommendation],
               database: str | None = None) -> int:
    """Store recommendations as (:User)-[:RECOMMENDED]->(:Item), replacing this run's earlier ones
    for the same users, in one transaction (all or nothing)."""
    users = sorted({r.user for r in recs})
    rows = [{"user": r.user, "item": r.item, "score": r.score, "rank": r.rank} for r in recs]

    def work(tx):
        tx.run(cypher(WRITE_BACK_DELETE, REL=RECOMMENDED_TYPE), dataset=dataset, run=run, users=users).consume()
        summary = tx.run(cypher(WRITE_BACK_CREATE, REL=RECOMMENDED_TYPE), dataset=dataset, model=model, run=run,
                         rows=rows).consume()
        return summary.counters.relationships_created

    with driver.session(database=database) as s:
        created = s.execute_write(work)
    if created != len(rows):
        raise RuntimeError(f"wrote {created} of {len(rows)} recommendations: some users or items are not in "
                           f"dataset {dataset!r} in this database; re-ingest or export again")
    return created

"""The dataset report of ``graphrec inspect``, assembled from the named queries in ``cypher/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import neo4j

from graphrec.errors import UserError
from graphrec.progress import format_table
from graphrec.queries import get_query, run_query
from graphrec.schema import Behaviors, rel_type

if TYPE_CHECKING:
    from graphrec.snapshot import Snapshot


class DatasetNotFound(UserError, LookupError):
    pass


@dataclass
class Report:
    dataset: str
    status: str
    behaviors: Behaviors
    nodes: dict[str, int]
    relationships: list[dict[str, Any]]  # type, kind, split, count
    funnel: list[dict[str, Any]]
    degrees: list[dict[str, Any]]
    popular: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.relationships:
            out[r["type"]] = out.get(r["type"], 0) + r["relationships"]
        return out

    def render(self) -> str:
        parts = [f"# dataset {self.dataset}  (status: {self.status}; behaviors: {self.behaviors}; "
                 f"target: {self.behaviors.target})", ""]
        parts += ["## nodes", format_table(["label", "nodes"], list(self.nodes.items())), ""]
        parts += ["## relationships",
                  format_table(["type", "kind", "split / holdout", "relationships"],
                               [[r["type"], r["kind"], r["split"] or "", r["relationships"]]
                                for r in self.relationships]),
                  ""]
        if self.funnel:
            parts += ["## funnel and cascade violations (all splits)",
                      format_table(["upstream → downstream", "upstream pairs", "downstream pairs", "both",
                                    "conversion", "downstream without upstream"],
                                   [[f"{f['upstream']} → {f['downstream']}", f["upstream_pairs"], f["downstream_pairs"],
                                     f["both_pairs"], f"{100 * (f['conversion'] or 0):.2f}%", f["violations"]]
                                    for f in self.funnel]), ""]
        parts += ["## degree quantiles per behavior",
                  format_table(["type", "side", "min", "p25", "p50", "p90", "p99", "max", "mean"],
                               [[d["type"], d["side"], d["min"], d["p25"], d["p50"], d["p90"], d["p99"], d["max"],
                                 d["mean"]] for d in self.degrees]), ""]
        parts += [f"## most popular items ({rel_type(self.behaviors.target)})",
                  format_table(["rank", "item", "interactions"],
                               [[k + 1, p["item"], p["interactions"]] for k, p in enumerate(self.popular)])]
        return "\n".join(parts)


def _rows(driver: neo4j.Driver, name: str, database: str | None, **params: Any) -> list[dict[str, Any]]:
    q = get_query(name)
    cols, rows = run_query(driver, q, q.bind({k: str(v) for k, v in params.items()}), database)
    return [dict(zip(cols, r)) for r in rows]


def dataset_report(driver: neo4j.Driver, dataset: str, top: int = 10, database: str | None = None) -> Report:
    meta = [d for d in _rows(driver, "datasets", database) if d["dataset"] == dataset]
    if not meta:
        names = [d["dataset"] for d in _rows(driver, "datasets", database)]
        raise DatasetNotFound(f"no dataset named {dataset!r} in this database; among choices: "
                              f"{', '.join(names) or '(none: run graphrec ingest first)'}")
    behaviors = Behaviors(tuple(meta[0]["behaviors"]))
    nodes = {r["label"]: r["nodes"] for r in _rows(driver, "node-counts", database, dataset=dataset)}
    base = {rel_type(b) for b in behaviors.order}
    rels = []
    for r in _rows(driver, "rel-counts", database, dataset=dataset):
        r["kind"] = "base" if r["type"] in base else "derived"
        rels.append(r)
    funnel = []
    pairs = list(zip(behaviors.order, behaviors.order[1:]))
    if len(behaviors.order) > 2:
        pairs += [(b, behaviors.target) for b in behaviors.order[:-2]]
    for up, down in pairs:
        row = _rows(driver, "pair-overlap", database, dataset=dataset, upstream=rel_type(up),
                    downstream=rel_type(down))[0]
        funnel.append({"upstream": up, "downstream": down, **row})
    degrees = []
    for b in behaviors.order:
        for d in _rows(driver, "degree-quantiles", database, dataset=dataset, type=rel_type(b)):
            degrees.append({"type": rel_type(b), **d})
    popular = _rows(driver, "popular-items", database, dataset=dataset, type=rel_type(behaviors.target), limit=top)
    return Report(dataset, meta[0]["status"], behaviors, nodes, rels, funnel, degrees, popular)


def snapshot_report(s: "Snapshot", top: int = 10) -> Report:
    """The database report's counts, recomputed from a snapshot's arrays (same rows, same order),
    so the two can be compared line by line."""
    import numpy as np

    from graphrec.snapshot import SPLIT_CODES

    code_names = {c: name for name, c in SPLIT_CODES.items()}
    rels = []
    for rel in sorted(s.relations.values(), key=lambda r: r.name.upper()):
        codes = rel.split if rel.split is not None else rel.holdout
        groups: dict[str | None, int] = {}
        if codes is None:
            groups[None] = len(rel)
        else:
            values, counts = np.unique(codes, return_counts=True)
            groups = {code_names.get(int(v)): int(n) for v, n in zip(values, counts)}
        # Cypher's ORDER BY puts null after every string
        for split in sorted(groups, key=lambda k: (k is None, k or "")):
            rels.append({"type": rel.name.upper(), "split": split, "relationships": groups[split],
                         "kind": rel.kind})
    keys = {}
    for rel in s.relations.values():
        keys[rel.name] = rel.user.astype(np.int64) * s.n_items + rel.item
    funnel = []
    order = s.behaviors.order
    pairs = list(zip(order, order[1:]))
    if len(order) > 2:
        pairs += [(b, s.behaviors.target) for b in order[:-2]]
    for up, down in pairs:
        both = int(np.isin(keys[down], keys[up], assume_unique=True).sum())
        n_up, n_down = len(keys[up]), len(keys[down])
        funnel.append({"upstream": up, "downstream": down, "upstream_pairs": n_up, "downstream_pairs": n_down,
                       "both_pairs": both, "conversion": both / n_up if n_up else None, "violations": n_down - both})
    degrees = []
    for b in order:
        rel = s.relations[b]
        for side, idx, n in (("user", rel.user, s.n_users), ("item", rel.item, s.n_items)):
            deg = np.bincount(idx, minlength=n)
            q = {name: int(np.quantile(deg, p, method="inverted_cdf"))
                 for name, p in (("p25", 0.25), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
            degrees.append({"type": b.upper(), "side": side, "min": int(deg.min()), **q, "max": int(deg.max()),
                            "mean": round(float(deg.mean()), 2)})
    target = s.relations[s.behaviors.target]
    counts = np.bincount(target.item, minlength=s.n_items)
    ranked = sorted(range(s.n_items), key=lambda k: (-counts[k], s.items.key(k)))[:top]
    popular = [{"item": s.items.key(k), "interactions": int(counts[k])} for k in ranked]
    nodes = {"User": s.n_users, "Item": s.n_items}
    return Report(s.dataset, f"snapshot {s.path}" if s.path else "snapshot", s.behaviors, nodes, rels, funnel,
                  degrees, popular)

"""Snapshot → validated DGL heterograph (the graph container and file format of graphrec).

Node types ``user`` and ``item``; per behavior and per derived relation one canonical etype
``(user, name, item)`` and its reverse ``(item, rev_name, user)``. The target behavior carries its
train edges only; the held-out (valid/test) purchases travel alongside in :class:`GraphData`, never
inside the graph a model propagates over. Training code does not need DGL: models read adjacency
straight from a :class:`~graphrec.snapshot.Snapshot` (``graphrec.adjacency``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphrec import snapshot as snap
from graphrec.compat import import_dgl

REVERSE_PREFIX = "rev_"


@dataclass(frozen=True)
class GraphData:
    """A heterograph plus what must not be inside it: held-out pairs and the id maps."""

    graph: Any  # dgl.DGLHeteroGraph (typed loosely: DGL is imported lazily)
    held_out: dict[str, tuple[np.ndarray, np.ndarray]]  # "valid"/"test" -> (user, item)
    users: snap.IdMap
    items: snap.IdMap
    snapshot: snap.Snapshot


def canonical_etypes(snapshot: snap.Snapshot) -> list[tuple[str, str, str]]:
    out = []
    for name in snapshot.relations:
        out += [("user", name, "item"), ("item", REVERSE_PREFIX + name, "user")]
    return out


def to_heterograph(snapshot: snap.Snapshot):
    """The DGL heterograph of a snapshot: train edges of every relation and their reverses."""
    dgl = import_dgl()
    data = {}
    for name in snapshot.relations:
        u, i = snapshot.train(name)
        u, i = torch.from_numpy(u.astype(np.int32)), torch.from_numpy(i.astype(np.int32))
        data[("user", name, "item")] = (u, i)
        data[("item", REVERSE_PREFIX + name, "user")] = (i, u)
    g = dgl.heterograph(data, num_nodes_dict={"user": snapshot.n_users, "item": snapshot.n_items},
                        idtype=torch.int32)
    validate_graph(g, snapshot)
    return g


def validate_graph(g: Any, snapshot: snap.Snapshot) -> None:
    """The heterograph's node types, etypes and edge counts agree with the snapshot's manifest."""
    if sorted(g.ntypes) != ["item", "user"]:
        raise snap.SnapshotError(f"node types {g.ntypes}, expected ['item', 'user']")
    for ntype, n in (("user", snapshot.n_users), ("item", snapshot.n_items)):
        if g.num_nodes(ntype) != n:
            raise snap.SnapshotError(f"{g.num_nodes(ntype):,} {ntype} nodes in the graph, {n:,} in the id map")
    expected = set(canonical_etypes(snapshot))
    actual = set(g.canonical_etypes)
    if actual != expected:
        extra, missing = sorted(actual - expected), sorted(expected - actual)
        raise snap.SnapshotError(f"graph etypes differ from the snapshot's relations (unknown: {extra}, "
                                 f"missing: {missing}); rebuild it with graphrec.graph.load")
    for name in snapshot.relations:
        n = len(snapshot.train(name)[0])
        for etype in (name, REVERSE_PREFIX + name):
            if g.num_edges(etype) != n:
                raise snap.SnapshotError(f"relation {etype!r}: {g.num_edges(etype):,} edges in the graph, "
                                         f"{n:,} training edges in the snapshot")
            if n == 0:
                raise snap.SnapshotError(f"relation {etype!r} has no training edges")


def load(snapshot: str | Path | snap.Snapshot) -> GraphData:
    """Read (if given a path), validate and convert a snapshot into a heterograph + held-out splits."""
    s = snapshot if isinstance(snapshot, snap.Snapshot) else snap.read(snapshot)
    held_out = {split: s.target.select(split) for split in ("valid", "test")}
    return GraphData(to_heterograph(s), held_out, s.users, s.items, s)


def save_dgl(data: GraphData, path: str | Path) -> Path:
    """Save the heterograph in DGL's binary format, with the held-out splits as graph labels."""
    dgl = import_dgl()
    labels = {}
    for split, (u, i) in data.held_out.items():
        labels[f"{split}_user"] = torch.from_numpy(u.astype(np.int64))
        labels[f"{split}_item"] = torch.from_numpy(i.astype(np.int64))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dgl.save_graphs(str(path), [data.graph], labels)
    return path

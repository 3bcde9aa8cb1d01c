"""Shared fixtures: tiny hand-written datasets with known answers, and a real Neo4j server.

The server is the managed one, started once per test session in a temporary home (or the server
named by NEO4J_URI). There are no mocks of the database.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graphrec import snapshot as snap
from graphrec.progress import Progress
from graphrec.schema import Behaviors

# The tiny long-format log. Timestamps make the split deterministic under split.test=last:
#   u1 buys a(6), b(7), d(8) → test d, valid b, train a
#   u2 buys c(4), a(5)       → test a, train c (only one left, so no valid)
#   u3 buys nothing
# u1 views a twice (ts 1 and 9) → one VIEW relationship with count 2 and ts 1.
TINY_CSV = """user,item,behavior,timestamp
u1,a,view,1
u1,b,view,2
u1,c,view,3
u1,a,cart,4
u1,b,cart,5
u1,a,buy,6
u1,b,buy,7
u1,d,buy,8
u1,a,pv,9
u2,a,view,1
u2,c,view,2
u2,c,cart,3
u2,c,buy,4
u2,a,buy,5
u3,b,view,1
u3,b,cart,2
u3,c,cart,3
"""

# Hand-computed from the log above, with train purchases only on the "not" side.
TINY_EXPECTED_DERIVED = {
    # view − cart
    "VIEW_NOT_CART": {("u1", "c", None), ("u2", "a", None)},
    # view − buy(train = {u1:a, u2:c}); b of u1 is the valid purchase, a of u2 the test purchase
    "VIEW_NOT_BUY": {("u1", "b", "valid"), ("u1", "c", None), ("u2", "a", "test"), ("u3", "b", None)},
    # cart − buy(train)
    "CART_NOT_BUY": {("u1", "b", "valid"), ("u3", "b", None), ("u3", "c", None)},
}
TINY_EXPECTED_COUNTS = {
    "users": 3, "items": 4, "VIEW": 6, "CART": 5, "BUY": 5,
    "BUY:train": 2, "BUY:valid": 1, "BUY:test": 2,
    "VIEW_NOT_CART": 2, "VIEW_NOT_BUY": 4, "CART_NOT_BUY": 3,
}

# A tiny per-user text folder (GHCF/HPMR layout): cart.txt, train.txt, test.txt.
TINY_FOLDER = {
    "cart.txt": "0 1 2 3\n1 0 2\n2 3\n",
    "train.txt": "0 1 2\n1 0\n2 3\n",
    "test.txt": "0 3\n1 2\n2 1\n",
}


def cli_commands(leaves_only: bool = False) -> list[tuple[str, ...]]:
    """Every command path of graphrec's CLI, found by walking its parser (e.g. ("datasets", "fetch"));
    with ``leaves_only`` just the runnable ones (not ("datasets",))."""
    import argparse

    from graphrec.cli import build_parser

    def subcommands(parser):
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return [item for a in actions for item in a.choices.items()]

    def walk(parser, prefix):
        for name, sub in subcommands(parser):
            path = prefix + (name,)
            if not leaves_only or not subcommands(sub):
                yield path
            yield from walk(sub, path)

    return list(walk(build_parser(), ()))


def tiny_snapshot() -> snap.Snapshot:
    """3 users, 4 items; cart → buy. u0 buys i0 (train), i1 (test); u1 buys i2 (train); u2 buys i3 (train)."""
    return snap.build(
        "tiny", Behaviors(("cart", "buy")), ["u0", "u1", "u2"], ["i0", "i1", "i2", "i3"],
        {
            "cart": {"user": [0, 0, 1, 2, 2], "item": [1, 0, 2, 3, 0], "ts": [5, 4, 3, 2, snap.NO_TS]},
            "buy": {"user": [0, 0, 1, 2], "item": [0, 1, 2, 3], "split": [0, 2, 0, 0]},
            "cart_not_buy": {"user": [0, 2], "item": [1, 0], "holdout": [2, snap.NO_HOLDOUT]},
        },
    )


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors: more threads only add synchronization,
    which made every step ~60x slower on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.csv"
    p.write_text(TINY_CSV)
    return p


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    d = tmp_path / "tinyfolder"
    d.mkdir()
    for name, text in TINY_FOLDER.items():
        (d / name).write_text(text)
    return d


@pytest.fixture
def dataset_name(request: pytest.FixtureRequest) -> str:
    """A dataset name unique to the test, so tests sharing one database never collide."""
    return "t_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]


class Neo4jHandle:
    def __init__(self, driver, home: Path, uri: str | None):
        self.driver, self.home, self.uri = driver, home, uri

    def cli_args(self) -> list[str]:
        """Global + connection arguments that point the CLI at this server."""
        return ["--home", str(self.home)]

    def conn_args(self) -> list[str]:
        return ["--uri", self.uri] if self.uri else []


@pytest.fixture(scope="session")
def neo4j_server(tmp_path_factory: pytest.TempPathFactory):
    from graphrec.neo4j import connection, server

    uri = os.environ.get("NEO4J_URI")
    home = tmp_path_factory.mktemp("graphrec-home")
    if uri is None and not server.is_installed():
        pytest.fail("the Neo4j runtime is not built: run `make setup` (or `graphrec neo4j install`) first")
    driver = connection.connect(connection.resolve(uri=uri, home=home), log=lambda s: None)
    yield Neo4jHandle(driver, home, uri)
    driver.close()
    if uri is None:
        server.stop(home)


@pytest.fixture
def neo4j_db(neo4j_server: Neo4jHandle, dataset_name: str):
    """The session server, with this test's dataset removed afterwards."""
    yield neo4j_server
    from graphrec.ingest.load import delete_dataset

    for suffix in ("", "_b"):
        delete_dataset(neo4j_server.driver, dataset_name + suffix)


def synthetic_log(path, n_events=6000, seed=3):
    """A seeded 3-behavior log with timestamps, repeats, a cascade, and ids that need CSV quoting."""
    rng = np.random.default_rng(seed)
    users = np.array([f"u{k}" for k in range(300)] + ['u,"q"', "u x", "ü"], dtype=object)
    items = np.array([f"i{k}" for k in range(250)] + ['i"1', "i,2"], dtype=object)
    u = users[rng.integers(0, len(users), n_events)]
    i = items[np.minimum(rng.zipf(1.3, n_events) - 1, len(items) - 1)]
    stage = rng.choice(3, n_events, p=[0.7, 0.2, 0.1])
    rows = pd.DataFrame({"user": u, "item": i, "behavior": np.array(["view", "cart", "buy"])[stage],
                         "timestamp": rng.integers(1_600_000_000, 1_600_100_000, n_events)})
    # the upstream steps of most carts and buys, so the derived relations are neither empty nor everything
    up = rows[rows["behavior"] != "view"].sample(frac=0.8, random_state=seed).assign(behavior="view")
    pd.concat([rows, up]).to_csv(path, index=False)
    return path


def graph_of(driver, name):
    """A dataset's nodes (labels, id) and edges (user, type, item, properties) as sets."""
    with driver.session() as s:
        nodes = {(tuple(r["l"]), r["id"]) for r in s.run(
            "MATCH (n {dataset: $ds}) RETURN labels(n) AS l, n.id AS id", ds=name)}
        edges = {(r["u"], r["t"], r["i"], tuple(sorted(r["p"].items()))) for r in s.run(
            "MATCH (u:User {dataset: $ds})-[r]->(i:Item) RETURN u.id AS u, type(r) AS t, i.id AS i, "
            "properties(r) AS p", ds=name)}
    return nodes, edges


class KilledAfterFirstStep(Progress):
    """A process killed after the first bounded step (one transaction) of a phase: of every phase, or
    only of the phase named ``phase``."""

    def __init__(self, phase: str | None = None):
        super().__init__(stream=None)
        self.target = phase

    def phase(self, name, total=None, unit="rows"):
        ph = super().phase(name, total, unit)
        if self.target is None or name == self.target:
            advance = ph.advance

            def then_die(n):
                advance(n)
                raise KeyboardInterrupt

            ph.advance = then_die
        return ph

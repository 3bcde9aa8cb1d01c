"""Bulk ingest (Neo4j's offline importer into the managed server): the same graph as the Cypher
path, resumable after a kill at every step, and a store swap that a crash cannot leave half done."""

import os

import numpy as np
import pytest
from conftest import graph_of, synthetic_log

from graphrec.config import SplitConfig
from graphrec.ingest import bulk, load
from graphrec.ingest.readers import read_source
from graphrec.neo4j import connection, server

NEEDS_MANAGED = pytest.mark.skipif(os.environ.get("NEO4J_URI") is not None,
                                   reason="bulk ingest writes the managed server's store; NEO4J_URI points elsewhere")


def _prepared(path, name):
    return load.prepare(read_source(path), name, SplitConfig())


@pytest.fixture(scope="module")
def bulk_home(tmp_path_factory):
    if not server.is_installed():
        pytest.fail("the Neo4j runtime is not built: run `make setup` (or `graphrec neo4j install`) first")
    home = tmp_path_factory.mktemp("bulk-home")
    yield home
    server.stop(home)


def _driver(home):
    return connection.connect(connection.resolve(home=home), log=lambda s: None)


@NEEDS_MANAGED
@pytest.mark.neo4j
def test_bulk_and_cypher_paths_build_the_samegraph_of(neo4j_db, bulk_home, tmp_path, dataset_name):
    path = synthetic_log(tmp_path / "log.csv")
    prepared = _prepared(path, dataset_name)
    via_cypher = load.ingest(neo4j_db.driver, prepared)
    via_bulk = bulk.bulk_ingest(prepared, bulk_home, replace=True)
    assert via_bulk.counts == via_cypher.counts == prepared.expected
    driver = _driver(bulk_home)
    try:
        cypher_graph, bulk_graph = graph_of(neo4j_db.driver, dataset_name), graph_of(driver, dataset_name)
        state = load.dataset_state(driver, dataset_name)
        load.delete_dataset(driver, dataset_name)  # the store is the next test's again
    finally:
        driver.close()
    assert len(cypher_graph[1]) > 8000 and {e[1] for e in cypher_graph[1]} == {
        "VIEW", "CART", "BUY", "VIEW_NOT_CART", "VIEW_NOT_BUY", "CART_NOT_BUY"}
    assert any(dict(e[3]).get("holdout") == "test" for e in cypher_graph[1])  # the holdout marks are compared too
    assert any("count" in dict(e[3]) for e in cypher_graph[1])
    assert bulk_graph == cypher_graph
    assert state["status"] == "complete" and state["loader"] == "bulk"
    assert state["behaviors"] == ["view", "cart", "buy"] and state["phases_done"][-1] == "derived:CART_NOT_BUY"


@NEEDS_MANAGED
@pytest.mark.neo4j
def test_a_killed_bulk_load_leaves_the_store_whole_and_a_rerun_finishes_it(bulk_home, tmp_path, tiny_csv):
    name = "bulk_kill"
    first = synthetic_log(tmp_path / "a.csv", n_events=800, seed=1)
    second = synthetic_log(tmp_path / "b.csv", n_events=1200, seed=2)
    a = bulk.bulk_ingest(_prepared(first, name), bulk_home, replace=True)
    assert a.outcome in ("loaded", "resumed")
    # the same input again: nothing to do
    assert bulk.bulk_ingest(_prepared(first, name), bulk_home).outcome == "unchanged"
    # different input without --replace is refused, and so is a second dataset in this store
    with pytest.raises(load.DatasetConflict, match="--replace"):
        bulk.bulk_ingest(_prepared(second, name), bulk_home)
    with pytest.raises(bulk.BulkRefused, match="'bulk_kill'.*graphrec drop"):
        bulk.bulk_ingest(_prepared(tiny_csv, "bulk_other"), bulk_home)

    def die_after(phase):
        def hook(p):
            if p == phase:
                raise KeyboardInterrupt
        return hook

    b = _prepared(second, name)
    for phase in ("files", "import"):
        with pytest.raises(KeyboardInterrupt):
            bulk.bulk_ingest(b, bulk_home, replace=True, after_phase=die_after(phase))
        driver = _driver(bulk_home)  # killed before the swap: the old dataset, complete and unchanged
        try:
            assert load.dataset_state(driver, name)["status"] == "complete"
            assert load.count_dataset(driver, name, b.behaviors) == a.counts
        finally:
            driver.close()
    with pytest.raises(KeyboardInterrupt):
        bulk.bulk_ingest(b, bulk_home, replace=True, after_phase=die_after("swap"))
    driver = _driver(bulk_home)  # killed after the swap: the new store, never marked complete
    try:
        assert load.dataset_state(driver, name)["status"] == "loading"
    finally:
        driver.close()
    again = bulk.bulk_ingest(b, bulk_home)
    assert again.outcome == "resumed" and again.counts == b.expected
    driver = _driver(bulk_home)
    try:
        assert load.count_dataset(driver, name, b.behaviors) == b.expected
        assert load.dataset_state(driver, name)["status"] == "complete"
    finally:
        driver.close()


@NEEDS_MANAGED
@pytest.mark.neo4j
def test_a_derived_relation_that_differs_from_its_cypher_definition_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    prepared = _prepared(synthetic_log(tmp_path / "c.csv", n_events=600, seed=4), "bulk_wrong")
    real = bulk.derive

    def off_by_one(up_u, up_i, down_u, down_i, n_items):
        keep = real(up_u, up_i, down_u, down_i, n_items)
        k, j = np.flatnonzero(keep)[0], np.flatnonzero(~keep)[0]
        keep[k], keep[j] = False, True  # one edge swapped for another: every count stays right
        return keep

    monkeypatch.setattr(bulk, "derive", off_by_one)
    try:
        with pytest.raises(load.IntegrityError, match="VIEW_NOT_CART against its Cypher definition"):
            bulk.bulk_ingest(prepared, home, after_phase=lambda p: None)
        driver = _driver(home)
        try:
            assert load.dataset_state(driver, "bulk_wrong")["status"] == "loading"
        finally:
            driver.close()
    finally:
        server.stop(home)


def _fake_store(root, tag):
    for part in server.STORE_PARTS:
        (root / part / server.DATABASE).mkdir(parents=True)
        (root / part / server.DATABASE / "f").write_text(tag)


def _store_tags(home):
    root = server.server_dir(home) / "data" / "data"
    return {(root / p / server.DATABASE / "f").read_text() for p in server.STORE_PARTS
            if (root / p / server.DATABASE).exists()}


@pytest.mark.parametrize("fail_at", range(4))
def test_a_store_swap_killed_at_any_rename_is_undone_whole(tmp_path, monkeypatch, fail_at):
    home = tmp_path / "home"
    _fake_store(server.server_dir(home) / "data" / "data", "old")
    staged = tmp_path / "staged"
    _fake_store(staged, "new")
    real_rename, calls = os.rename, []

    def rename(a, b):
        if len(calls) == fail_at:
            raise KeyboardInterrupt
        calls.append(a)
        real_rename(a, b)

    monkeypatch.setattr(server.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        server.swap_in_store(home, staged)
    monkeypatch.setattr(server.os, "rename", real_rename)
    assert server.recover_store_swap(home) == "undone"
    assert _store_tags(home) == {"old"} and len(list((server.server_dir(home) / "data/data").rglob("f"))) == 2
    assert not (server.server_dir(home) / "store-swap").exists()


def test_a_store_swap_killed_after_its_mark_is_finished(tmp_path, monkeypatch):
    home = tmp_path / "home"
    _fake_store(server.server_dir(home) / "data" / "data", "old")
    staged = tmp_path / "staged"
    _fake_store(staged, "new")
    real_rmtree = server.shutil.rmtree

    def die(path, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(server.shutil, "rmtree", die)
    with pytest.raises(KeyboardInterrupt):
        server.swap_in_store(home, staged)
    monkeypatch.setattr(server.shutil, "rmtree", real_rmtree)
    assert server.recover_store_swap(home) == "finished"
    assert _store_tags(home) == {"new"}
    # an empty home (no store yet) takes the new store too
    fresh = tmp_path / "fresh"
    _fake_store(tmp_path / "staged2", "new2")
    server.swap_in_store(fresh, tmp_path / "staged2")
    assert _store_tags(fresh) == {"new2"}


def test_bulk_with_a_uri_is_refused_before_reading(tiny_csv, capsys, tmp_path):
    from graphrec.cli import main

    code = main(["--home", str(tmp_path), "ingest", "--dataset", "x", "--source", str(tiny_csv), "--bulk",
                 "--uri", "bolt://db.example:7687"])
    err = capsys.readouterr().err
    assert code == 2 and "--bulk" in err and "drop --bulk" in err and "db.example:7687" in err


@pytest.mark.neo4j
@pytest.mark.parametrize("valid", [False, True])
def test_a_snapshot_built_from_the_log_is_the_exported_one(neo4j_db, tmp_path, dataset_name, valid):
    from graphrec.export import export_dataset

    prepared = load.prepare(read_source(synthetic_log(tmp_path / "log.csv")), dataset_name,
                            SplitConfig(valid=valid))
    load.ingest(neo4j_db.driver, prepared)
    exported = export_dataset(neo4j_db.driver, dataset_name, tmp_path / "exported").snapshot
    built = bulk.snapshot_of(prepared)
    assert list(built.users.keys) == list(exported.users.keys) and list(built.items.keys) == list(exported.items.keys)
    assert built.relations.keys() == exported.relations.keys()
    for name, rel in exported.relations.items():
        got = built.relations[name].columns()
        assert got.keys() == rel.columns().keys(), name
        for col, values in rel.columns().items():
            np.testing.assert_array_equal(got[col], values, err_msg=f"{name}.{col}")
    holdouts = exported.relations["cart_not_buy"].split_counts()
    assert holdouts.get("test", 0) > 0 and (holdouts.get("valid", 0) > 0) == valid  # the marks are compared
    assert "ts" in exported.relations["view"].columns() and "count" in exported.relations["view"].columns()

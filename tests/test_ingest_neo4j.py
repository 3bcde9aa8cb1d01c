"""Ingest into the real Neo4j: known derived edge sets, count round trip, idempotence, failures."""

import pytest
from conftest import TINY_EXPECTED_COUNTS, TINY_EXPECTED_DERIVED, KilledAfterFirstStep

from graphrec.config import SplitConfig
from graphrec.ingest import load
from graphrec.ingest.readers import read_source
from graphrec.neo4j import connection, server

pytestmark = pytest.mark.neo4j


def _ingest(driver, path, name, **kw):
    prepared = load.prepare(read_source(path), name, SplitConfig())
    return load.ingest(driver, prepared, **kw)


def _edges(driver, name, rtype):
    with driver.session() as s:
        rows = s.run("MATCH (u:User {dataset: $ds})-[r]->(i:Item) WHERE type(r) = $t "
                     "RETURN u.id AS u, i.id AS i, r.holdout AS h, r.split AS s, r.ts AS ts, r.count AS c",
                     ds=name, t=rtype).data()
    return rows


def test_tiny_dataset_derived_edges_are_the_hand_computed_sets(neo4j_db, tiny_csv, dataset_name):
    report = _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    assert report.outcome == "loaded"
    for rtype, expected in TINY_EXPECTED_DERIVED.items():
        got = {(r["u"], r["i"], r["h"]) for r in _edges(neo4j_db.driver, dataset_name, rtype)}
        assert got == expected, rtype
    buys = {(r["u"], r["i"]): r["s"] for r in _edges(neo4j_db.driver, dataset_name, "BUY")}
    assert buys == {("u1", "a"): "train", ("u1", "b"): "valid", ("u1", "d"): "test",
                    ("u2", "c"): "train", ("u2", "a"): "test"}
    views = {(r["u"], r["i"]): (r["ts"], r["c"]) for r in _edges(neo4j_db.driver, dataset_name, "VIEW")}
    assert views[("u1", "a")] == (1, 2) and views[("u1", "b")] == (2, None)


def test_counts_round_trip_and_status(neo4j_db, tiny_csv, dataset_name):
    report = _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    assert report.counts == TINY_EXPECTED_COUNTS
    state = load.dataset_state(neo4j_db.driver, dataset_name)
    assert state["status"] == "complete" and state["behaviors"] == ["view", "cart", "buy"]
    assert state["split_method"] == "last"


def test_reingest_is_idempotent_and_replace_rebuilds(neo4j_db, tiny_csv, dataset_name):
    first = _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    again = _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    assert again.outcome == "unchanged" and again.counts == first.counts
    rebuilt = _ingest(neo4j_db.driver, tiny_csv, dataset_name, replace=True)
    assert rebuilt.outcome == "loaded"
    assert load.count_dataset(neo4j_db.driver, dataset_name, read_source(tiny_csv).behaviors) == first.counts


def test_an_interrupted_delete_is_visible_and_finished_by_a_rerun(neo4j_db, tiny_csv, dataset_name):
    driver = neo4j_db.driver
    behaviors = read_source(tiny_csv).behaviors
    _ingest(driver, tiny_csv, dataset_name)
    with pytest.raises(KeyboardInterrupt):
        load.delete_dataset(driver, dataset_name, progress=KilledAfterFirstStep())
    # never "complete" with nodes missing: the record says the delete is under way
    assert load.dataset_state(driver, dataset_name)["status"] == load.DELETING
    assert load.count_dataset(driver, dataset_name, behaviors)["users"] == 0
    # ingesting the same input again finishes the delete and loads it whole (not "unchanged")
    again = _ingest(driver, tiny_csv, dataset_name)
    assert again.outcome == "loaded" and again.counts == TINY_EXPECTED_COUNTS
    assert load.dataset_state(driver, dataset_name)["status"] == "complete"
    # an interrupted drop, run again, removes everything
    with pytest.raises(KeyboardInterrupt):
        load.delete_dataset(driver, dataset_name, progress=KilledAfterFirstStep())
    load.delete_dataset(driver, dataset_name)
    assert load.dataset_state(driver, dataset_name) is None
    assert load.count_dataset(driver, dataset_name, behaviors)["items"] == 0


def test_different_data_under_the_same_name_needs_replace(neo4j_db, tiny_csv, tiny_folder, dataset_name):
    _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    with pytest.raises(load.DatasetConflict, match="--replace"):
        _ingest(neo4j_db.driver, tiny_folder, dataset_name)
    assert load.dataset_state(neo4j_db.driver, dataset_name)["status"] == "complete"


def test_datasets_coexist(neo4j_db, tiny_csv, tiny_folder, dataset_name):
    a = _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    b = _ingest(neo4j_db.driver, tiny_folder, dataset_name + "_b")
    # folder: users 0,1,2; items 0..3; cart 6; buy 7 = 4 train... split from test.txt + one valid per user with ≥2 train
    assert b.counts["users"] == 3 and b.counts["CART"] == 6 and b.counts["BUY"] == 7
    assert b.counts["BUY:test"] == 3 and b.counts["BUY:valid"] == 1 and b.counts["BUY:train"] == 3
    assert load.count_dataset(neo4j_db.driver, dataset_name, read_source(tiny_csv).behaviors) == a.counts


def test_bad_input_via_cli_exits_nonzero_and_writes_nothing(neo4j_db, tiny_csv, dataset_name, capsys):
    from graphrec.cli import main

    tiny_csv.write_text(tiny_csv.read_text() + "u9,z,teleport,1\n")
    code = main(neo4j_db.cli_args() + ["ingest", "--dataset", dataset_name, "--source", str(tiny_csv)]
                + neo4j_db.conn_args())
    err = capsys.readouterr().err
    assert code == 2
    assert f"{tiny_csv}:19:" in err and "'teleport'" in err and "fix:" in err
    assert load.dataset_state(neo4j_db.driver, dataset_name) is None
    with neo4j_db.driver.session() as s:
        assert s.run("MATCH (n {dataset: $ds}) RETURN count(n) AS n", ds=dataset_name).single()["n"] == 0


def test_skip_bad_rows_via_cli_writes_rejects_and_loads_the_rest(neo4j_db, tiny_csv, dataset_name, tmp_path, capsys):
    from graphrec.cli import main

    tiny_csv.write_text(tiny_csv.read_text() + "u9,z,teleport,1\n,z,buy,1\n")
    rejects = tmp_path / "rej.tsv"
    code = main(neo4j_db.cli_args() + ["ingest", "--dataset", dataset_name, "--source", str(tiny_csv),
                                       "--skip-bad-rows", "--rejects", str(rejects)] + neo4j_db.conn_args())
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "rejected rows: 2" in out.out
    assert rejects.read_text().splitlines()[1:] == [
        f"{tiny_csv}\t19\tteleport\tunknown behavior (this dataset's behaviors: view, cart, buy)",
        f"{tiny_csv}\t20\t\tempty user id"]
    assert load.dataset_state(neo4j_db.driver, dataset_name)["status"] == "complete"


def test_server_listens_on_loopback_only(neo4j_server):
    if neo4j_server.uri:
        pytest.skip("NEO4J_URI points at an external server; only the managed one is checked")
    info = server.status(neo4j_server.home)
    addrs = server.listening_addresses(info.pid)
    assert addrs, "the server should listen for Bolt"
    assert {a for a, _ in addrs} <= {"127.0.0.1", "::ffff:127.0.0.1"}, addrs
    assert {p for _, p in addrs} == {info.port}
    # a second start reuses the running server
    assert server.start(neo4j_server.home, log=lambda s: None).pid == info.pid


@pytest.mark.skipif(bool(__import__("os").environ.get("NEO4J_URI")), reason="kills the managed server")
@pytest.mark.parametrize("kill_after", ["rel:CART", "derived:VIEW_NOT_CART"])
def test_killed_server_mid_ingest_resumes_to_identical_counts(tmp_path, tiny_csv, kill_after):
    """SIGKILL the server between phases; the dataset stays 'loading'; re-running completes it."""
    home = tmp_path / "home"
    target = connection.resolve(home=home)
    name = "crash"
    driver = connection.connect(target, log=lambda s: None)
    try:
        def crash(phase):
            if phase == kill_after:
                server.stop(home, kill=True)

        with pytest.raises(Exception):
            _ingest(driver, tiny_csv, name, after_phase=crash)
    finally:
        driver.close()
    driver = connection.connect(target, log=lambda s: None)  # restarts; Neo4j recovers from its tx log
    try:
        state = load.dataset_state(driver, name)
        assert state["status"] == "loading" and kill_after in state["phases_done"]
        report = _ingest(driver, tiny_csv, name)
        assert report.outcome == "resumed"
        assert report.counts == TINY_EXPECTED_COUNTS
        for rtype, expected in TINY_EXPECTED_DERIVED.items():
            assert {(r["u"], r["i"], r["h"]) for r in _edges(driver, name, rtype)} == expected
    finally:
        driver.close()
        server.stop(home)


@pytest.mark.skipif(bool(__import__("os").environ.get("NEO4J_URI")), reason="kills the managed server")
def test_partial_phase_is_redone_not_duplicated(neo4j_db, tiny_csv, dataset_name):
    """A phase that crashed half-way (edges written, not marked done) is cleared and rewritten."""
    prepared = load.prepare(read_source(tiny_csv), dataset_name, SplitConfig())

    class Stop(Exception):
        pass

    def stop(phase):
        if phase == "rel:VIEW":
            raise Stop

    with pytest.raises(Stop):
        load.ingest(neo4j_db.driver, prepared, after_phase=stop)
    with neo4j_db.driver.session() as s:  # simulate the CART phase having written part of its edges
        s.run("MATCH (u:User {dataset: $ds, id: 'u1'}), (i:Item {dataset: $ds, id: 'a'}) CREATE (u)-[:CART]->(i)",
              ds=dataset_name).consume()
        s.run("MATCH (d:Dataset {name: $ds}) "
              "SET d.phases_done = [p IN d.phases_done WHERE p <> 'rel:VIEW'] + 'rel:VIEW'",
              ds=dataset_name).consume()
    report = load.ingest(neo4j_db.driver, prepared)
    assert report.outcome == "resumed" and report.counts == TINY_EXPECTED_COUNTS


def test_the_managed_servers_files_are_private(neo4j_server):
    """No authentication on the managed server, so nobody but its user may reach its files."""
    import stat

    if neo4j_server.uri:
        pytest.skip("NEO4J_URI names a server graphrec does not manage")
    home = neo4j_server.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    shared = [p for p in (home / "neo4j").rglob("*")
              if not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert not shared, shared[:5]


def test_concurrent_ingests_and_drops_on_one_server_all_finish(neo4j_db, tiny_csv, tiny_folder, dataset_name):
    """Two ingests and a drop at once, three rounds: each one completes (transient errors such as
    Transaction.Outdated are retried) with the counts it would have alone."""
    import threading

    driver, errors = neo4j_db.driver, []
    _ingest(driver, tiny_folder, dataset_name + "_b")

    def work(fn):
        try:
            fn()
        except Exception as exc:  # collected: the assertion below names them
            errors.append(repr(exc))

    for _ in range(3):
        jobs = [lambda: _ingest(driver, tiny_csv, dataset_name, replace=True),
                lambda: load.delete_dataset(driver, dataset_name + "_b"),
                lambda: _ingest(driver, tiny_folder, dataset_name + "_b")]
        threads = [threading.Thread(target=work, args=(j,)) for j in jobs[:2]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        work(jobs[2])
    assert not errors, errors
    assert load.count_dataset(driver, dataset_name, read_source(tiny_csv).behaviors) == TINY_EXPECTED_COUNTS
    assert load.dataset_state(driver, dataset_name + "_b")["status"] == "complete"


def test_a_server_that_is_gone_is_one_line_saying_how_to_resume(tiny_csv):
    from neo4j import GraphDatabase

    driver = GraphDatabase.driver("bolt://127.0.0.1:1", connection_timeout=2, max_transaction_retry_time=1)
    try:
        with pytest.raises(load.ServerLost, match="went away during the ingest of 'gone'.*run the same command again"):
            _ingest(driver, tiny_csv, "gone")
        with pytest.raises(load.ServerLost, match="during the delete of 'gone'"):
            load.delete_dataset(driver, "gone")
    finally:
        driver.close()

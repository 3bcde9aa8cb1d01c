"""Appending events to a complete dataset (real Neo4j): two halves equal one ingest of the whole,
the same part twice is a no-op, a killed append resumes to the same graph, bad rows change nothing."""

import pandas as pd
import pytest
from conftest import KilledAfterFirstStep, graph_of, synthetic_log

from graphrec.config import SplitConfig
from graphrec.errors import BadValue
from graphrec.ingest import append, load
from graphrec.ingest.readers import read_source

pytestmark = pytest.mark.neo4j

# A test file fixes the test split and no validation purchase is drawn, so one ingest of the whole
# assigns exactly the splits that the first half's ingest plus an append (new purchases: train) do.
SPLIT = SplitConfig(test="file", valid=False)
BEHAVIORS = ["view", "cart", "buy"]


@pytest.fixture
def halves(tmp_path):
    log = pd.read_csv(synthetic_log(tmp_path / "whole.csv", n_events=2500, seed=7))
    log = log.sample(frac=1.0, random_state=7).reset_index(drop=True)  # repeats of a pair land in both halves
    buys = log[log["behavior"] == "buy"].drop_duplicates(["user"])
    test = buys.iloc[:60][["user", "item", "timestamp"]]
    log = log.merge(test[["user", "item"]].assign(behavior="buy"), how="left", indicator=True)
    log = log[log.pop("_merge") == "left_only"]  # a test purchase is only in the test file
    paths = {}
    for name, part in (("whole", log), ("a", log.iloc[: len(log) // 2]), ("b", log.iloc[len(log) // 2:])):
        paths[name] = tmp_path / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    paths["test"] = tmp_path / "test.csv"
    test.to_csv(paths["test"], index=False)
    return paths


def _ingest(driver, paths, part, name):
    return load.ingest(driver, load.prepare(read_source(paths[part], behaviors=BEHAVIORS, test_file=paths["test"]),
                                            name, SPLIT))


def _append(driver, path, name, **kw):
    return append.append(driver, name, read_source(path, behaviors=BEHAVIORS), **kw)


def test_two_halves_equal_one_ingest_of_the_whole_and_a_second_append_is_a_no_op(neo4j_db, halves, dataset_name):
    driver, whole = neo4j_db.driver, dataset_name + "_b"
    one = _ingest(driver, halves, "whole", whole)
    first = _ingest(driver, halves, "a", dataset_name)
    assert first.counts != one.counts
    report = _append(driver, halves["b"], dataset_name)
    assert report.outcome == "loaded" and report.counts == one.counts
    got, want = graph_of(driver, dataset_name), graph_of(driver, whole)
    assert any(dict(e[3]).get("count", 1) > 1 for e in want[1]) and any(
        dict(e[3]).get("holdout") == "test" for e in want[1])
    assert got == want
    state = load.dataset_state(driver, dataset_name)
    assert state["status"] == "complete" and len(state["appends"]) == 1 and "append_phases" not in state
    again = _append(driver, halves["b"], dataset_name)
    assert again.outcome == "unchanged" and graph_of(driver, dataset_name) == want


def test_a_killed_append_resumes_without_counting_anything_twice(neo4j_db, halves, dataset_name):
    driver, whole = neo4j_db.driver, dataset_name + "_b"
    _ingest(driver, halves, "whole", whole)
    _ingest(driver, halves, "a", dataset_name)
    with pytest.raises(KeyboardInterrupt):
        _append(driver, halves["b"], dataset_name, batch_rows=40, progress=KilledAfterFirstStep("append :BUY"))
    state = load.dataset_state(driver, dataset_name)
    assert state["status"] == append.APPENDING and state["append_phases"] == ["rel:VIEW", "rel:CART"]
    # another part cannot start in the middle of this one
    with pytest.raises(BadValue, match="another append"):
        _append(driver, halves["test"].with_name("a.csv"), dataset_name)
    resumed = _append(driver, halves["b"], dataset_name, batch_rows=40)
    assert resumed.outcome == "resumed"
    assert graph_of(driver, dataset_name) == graph_of(driver, whole)


def test_bad_rows_in_an_appended_file_change_nothing(neo4j_db, halves, dataset_name, capsys):
    from graphrec.cli import main

    driver = neo4j_db.driver
    _ingest(driver, halves, "a", dataset_name)
    before = graph_of(driver, dataset_name)
    bad = halves["b"].read_text().splitlines()
    bad.insert(5, "u1,i1,teleport,1600000000")
    halves["b"].write_text("\n".join(bad) + "\n")
    code = main(neo4j_db.cli_args() + ["ingest", "--dataset", dataset_name, "--source", str(halves["b"]),
                                       "--append"] + neo4j_db.conn_args())
    err = capsys.readouterr().err
    assert code == 2 and f"{halves['b']}:6:" in err and "'teleport'" in err
    assert graph_of(driver, dataset_name) == before
    assert load.dataset_state(driver, dataset_name)["status"] == "complete"
    # an unknown dataset is refused with the fix
    code = main(neo4j_db.cli_args() + ["ingest", "--dataset", dataset_name + "_none", "--source",
                                       str(halves["b"]), "--append"] + neo4j_db.conn_args())
    assert code == 2 and "ingest it first without --append" in capsys.readouterr().err


def test_appended_purchases_can_open_a_new_test_window(neo4j_db, halves, dataset_name):
    driver = neo4j_db.driver
    first = _ingest(driver, halves, "a", dataset_name)
    before = {(e[0], e[2]): dict(e[3]) for e in graph_of(driver, dataset_name)[1] if e[1] == "BUY"}
    report = _append(driver, halves["b"], dataset_name, split="test")
    after = {(e[0], e[2]): dict(e[3]) for e in graph_of(driver, dataset_name)[1] if e[1] == "BUY"}
    new = set(after) - set(before)
    assert new and all(after[k]["split"] == "test" for k in new)
    assert all(after[k]["split"] == before[k]["split"] for k in before)  # stored splits never change
    assert report.counts["BUY:test"] == first.counts["BUY:test"] + len(new)
    assert report.counts["BUY:train"] == first.counts["BUY:train"]
    # a new test purchase removes nothing from the training relations: it is marked on the derived edge instead
    derived = {(e[0], e[2]): dict(e[3]) for e in graph_of(driver, dataset_name)[1] if e[1] == "VIEW_NOT_BUY"}
    viewed_new = [k for k in new if k in derived]
    assert viewed_new and all(derived[k].get("holdout") == "test" for k in viewed_new)
    with pytest.raises(BadValue, match="train or to test"):
        _append(driver, halves["b"], dataset_name, split="valid")

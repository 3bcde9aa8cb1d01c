"""Raw logs as they come, through the real Neo4j: behavior-value maps, hour-resolution times and
repeated events (Tianchi), a separate file of test purchases (Retailrocket), behavior names of
the user's own, and a bad name refused with the rule before anything is written."""

from pathlib import Path

import pytest

from graphrec import datasets
from graphrec.cli import main
from graphrec.ingest import load

pytestmark = pytest.mark.neo4j

ROOT = Path(__file__).resolve().parents[1]
_T, _R = datasets.locate("tianchi_sample"), datasets.locate("retailrocket")
TIANCHI = (_T[0] if _T else ROOT / "absent") / "user_behavior.csv"
RETAILROCKET = _R[0] if _R else ROOT / "absent"

# A raw log in Tianchi's shape: its own column names, behavior codes, hour-resolution times, a
# repeated (user, item, behavior) and an unused column.
RAW = """user_id,item_id,behavior_type,user_geohash,time
7,100,1,,2014-12-06 02
7,100,1,x1,2014-12-05 23
7,100,3,,2014-12-06 03
7,101,1,,2014-12-06 04
7,100,4,,2014-12-06 05
7,101,4,,2014-12-07 10
8,101,2,,2014-12-01 00
8,100,4,,2014-12-02 00
"""


def _ingest(neo4j_db, dataset, *args):
    return main(neo4j_db.cli_args() + ["ingest", "--dataset", dataset, *args] + neo4j_db.conn_args())


def _edges(driver, name, rtype):
    with driver.session() as s:
        return {(r["u"], r["i"]): (r["s"], r["ts"], r["c"]) for r in s.run(
            "MATCH (u:User {dataset: $ds})-[r]->(i:Item) WHERE type(r) = $t "
            "RETURN u.id AS u, i.id AS i, r.split AS s, r.ts AS ts, r.count AS c", ds=name, t=rtype)}


def _counts(neo4j_db, dataset):
    state = load.dataset_state(neo4j_db.driver, dataset)
    from graphrec.schema import Behaviors

    return state, load.count_dataset(neo4j_db.driver, dataset, Behaviors(tuple(state["behaviors"])))


def test_behavior_codes_and_hour_times_round_trip(neo4j_db, dataset_name, tmp_path, capsys):
    log = tmp_path / "raw.csv"
    log.write_text(RAW)
    code = _ingest(neo4j_db, dataset_name, "--source", str(log), "--config", str(ROOT / "configs/tianchi.yaml"))
    assert code == 0, capsys.readouterr().err
    state, counts = _counts(neo4j_db, dataset_name)
    assert state["behaviors"] == ["click", "collect", "cart", "buy"] and state["status"] == "complete"
    # by hand: user 7's latest purchase (101, 2014-12-07 10) is its test one (split.test last); user 8
    # has one purchase, which stays in train; derived relations see train purchases only
    assert counts == {"users": 2, "items": 2, "CLICK": 2, "COLLECT": 1, "CART": 1, "BUY": 3,
                      "BUY:train": 2, "BUY:test": 1,
                      "CLICK_NOT_COLLECT": 2, "CLICK_NOT_CART": 1, "CLICK_NOT_BUY": 1,
                      "COLLECT_NOT_CART": 1, "COLLECT_NOT_BUY": 1}
    clicks = _edges(neo4j_db.driver, dataset_name, "CLICK")
    # two clicks on (7, 100) collapse: count 2, the earlier time (2014-12-05 23:00 UTC)
    assert clicks == {("7", "100"): (None, 1417820400, 2), ("7", "101"): (None, 1417838400, None)}
    buys = _edges(neo4j_db.driver, dataset_name, "BUY")
    assert {k: v[0] for k, v in buys.items()} == {("7", "100"): "train", ("7", "101"): "test", ("8", "100"): "train"}


@pytest.mark.skipif(not TIANCHI.is_file(),
                    reason="tianchi_sample is not on this machine (graphrec datasets fetch tianchi_sample)")
def test_the_raw_tianchi_sample_ingests_with_exact_counts(neo4j_db, capsys):
    """Counted from the file with awk: 1,999 rows, 1,733 distinct (user, item, behavior) triples; 16
    buyers of 34 distinct (user, item) purchases, 10 of them with ≥ 2 (a test one each), 4 with ≥ 3
    (a valid one each). By its registered name: no --source (the registry's file) and no --config
    (the registry's preset, configs/tianchi.yaml)."""
    dataset_name = "tianchi_sample"
    try:
        code = _ingest(neo4j_db, dataset_name)
        err = capsys.readouterr().err
        assert code == 0, err
        assert "configs/tianchi.yaml" in err and f"{TIANCHI.parent} (" in err
        _, counts = _counts(neo4j_db, dataset_name)
        assert {k: counts[k] for k in ("users", "items", "CLICK", "COLLECT", "CART", "BUY", "BUY:train", "BUY:valid",
                                       "BUY:test")} == {"users": 34, "items": 1689, "CLICK": 1614, "COLLECT": 18,
                                                        "CART": 67, "BUY": 34, "BUY:train": 20, "BUY:valid": 4,
                                                        "BUY:test": 10}
        # the most repeated triple: 9 clicks, the first at 2014-12-05 19
        assert _edges(neo4j_db.driver, dataset_name, "CLICK")[("104221274", "170338856")] == (None, 1417806000, 9)
    finally:
        load.delete_dataset(neo4j_db.driver, dataset_name)


# A long-format log with its test purchases in a separate file (Retailrocket's layout).
EVENTS = """user,item,behavior,timestamp
a,1,view,10
a,1,cart,11
a,1,buy,12
a,2,view,20
a,2,buy,21
a,3,view,30
a,3,buy,31
b,2,view,5
b,2,buy,6
"""
TEST = """user,item
a,4
b,3
"""


def test_a_separate_test_file_round_trips_with_a_time_based_valid_split(neo4j_db, dataset_name, tmp_path, capsys):
    (tmp_path / "events.csv").write_text(EVENTS)
    (tmp_path / "test.csv").write_text(TEST)
    code = _ingest(neo4j_db, dataset_name, "--source", str(tmp_path / "events.csv"), "--test",
                   str(tmp_path / "test.csv"), "--config", str(ROOT / "configs/retailrocket.yaml"))
    assert code == 0, capsys.readouterr().err
    state, counts = _counts(neo4j_db, dataset_name)
    assert state["split_method"] == "file"
    assert {k: v for k, v in counts.items() if "_NOT_" not in k} == {
        "users": 2, "items": 4, "VIEW": 4, "CART": 1, "BUY": 6, "BUY:train": 3, "BUY:valid": 1, "BUY:test": 2}
    buys = _edges(neo4j_db.driver, dataset_name, "BUY")
    # the test file's rows are the test split; the valid purchase is a's latest (3, ts 31), not a random one
    assert {k: v[0] for k, v in buys.items()} == {("a", "1"): "train", ("a", "2"): "train", ("a", "3"): "valid",
                                                  ("a", "4"): "test", ("b", "2"): "train", ("b", "3"): "test"}
    assert buys[("a", "4")][1] is None and buys[("a", "1")][1] == 12


@pytest.mark.skipif(not (RETAILROCKET / "events.csv").is_file(),
                    reason="retailrocket is not on this machine ($GRAPHREC_DATA or a mirror)")
def test_retailrocket_with_its_published_test_purchases(neo4j_db, dataset_name, capsys):
    code = _ingest(neo4j_db, dataset_name, "--source", str(RETAILROCKET / "events.csv"), "--test",
                   str(RETAILROCKET / "test.csv"), "--config", str(ROOT / "configs/retailrocket.yaml"))
    assert code == 0, capsys.readouterr().err
    _, counts = _counts(neo4j_db, dataset_name)
    # SOURCE.md: 97,381 events (view 75,374, cart 12,456, buy 9,551) + 2,174 test purchases
    assert {k: counts[k] for k in ("users", "VIEW", "CART", "BUY", "BUY:test")} == {
        "users": 2174, "VIEW": 75374, "CART": 12456, "BUY": 9551 + 2174, "BUY:test": 2174}


NAMED = """user,item,behavior
u1,i1,like
u1,i1,share
u1,i2,like
u1,i2,add_to_wishlist
u1,i1,transaction
u1,i3,transaction
u2,i2,like
u2,i2,transaction
u2,i1,share
"""


def test_behavior_names_of_the_users_own_keep_the_given_order(neo4j_db, dataset_name, tmp_path, capsys):
    log = tmp_path / "named.csv"
    log.write_text(NAMED)
    code = _ingest(neo4j_db, dataset_name, "--source", str(log),
                   "--behaviors", "like,share,add_to_wishlist,transaction",
                   "--set", "ingest.split.test=random", "--set", "ingest.split.valid=false")
    assert code == 0, capsys.readouterr().err
    state, counts = _counts(neo4j_db, dataset_name)
    assert state["behaviors"] == ["like", "share", "add_to_wishlist", "transaction"]
    assert {k: counts[k] for k in ("LIKE", "SHARE", "ADD_TO_WISHLIST", "TRANSACTION", "LIKE_NOT_SHARE",
                                   "LIKE_NOT_ADD_TO_WISHLIST")} == {
        "LIKE": 3, "SHARE": 2, "ADD_TO_WISHLIST": 1, "TRANSACTION": 3, "LIKE_NOT_SHARE": 2,
        "LIKE_NOT_ADD_TO_WISHLIST": 2}
    # and on to a snapshot, a heterograph and a trained model with the default per-behavior weights
    from test_models_contract import TINY_TRAIN

    from graphrec import graph
    from graphrec import snapshot as snap
    from graphrec.export import export_dataset
    from graphrec.models import MODELS
    from graphrec.train import fit

    exported = export_dataset(neo4j_db.driver, dataset_name, tmp_path / "snap")
    s = snap.read(exported.path)
    assert s.behaviors.order == ("like", "share", "add_to_wishlist", "transaction")
    assert "add_to_wishlist_not_transaction" in s.relations
    assert ("user", "add_to_wishlist", "item") in graph.load(exported.path).graph.canonical_etypes
    result = fit("ghcf", MODELS["ghcf"].params(dim=4, layers=1), TINY_TRAIN.__class__(protocol="fixed", epochs=2),
                 exported.path, tmp_path / "run", device="cpu", log=None)
    test = result.final["results"]["test"]  # u1's second transaction is its test one (split.test random)
    assert result.final["protocol"] == "fixed" and test["users"] == 1 and 0.0 <= test["hr@10"] <= 1.0


@pytest.mark.parametrize("order", ["like,Add-To-Cart!,buy", "like,not_bought,buy", "like,rev_x,buy"])
def test_a_bad_behavior_name_is_refused_with_the_rule_and_nothing_is_written(neo4j_db, dataset_name, tmp_path,
                                                                             capsys, order):
    log = tmp_path / "named.csv"
    log.write_text("user,item,behavior\nu1,i1,like\nu1,i1,buy\n")
    code = _ingest(neo4j_db, dataset_name, "--source", str(log), "--behaviors", order)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "lowercase letters and digits in words joined by single underscores" in err
    assert "ingest.behavior_values" in err
    assert load.dataset_state(neo4j_db.driver, dataset_name) is None

"""Neo4j → snapshot → heterograph on the real server: nothing lost, nothing added."""

import re

import pytest
from conftest import TINY_EXPECTED_COUNTS, TINY_EXPECTED_DERIVED

from graphrec import cli, graph
from graphrec import snapshot as snap
from graphrec.config import SplitConfig
from graphrec.export import ExportError, export_dataset
from graphrec.ingest import load
from graphrec.ingest.readers import read_source
from graphrec.inspection import dataset_report, snapshot_report

pytestmark = pytest.mark.neo4j


def _ingest(driver, path, name):
    return load.ingest(driver, load.prepare(read_source(path), name, SplitConfig()))


def _db_edges(driver, name, rtype):
    with driver.session() as s:
        return s.run("MATCH (u:User {dataset: $ds})-[r]->(i:Item) WHERE type(r) = $t "
                     "RETURN u.id AS u, i.id AS i, r.split AS split, r.holdout AS holdout, r.ts AS ts, "
                     "r.count AS count", ds=name, t=rtype).data()


def _snap_edges(s: snap.Snapshot, name: str):
    rel = s.relations[name]
    codes = {c: k for k, c in snap.SPLIT_CODES.items()}
    out = []
    for k in range(len(rel)):
        out.append({
            "u": s.users.key(rel.user[k]), "i": s.items.key(rel.item[k]),
            "split": codes[int(rel.split[k])] if rel.split is not None else None,
            "holdout": codes.get(int(rel.holdout[k])) if rel.holdout is not None else None,
            "ts": (None if rel.ts[k] == snap.NO_TS else int(rel.ts[k])) if rel.ts is not None else None,
            "count": (int(rel.count[k]) if rel.count[k] > 1 else None) if rel.count is not None else None,
        })
    return out


def _key(r):
    return (r["u"], r["i"])


def test_snapshot_round_trip_equals_neo4j(neo4j_db, tiny_csv, dataset_name, tmp_path):
    report = _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    exported = export_dataset(neo4j_db.driver, dataset_name, tmp_path / "snap")
    s = snap.read(exported.path)
    # counts: the hand-computed ones, the database's, and the snapshot's all agree
    assert s.counts() == TINY_EXPECTED_COUNTS == report.counts
    # every edge with its properties, relation by relation
    for name in ("view", "cart", "buy", "view_not_cart", "view_not_buy", "cart_not_buy"):
        db = sorted(_db_edges(neo4j_db.driver, dataset_name, name.upper()), key=_key)
        assert sorted(_snap_edges(s, name), key=_key) == db, name
    got = {(r["u"], r["i"], r["holdout"]) for r in _snap_edges(s, "cart_not_buy")}
    assert got == TINY_EXPECTED_DERIVED["CART_NOT_BUY"]
    # the report computed from the snapshot is the database report, row for row
    db_report, snap_report = dataset_report(neo4j_db.driver, dataset_name), snapshot_report(s)
    for field in ("nodes", "relationships", "funnel", "degrees", "popular"):
        assert getattr(snap_report, field) == getattr(db_report, field), field


def test_export_streamed_in_small_chunks_is_the_same_snapshot(neo4j_db, tiny_csv, dataset_name, tmp_path,
                                                              monkeypatch):
    from graphrec import export

    _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    whole = export_dataset(neo4j_db.driver, dataset_name, tmp_path / "whole")
    monkeypatch.setattr(export, "STREAM_CHUNK", 1)   # a flush after every user's records
    chunked = export_dataset(neo4j_db.driver, dataset_name, tmp_path / "chunked")
    files = sorted(p.name for p in whole.path.iterdir())
    assert files == sorted(p.name for p in chunked.path.iterdir())
    assert all((whole.path / f).read_bytes() == (chunked.path / f).read_bytes() for f in files)


def test_heterograph_from_export_holds_train_edges_only(neo4j_db, tiny_csv, dataset_name, tmp_path):
    _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    data = graph.load(export_dataset(neo4j_db.driver, dataset_name, tmp_path / "snap").path)
    g = data.graph
    assert g.num_nodes("user") == 3 and g.num_nodes("item") == 4
    assert g.num_edges("buy") == 2 and g.num_edges("rev_buy") == 2
    u, i = g.edges(etype="buy")
    assert ({(data.users.key(a), data.items.key(b)) for a, b in zip(u.tolist(), i.tolist())}
            == {("u1", "a"), ("u2", "c")})
    test_u, test_i = data.held_out["test"]
    assert {(data.users.key(a), data.items.key(b)) for a, b in zip(test_u, test_i)} == {("u1", "d"), ("u2", "a")}
    assert g.num_edges("view_not_buy") == 4


def test_incomplete_dataset_is_not_exported(neo4j_db, tiny_csv, dataset_name, tmp_path):
    _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    with neo4j_db.driver.session() as s:
        s.run("MATCH (d:Dataset {name: $n}) SET d.status = 'loading'", n=dataset_name).consume()
    with pytest.raises(ExportError, match="not complete .* re-run the same `graphrec ingest`"):
        export_dataset(neo4j_db.driver, dataset_name, tmp_path / "snap")
    assert not (tmp_path / "snap").exists()


def test_edges_changed_after_ingest_are_detected(neo4j_db, tiny_csv, dataset_name, tmp_path):
    _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    with neo4j_db.driver.session() as s:
        s.run("MATCH (u:User {dataset: $n, id: 'u3'})-[r:CART]->(:Item {id: 'c'}) DELETE r", n=dataset_name).consume()
    with pytest.raises(ExportError, match=r"CART: 5 at ingest, 4 exported.*--replace"):
        export_dataset(neo4j_db.driver, dataset_name, tmp_path / "snap")


def test_cli_export_and_inspect_snapshot(neo4j_db, tiny_csv, dataset_name, tmp_path, capsys):
    _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    out = tmp_path / "snap"
    rc = cli.main([*neo4j_db.cli_args(), "export", "--dataset", dataset_name, "--out", str(out),
                   "--dgl", str(tmp_path / "g.dgl"), *neo4j_db.conn_args()])
    text = capsys.readouterr().out
    assert rc == 0 and "3 users, 4 items" in text and "(user, view_not_buy, item)" in text
    assert (tmp_path / "g.dgl").stat().st_size > 0
    assert cli.main(["inspect", "--snapshot", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"\| CART_NOT_BUY +\| derived +\| valid +\| +1 \|", text)
    assert cli.main(["inspect", "--snapshot", str(tmp_path / "nowhere")]) == cli.EXIT_INPUT
    assert "graphrec export --dataset" in capsys.readouterr().err


def test_cli_export_of_unknown_dataset_lists_choices(neo4j_db, dataset_name, tmp_path, capsys):
    rc = cli.main([*neo4j_db.cli_args(), "export", "--dataset", dataset_name + "_none", "--out",
                   str(tmp_path / "s"), *neo4j_db.conn_args()])
    assert rc == cli.EXIT_FAILURE
    assert f"no dataset named '{dataset_name}_none'" in capsys.readouterr().err


def test_recommend_write_back_replaces_the_runs_earlier_ones(neo4j_db, tiny_csv, dataset_name, tmp_path, capsys):
    from graphrec.queries import get_query, run_query

    _ingest(neo4j_db.driver, tiny_csv, dataset_name)
    path = export_dataset(neo4j_db.driver, dataset_name, tmp_path / "snap").path
    run = tmp_path / "run"
    assert cli.main(["train", "--model", "lightgcn_m", "--snapshot", str(path), "--run", str(run), "--device", "cpu",
                     "--set", "train.protocol=paper", "--set", "train.epochs=2", "--set", "train.batch_size=2",
                     "--set", "models.lightgcn_m.coefficient=[0.2,0.3,0.5]",
                     "--set", "models.lightgcn_m.neg_weight=[0.1,0.1,0.1]"]) == 0
    args = [*neo4j_db.cli_args(), "recommend", "--run", str(run), "--user", "u2", "--user", "u3", "--write-back",
            "--device", "cpu", *neo4j_db.conn_args()]
    assert cli.main(args + ["-k", "2"]) == 0
    assert cli.main(args + ["-k", "1"]) == 0  # replaces, does not add
    q = get_query("recommendations")
    cols, rows = run_query(neo4j_db.driver, q, q.bind({"dataset": dataset_name, "user": "u2"}))
    got = [dict(zip(cols, r)) for r in rows]
    assert [(r["run"], r["model"], r["rank"]) for r in got] == [("run", "lightgcn_m", 1)]
    assert got[0]["item"] in {"b", "d"}  # u2 bought a and c: only b and d are left
    _, rows = run_query(neo4j_db.driver, q, q.bind({"dataset": dataset_name, "user": "u3"}))
    assert len(rows) == 1
    # the interaction report is unaffected by written-back recommendations
    assert snapshot_report(snap.read(path)).relationships == dataset_report(neo4j_db.driver, dataset_name).relationships


def test_two_stage_recommend_write_back(neo4j_db, dataset_name, tmp_path, capsys):
    """ingest → export → honest recall run → ranking run → two-stage recommend --write-back."""
    from test_ranking_data import ranking_snapshot

    from graphrec.queries import get_query, run_query

    s = ranking_snapshot()
    folder = tmp_path / "folder"
    folder.mkdir()
    t, cart = s.target, s.relations["cart"]
    lines = lambda users, items: "".join(  # noqa: E731
        f"{u} " + " ".join(str(i) for i in sorted(items[users == u])) + "\n" for u in range(s.n_users))
    held_test = t.split == snap.SPLIT_CODES["test"]
    (folder / "train.txt").write_text(lines(t.user[~held_test], t.item[~held_test]))
    (folder / "test.txt").write_text(lines(t.user[held_test], t.item[held_test]))
    (folder / "cart.txt").write_text(lines(cart.user, cart.item))
    load.ingest(neo4j_db.driver, load.prepare(read_source(folder), dataset_name, SplitConfig(test="file", valid=True)))
    path = export_dataset(neo4j_db.driver, dataset_name, tmp_path / "snap").path
    recall, ranking = tmp_path / "recall", tmp_path / "ranking"
    assert cli.main(["train", "--model", "lightgcn_m", "--snapshot", str(path), "--run", str(recall), "--device", "cpu",
                     "--set", "train.epochs=4", "--set", "train.eval_every=2", "--set", "train.batch_size=8",
                     "--set", "models.lightgcn_m.coefficient=[0.5,0.5]",
                     "--set", "models.lightgcn_m.neg_weight=[0.2,0.2]"]) == 0
    # the ranking data is read from Neo4j again when the recall run's snapshot is gone
    import shutil

    shutil.rmtree(path)
    assert cli.main([*neo4j_db.cli_args(), "train", "--model", "mlp_single", "--recall-run", str(recall), "--run",
                     str(ranking), "--device", "cpu", "--set", "ranking.epochs=1", "--set", "ranking.candidates=3",
                     "--set", "models.mlp_single.dim=8", *neo4j_db.conn_args()]) == 0
    assert (path / "manifest.json").is_file()
    capsys.readouterr()
    args = [*neo4j_db.cli_args(), "recommend", "--run", str(ranking), "--user", "5", "--write-back",
            "--device", "cpu", *neo4j_db.conn_args()]
    assert cli.main(args + ["-k", "3"]) == 0
    assert cli.main(args + ["-k", "2"]) == 0  # replaces the run's earlier ones
    out = capsys.readouterr().out
    assert "p(cart)" in out and "p(buy)" in out and "recall rank" in out
    q = get_query("recommendations")
    cols, rows = run_query(neo4j_db.driver, q, q.bind({"dataset": dataset_name, "user": "5"}))
    got = [dict(zip(cols, r)) for r in rows]
    assert ([(r["run"], r["model"], r["rank"]) for r in got]
            == [("ranking", "mlp_single", 1), ("ranking", "mlp_single", 2)])
    bought = {str(i) for i in t.item[t.user == 5]}
    assert not {r["item"] for r in got} & bought


def test_every_neo4j_command_works_through_a_routing_uri(neo4j_db, tiny_csv, dataset_name, tmp_path, capsys):
    # neo4j:// asks the server for a routing table (a cluster or Aura answers with its members; a
    # single server with itself): ingest, export, cypher, inspect and drop all run through it, and
    # the export equals the one over bolt:// byte for byte.
    from graphrec.neo4j import server

    bolt = neo4j_db.uri or server.start(neo4j_db.home, log=lambda s: None).uri
    routing = ["--uri", "neo4j://" + bolt.split("://", 1)[1]]
    assert cli.main([*neo4j_db.cli_args(), "ingest", "--dataset", dataset_name, "--source", str(tiny_csv),
                     *routing]) == 0
    outs = {}
    for name, conn in (("routed", routing), ("direct", ["--uri", bolt])):
        outs[name] = tmp_path / name
        assert cli.main([*neo4j_db.cli_args(), "export", "--dataset", dataset_name, "--out", str(outs[name]),
                         *conn]) == 0
    files = sorted(p.name for p in outs["routed"].iterdir())
    assert files and all((outs["routed"] / f).read_bytes() == (outs["direct"] / f).read_bytes() for f in files)
    capsys.readouterr()
    assert cli.main([*neo4j_db.cli_args(), "cypher", "run", "rel-counts", "--param", f"dataset={dataset_name}",
                     *routing]) == 0
    assert "VIEW" in capsys.readouterr().out
    assert cli.main([*neo4j_db.cli_args(), "inspect", "--dataset", dataset_name, *routing]) == 0
    assert cli.main([*neo4j_db.cli_args(), "drop", "--dataset", dataset_name, *routing]) == 0
    assert cli.main([*neo4j_db.cli_args(), "export", "--dataset", dataset_name, "--out", str(tmp_path / "gone"),
                     *routing]) == cli.EXIT_FAILURE

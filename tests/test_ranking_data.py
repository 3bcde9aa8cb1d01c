"""Ranking data built from a recall run: lists, exclusions, labels, leak-free sequences, splits."""

import dataclasses

import numpy as np
import pytest
import torch

from graphrec import snapshot as snap
from graphrec.config import RankingConfig, TrainConfig
from graphrec.ranking.data import RankingDataError, _pseudo_labels, build, position_bucket
from graphrec.runs import open_model
from graphrec.schema import Behaviors
from graphrec.train import fit

N_USERS, N_ITEMS = 24, 12
N = 2  # candidates per list: few enough that the recall model misses some held-out purchases
CODES = snap.SPLIT_CODES


def ranking_snapshot() -> snap.Snapshot:
    """Two communities of 12 users on 6 items each. Every user carts 4 in-community items and buys
    3 of them (train, valid, test in that order), and carts one item of the other community."""
    rng = np.random.default_rng(3)
    cart, buy = [], []
    for u in range(N_USERS):
        base = 0 if u < N_USERS // 2 else 6
        own = rng.permutation(np.arange(base, base + 6))[:4]
        other = (base + 6 + u % 6) % N_ITEMS
        cart += [(u, int(i)) for i in own] + [(u, other)]
        buy += [(u, int(own[0]), CODES["train"]), (u, int(own[1]), CODES["train"]),
                (u, int(own[2]), CODES["valid"]), (u, int(own[3]), CODES["test"])]
    train = {(u, i) for u, i, c in buy if c == CODES["train"]}
    held = {(u, i): c for u, i, c in buy if c != CODES["train"]}
    cnb = [(u, i) for u, i in cart if (u, i) not in train]
    return snap.build("rank", Behaviors(("cart", "buy")), [f"u{u}" for u in range(N_USERS)],
                      [f"i{i}" for i in range(N_ITEMS)], {
                          "cart": {"user": [u for u, _ in cart], "item": [i for _, i in cart]},
                          "buy": {"user": [u for u, _, _ in buy], "item": [i for _, i, _ in buy],
                                  "split": [c for _, _, c in buy]},
                          "cart_not_buy": {"user": [u for u, _ in cnb], "item": [i for _, i in cnb],
                                           "holdout": [held.get(p, snap.NO_HOLDOUT) for p in cnb]}})


TC = TrainConfig(protocol="honest", epochs=6, batch_size=8, lr=0.02, eval_every=3, patience=10, seed=1,
                 drop_last=False)


@pytest.fixture(scope="module")
def recall_run(tmp_path_factory):
    from graphrec.models import MODELS

    tmp = tmp_path_factory.mktemp("rank")
    path = snap.write(ranking_snapshot(), tmp / "snap")
    params = MODELS["lightgcn_m"].params(dim=8, layers=2, decay=0.001, mess_dropout=0.0, node_dropout=0.0,
                                         coefficient=(0.5, 0.5), neg_weight=(0.2, 0.2))
    fit("lightgcn_m", params, TC, path, tmp / "recall", device="cpu", log=None)
    return tmp / "recall"


def pairs(users, items):
    return set(zip(np.asarray(users).tolist(), np.asarray(items).tolist()))


def test_lists_labels_and_sequences(recall_run):
    s = ranking_snapshot()
    data, src = build(recall_run, RankingConfig(candidates=N, seq_len=3, valid_fraction=0.25, seed=0))
    t = s.target
    train = pairs(t.user[t.split == CODES["train"]], t.item[t.split == CODES["train"]])
    valid = pairs(*t.select("valid"))
    test = pairs(*t.select("test"))
    cart = pairs(s.relations["cart"].user, s.relations["cart"].item)
    _, model, tdata, graphs = open_model(recall_run)
    with torch.no_grad():
        scores = model.scorer(graphs)(torch.arange(N_USERS)).numpy()

    tr, va, te = data.lists["train"], data.lists["valid"], data.lists["test"]
    # the validation users are split into ranking train / early-stopping valid, disjointly
    assert sorted(tr.users.tolist() + va.users.tolist()) == list(range(N_USERS))
    assert len(va.users) == 6
    # the ranking model trains on what the recall model retrieved; held-out positives appended for
    # scoring appear in the early-stopping and test lists only
    assert tr.retrieved.all() and (np.diff(tr.offsets) == N).all()
    assert not va.retrieved.all() or not te.retrieved.all()
    for split, ls, held, excluded in (("valid", va, valid, train), ("test", te, test, train | valid)):
        for g, u in enumerate(ls.users.tolist()):
            rows = slice(ls.offsets[g], ls.offsets[g + 1])
            items, retrieved = ls.items[rows].tolist(), ls.retrieved[rows]
            # retrieved rows: the recall top-N among the non-excluded items, best first
            allowed = [i for i in np.argsort(-scores[u], kind="stable") if (u, i) not in excluded]
            assert items[:N] == [int(i) for i in allowed[:N]], (split, u)
            assert retrieved[:N].all()
            # the held-out purchase is in the list: retrieved, or appended last with the last position bucket
            h = [i for (uu, i) in held if uu == u]
            assert len(h) == 1 and h[0] in items
            if h[0] not in items[:N]:
                assert items == items[:N] + h and not retrieved[N] and ls.position[rows][N] == data.meta.n_positions - 1
            else:
                assert len(items) == N
            np.testing.assert_allclose(ls.recall_score[rows], scores[u, items], rtol=1e-5)
            assert ls.labels[rows][:, 1].tolist() == [float((u, i) in held) for i in items]
            assert ls.labels[rows][:, 0].tolist() == [float((u, i) in cart) for i in items]
            # sequences: training edges only, none of the list's items (no label read from the input)
            for b, seq, ln in zip(data.meta.seq_behaviors, ls.seqs, ls.seq_lens):
                got = seq[g][:ln[g]].tolist()
                assert (seq[g][ln[g]:] == N_ITEMS).all()
                rel = s.relations[b]
                keep = rel.split == CODES["train"] if rel.split is not None else np.ones(len(rel), bool)
                expected = sorted(i for uu, i in pairs(rel.user[keep], rel.item[keep]) if uu == u and i not in items)
                assert got == expected[:3], (split, b, u)
    assert data.info["rows"]["test"] == len(te) and "no timestamps" in data.info["sequence_order"]
    assert 0 < data.info["target_retrieved"]["test"] <= 1


def test_paper_protocol_recall_runs_are_refused(tmp_path):
    from graphrec.models import MODELS

    path = snap.write(ranking_snapshot(), tmp_path / "snap")
    params = MODELS["lightgcn_m"].params(dim=4, layers=1, coefficient=(0.5, 0.5), neg_weight=(0.2, 0.2))
    fit("lightgcn_m", params, dataclasses.replace(TC, protocol="paper", epochs=1, eval_every=1), path,
        tmp_path / "paper", device="cpu", log=None)
    with pytest.raises(RankingDataError, match="honest"):
        build(tmp_path / "paper", RankingConfig(candidates=3))


def test_pseudo_labels_are_means_of_earlier_rows():
    labels = np.array([[1, 0], [0, 0], [1, 1], [0, 1], [1, 1]], dtype=np.float32)
    offsets = np.array([0, 3, 3, 5])  # groups of 3, 0 and 2 rows
    prior = np.array([0.25, 0.75], dtype=np.float32)
    np.testing.assert_allclose(_pseudo_labels(labels, offsets, prior),
                               [[0.25, 0.75], [1, 0], [0.5, 0], [0.25, 0.75], [0, 1]])


def test_position_buckets():
    assert position_bucket(np.array([0, 1, 2, 3, 6, 7, 49, -1]), 50).tolist() == [0, 1, 1, 2, 2, 3, 5, 6]


def test_recall_alone_metrics_equal_the_recall_evaluation(recall_run):
    """The final-list metrics in the recall model's own order are the recall model's full-ranking
    test metrics (for K ≤ N): the two stages are measured on the same footing."""
    from graphrec.evaluate import evaluate_split
    from graphrec.ranking.train import evaluate_lists

    data, _ = build(recall_run, RankingConfig(candidates=N))
    ls = data.lists["test"]
    probs = np.random.default_rng(0).random((len(ls), 2)).astype(np.float32)
    m = evaluate_lists(probs, ls, data.meta.tasks, np.ones(2, np.float32), [1, 2])
    _, model, tdata, graphs = open_model(recall_run)
    full = evaluate_split(model, graphs, tdata, "test", (1, 2), 64, torch.device("cpu"))
    for k in (1, 2):
        assert m[f"recall_ndcg@{k}"] == pytest.approx(full[f"ndcg@{k}"], abs=1e-6)
        assert m[f"recall_hr@{k}"] == pytest.approx(full[f"hr@{k}"], abs=1e-6)


RANKERS = ["mlp_single", "shared_bottom", "mmoe", "ple", "dmt", "stan"]


@pytest.mark.parametrize("name", RANKERS)
def test_cli_ranking_train_evaluate_recommend(recall_run, tmp_path, capsys, name):
    import json

    from graphrec import cli

    run = tmp_path / name
    sets = ["ranking.epochs=2", f"ranking.candidates={N}", "ranking.users_per_batch=8", f"models.{name}.dim=8"]
    assert cli.main(["train", "--model", name, "--recall-run", str(recall_run), "--run", str(run),
                     "--device", "cpu", *sum((["--set", x] for x in sets), [])]) == 0
    res = json.loads((run / "results.json").read_text())
    assert {"auc_cart", "auc_buy", "final_ndcg@5", "recall_ndcg@10"} <= set(res["test"])
    assert len((run / "metrics.jsonl").read_text().splitlines()) == res["epochs_run"] == 2
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", str(run), "--ks", "1,2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "AUC buy (lists)" in out and "AUC buy (retrieved)" in out and "NDCG@2 recall alone" in out
    assert cli.main(["recommend", "--run", str(run), "--user", "u3", "-k", "2", "--device", "cpu"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| u3")]
    assert len(lines) == 2
    cells = [[c.strip() for c in x.strip("|").split("|")] for x in lines]
    s = ranking_snapshot()
    bought = {f"i{i}" for i in s.target.item[s.target.user == 3]}
    assert all(c[2] not in bought for c in cells)  # every purchase is excluded at serving
    scores = [float(c[3]) for c in cells]
    assert scores == sorted(scores, reverse=True)
    for c in cells:  # the score is the sum of the task probabilities (default weights 1, 1)
        assert float(c[3]) == pytest.approx(float(c[4]) + float(c[5]), abs=2e-4)
    assert sorted(int(c[6]) for c in cells) == [1, 2]
    # a ranking run is not a recall run
    assert cli.main(["train", "--model", name, "--recall-run", str(run), "--run", str(tmp_path / "again"),
                     "--device", "cpu"]) == cli.EXIT_FAILURE
    assert "is a ranking run; this needs a recall run" in capsys.readouterr().err

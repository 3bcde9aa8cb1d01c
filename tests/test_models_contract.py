"""One contract for every registered model: it builds from graph metadata, its loss is finite and
decreases, it excludes seen items, its state round-trips, it is deterministic under a seed, and it
ranks the right item first on a graph of two communities."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from graphrec import snapshot as snap
from graphrec.config import TrainConfig
from graphrec.models import all_models, build_model
from graphrec.models.base import Batch, GraphMeta
from graphrec.recommend import recommend
from graphrec.runs import open_model
from graphrec.sampling import TrainData, model_batches
from graphrec.schema import Behaviors
from graphrec.train import fit

MODELS = all_models()  # both stages' registries

N_PER_SIDE = 8  # users per community; each community has 5 items


def two_communities() -> snap.Snapshot:
    """Users 0-7 live on items 0-4, users 8-15 on items 5-9. Each user bought the 4 in-community
    items other than its own test item t_u (train), so the only unseen in-community item is t_u:
    every sensible model must rank t_u first among unseen items. Even users also carted t_u,
    which makes cart_not_buy non-empty."""
    cart_u, cart_i, buy_u, buy_i, split = [], [], [], [], []
    for u in range(2 * N_PER_SIDE):
        base = 0 if u < N_PER_SIDE else 5
        test = base + u % 5
        for i in range(base, base + 5):
            if i != test:
                cart_u.append(u), cart_i.append(i)
                buy_u.append(u), buy_i.append(i), split.append(snap.SPLIT_CODES["train"])
            else:
                buy_u.append(u), buy_i.append(i), split.append(snap.SPLIT_CODES["test"])
                if u % 2 == 0:
                    cart_u.append(u), cart_i.append(i)
    train = {(u, i) for u, i, c in zip(buy_u, buy_i, split) if c == snap.SPLIT_CODES["train"]}
    cnb = [(u, i) for u, i in zip(cart_u, cart_i) if (u, i) not in train]
    return snap.build(
        "communities", Behaviors(("cart", "buy")), [str(u) for u in range(2 * N_PER_SIDE)],
        [str(i) for i in range(10)],
        {"cart": {"user": cart_u, "item": cart_i},
         "buy": {"user": buy_u, "item": buy_i, "split": split},
         "cart_not_buy": {"user": [u for u, _ in cnb], "item": [i for _, i in cnb],
                          "holdout": [snap.SPLIT_CODES["test"]] * len(cnb)}})


def held_out_item(u: int) -> int:
    return (0 if u < N_PER_SIDE else 5) + u % 5


# dim 4: the held-out item is a training negative, so only a low-rank model is forced to generalize
# from its community instead of memorizing it away (at dim 16 GHCF and HPMR memorize it).
TINY_PARAMS = {
    "hpmr": dict(dim=4, layers=2, decay=0.001, mess_dropout=0.0, node_dropout=0.0, alpha=(1.0, 1.0, 1.0),
                 coefficient=(0.5, 0.5), neg_weight=(0.2, 0.2), unique_neg_weight=0.2),
    "ghcf": dict(dim=4, layers=2, decay=0.001, mess_dropout=0.0, node_dropout=0.0, coefficient=(0.5, 0.5),
                 neg_weight=(0.2, 0.2)),
    "lightgcn_m": dict(dim=4, layers=2, decay=0.001, mess_dropout=0.0, node_dropout=0.0, coefficient=(0.5, 0.5),
                       neg_weight=(0.2, 0.2)),
    "lightgcn": dict(dim=4, layers=2, reg=1e-4),
    "histgcn": dict(dim=4, layers=2, reg=1e-4),
    "ehcf": dict(dim=4, coefficient=(0.5, 0.5), neg_weight=(0.2, 0.2)),
    # without weight decay MuLe memorizes the held-out item away at dim 8 (10-11 of 16 users with views)
    "mule": dict(dim=4, layers=1, tda_layers=2, weight_decay=0.01),
    # sampled BCE pushes the held-out item down as hard as any out-of-community item; at dim 4 the
    # NeuMF tower can memorize that away for some seeds, GMF with a strong L2 generalizes for all
    # seeds tried (NeuMF and MLP are trained in tests/test_nmtr_ehcf.py)
    "nmtr": dict(dim=4, unit="gmf", init_std=0.1, reg=0.1),
}
# recall-stage models; the ranking stage's have their own contract in test_ranking_models.py
RECALL = sorted(name for name, entry in MODELS.items() if entry.stage == "recall")
TINY_TRAIN = TrainConfig(protocol="paper", epochs=60, batch_size=8, lr=0.02, eval_every=20, patience=50,
                         seed=7, drop_last=False)


def tiny_params(name: str):
    return MODELS[name].params(**TINY_PARAMS[name])


def test_every_registered_model_has_tiny_params():
    assert set(TINY_PARAMS) == set(RECALL), "add the new model to TINY_PARAMS so the contract covers it"


@pytest.fixture(scope="module")
def communities_path(tmp_path_factory):
    return snap.write(two_communities(), tmp_path_factory.mktemp("communities") / "snap")


@pytest.fixture(scope="module")
def trained(communities_path, tmp_path_factory):
    """One short training run per model (shared by the tests below)."""
    out = {}
    for name in RECALL:
        run = tmp_path_factory.mktemp(f"run-{name}")
        out[name] = fit(name, tiny_params(name), TINY_TRAIN, communities_path, run, device="cpu", log=None)
    return out


def _setup(name: str, snapshot_path, seed: int = 0, params=None):
    torch.manual_seed(seed)
    s = snap.read(snapshot_path)
    meta = GraphMeta(s.n_users, s.n_items, s.behaviors.order, tuple(s.relations))
    cls = MODELS[name].cls
    data = TrainData.from_snapshot(s, "paper", cls.label_relations(meta), 99.99, "cpu")
    model = build_model(name, tiny_params(name) if params is None else params, data.meta)
    return model, data, data.graphs(cls.relations(data.meta), "cpu")


@pytest.mark.parametrize("name", RECALL)
def test_builds_from_metadata_and_scores_all_items(name, communities_path):
    model, data, graphs = _setup(name, communities_path)
    model.eval()
    with torch.no_grad():
        scores = model.scorer(graphs)(torch.arange(5))
    assert scores.shape == (5, 10) and torch.isfinite(scores).all()


@pytest.mark.parametrize("name", RECALL)
def test_loss_is_finite_and_decreases(name, communities_path):
    model, data, graphs = _setup(name, communities_path)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        epoch = 0.0
        for batch in model_batches(model, data, 16, TINY_TRAIN.drop_last, gen, "cpu"):
            model.train()
            loss, parts = model.loss(batch, graphs)
            assert torch.isfinite(loss) and all(np.isfinite(v) for v in parts.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            epoch += float(loss.detach())
        losses.append(epoch)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1 * abs(np.mean(losses[:5]))


@pytest.mark.parametrize("name", RECALL)
def test_state_round_trip_gives_identical_scores(name, communities_path):
    model, data, graphs = _setup(name, communities_path, seed=1)
    clone, _, _ = _setup(name, communities_path, seed=2)
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    with torch.no_grad():
        users = torch.arange(16)
        torch.testing.assert_close(model.scorer(graphs)(users), clone.scorer(graphs)(users), rtol=0, atol=0)


@pytest.mark.parametrize("name", RECALL)
def test_training_is_deterministic_under_a_seed(name, communities_path, tmp_path):
    tc = dataclasses.replace(TINY_TRAIN, epochs=6, eval_every=3)
    a = fit(name, tiny_params(name), tc, communities_path, tmp_path / "a", device="cpu", log=None)
    b = fit(name, tiny_params(name), tc, communities_path, tmp_path / "b", device="cpu", log=None)
    la = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in __import__("json").loads(r).items() if "seconds" not in k}  # noqa: E731
                          for r in rows]
    assert strip(la) == strip(lb)
    assert a.final["results"]["test"] == {**b.final["results"]["test"],
                                          "seconds": a.final["results"]["test"]["seconds"]}


def assert_top1_is_held_out(name: str, result) -> None:
    """The trained run ranks every user's held-out in-community item first among unseen items."""
    info, model, data, graphs = open_model(result.run_dir, "cpu")
    with torch.no_grad():
        scores = model.scorer(graphs)(torch.arange(2 * N_PER_SIDE))
    train_u, train_i = data.edges["buy"]
    scores[torch.as_tensor(train_u, dtype=torch.long), torch.as_tensor(train_i, dtype=torch.long)] = -float("inf")
    top1 = scores.argmax(1).tolist()
    assert top1 == [held_out_item(u) for u in range(2 * N_PER_SIDE)], f"{name}: top-1 = {top1}"
    assert result.final["results"]["test"]["hr@10"] == 1.0 and result.final["results"]["test"]["ndcg@10"] == 1.0


@pytest.mark.parametrize("name", RECALL)
def test_top1_is_the_held_out_in_community_item(name, trained):
    assert_top1_is_held_out(name, trained[name])


@pytest.mark.parametrize("name", RECALL)
def test_recommend_excludes_every_seen_purchase(name, trained):
    users = [str(u) for u in range(2 * N_PER_SIDE)]
    recs = recommend(trained[name].run_dir, users, k=3, device="cpu")
    # all 5 in-community items are purchases (4 train + the test one): only the other side is left
    assert len(recs) == 3 * len(users)
    assert all((int(r.item) >= 5) == (int(r.user) < N_PER_SIDE) for r in recs)
    assert [r.rank for r in recs[:3]] == [1, 2, 3] and recs[0].score >= recs[1].score >= recs[2].score


@pytest.mark.parametrize("encoder", ["gccf", "lightgcn", "gcn", "ghcf", "ngcf"])
def test_hpmr_encoders_train(encoder, communities_path):
    from graphrec.models.hpmr import HPMRParams

    params = HPMRParams(**{**TINY_PARAMS["hpmr"], "encoder": encoder})
    model, data, graphs = _setup("hpmr", communities_path, params=params)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    users = torch.arange(16)
    batch = Batch(users=users, positives={k: v.rows(users) for k, v in data.positives.items()})
    losses = []
    for _ in range(30):
        loss, _ = model.loss(batch, graphs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_hpmr_ablations_switch_off_their_parts(communities_path):
    from graphrec.models.hpmr import HPMRParams

    s = snap.read(communities_path)
    meta = GraphMeta(s.n_users, s.n_items, s.behaviors.order, tuple(s.relations))
    data = TrainData.from_snapshot(s, "paper", MODELS["hpmr"].cls.label_relations(meta))
    graphs = data.graphs(meta.behaviors, "cpu")
    users = torch.arange(16)
    batch = Batch(users=users, positives={k: v.rows(users) for k, v in data.positives.items()})
    base = dict(TINY_PARAMS["hpmr"])

    def run(**flags):
        torch.manual_seed(0)
        model = build_model("hpmr", HPMRParams(**{**base, **flags}), data.meta)
        model.eval()  # no dropout: outputs depend on the flags only
        return model, model(graphs), model.loss(batch, graphs)[1]

    full, out_full, parts_full = run()
    assert full.params.ablation == "full"
    # w/o SIT and w/o URR: the buy users are e_buy alone / the cart users are e_cart alone
    _, out, _ = run(use_sit=False)
    torch.testing.assert_close(out["u"]["buy"], out["e"]["buy"][:16])
    assert not torch.allclose(out_full["u"]["buy"], out_full["e"]["buy"][:16])
    _, out, _ = run(use_urr=False)
    torch.testing.assert_close(out["u"]["cart"], out["e"]["cart"][:16])
    # w/o URS: the unique loss is gone, so the cart loss changes; w/o PTN: all three off
    _, _, parts = run(use_urs=False)
    assert parts["loss_cart"] != pytest.approx(parts_full["loss_cart"])
    ptn, out, _ = run(use_sit=False, use_urr=False, use_urs=False)
    assert ptn.params.ablation == "w/o PTN"
    for b in ("cart", "buy"):
        torch.testing.assert_close(out["u"][b], out["e"][b][:16])


def test_lightgcn_m_by_hand(communities_path):
    """LightGCN_M with one layer, dropout off: e_k = (E⁰ + (Â_k E⁰) ⊙ r_k) / 2, r̄_k = (r_k + r_k W_rel) / 2,
    loss Σ_k λ_k NS_k(e_k) + decay (l2(e_buy of the batch users) + l2(e_buy of all items)),
    test score e_buy,u ⊙ r̄_buy · e_buy,i."""
    from graphrec.losses import l2, naive_whole_data_loss
    from graphrec.models.lightgcn_m import LightGCNMParams

    params = LightGCNMParams(dim=4, layers=1, coefficient=(0.3, 0.7), neg_weight=(0.2, 0.5), decay=0.01,
                             mess_dropout=0.0, node_dropout=0.0)
    model, data, graphs = _setup("lightgcn_m", communities_path, params=params)
    meta = data.meta
    assert set(dict(model.named_parameters())) == {"user", "item", "relation", "w_rel.0"}
    nu = meta.n_users
    ego = torch.cat([model.user, model.item])
    e, rbar = {}, {}
    for k, b in enumerate(meta.behaviors):
        dense = graphs[b].matrix.to_dense()
        rel = model.relation[k]
        e[b] = (ego + (dense @ ego) * rel) / 2
        rbar[b] = (rel + rel @ model.w_rel[0]) / 2
    users = torch.tensor([0, 3, 7])
    labels = {}
    for b in meta.behaviors:
        lab = torch.zeros(len(users), meta.n_items)
        rows, items = data.positives[b].rows(users)
        lab[rows, items] = 1.0
        labels[b] = lab
    expected = sum(c * naive_whole_data_loss(e[b][:nu][users], e[b][nu:], rbar[b], labels[b], c0)
                   for b, c, c0 in zip(meta.behaviors, params.coefficient, params.neg_weight))
    expected = expected + params.decay * (l2(e["buy"][:nu][users]) + l2(e["buy"][nu:]))
    model.train()
    loss, _ = model.loss(Batch(users=users, positives={b: data.positives[b].rows(users) for b in meta.behaviors}),
                         graphs)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    model.eval()
    with torch.no_grad():
        got = model.scorer(graphs)(users)
        want = (e["buy"][:nu][users] * rbar["buy"]) @ e["buy"][nu:].T
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,encoder", [("hpmr", "gccf"), ("hpmr", "ngcf"), ("hpmr", "lightgcn"),
                                          ("lightgcn_m", None), ("ghcf", None)])
def test_a_step_on_the_batch_rows_equals_the_step_on_every_row(name, encoder, communities_path):
    """HPMR's (LightGCN_M's, GHCF's) training step computes the batch's user rows only where the
    loss reads them; with dropout on and tiled products it gives the whole-graph step's loss and
    gradients."""
    base = {**TINY_PARAMS[name], "mess_dropout": 0.3, "node_dropout": 0.2}
    params = MODELS[name].params(**(base | ({"encoder": encoder} if encoder else {})))
    model, data, graphs = _setup(name, communities_path, params=params)
    for g in graphs.values():
        g.cpu_tile_bytes = 48  # tiles of 3 columns: spans cut through tiles on both sides
    model.train()
    users = torch.tensor([9, 2, 14, 5, 0, 11])
    batch = Batch(users=users, positives={k: v.rows(users) for k, v in data.positives.items()})
    results = []
    for restrict in (False, True):
        model.restrict_rows = restrict
        torch.manual_seed(11)
        model.zero_grad()
        loss, parts = model.loss(batch, graphs)
        loss.backward()
        results.append((loss.detach(), parts, {n: p.grad.clone() for n, p in model.named_parameters()
                                               if p.grad is not None}))
    (l0, p0, g0), (l1, p1, g1) = results
    assert type(model).restrict_rows and float(l0) != 0.0
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-7)
    assert p1.keys() == p0.keys() and all(math.isclose(p1[k], p0[k], rel_tol=1e-5, abs_tol=1e-7) for k in p0)
    assert g1.keys() == g0.keys() and len(g0) >= 4
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-7)


def test_lightgcn_step_on_the_batch_rows_equals_the_step_on_every_row(communities_path):
    """LightGCN's last layer for the batch's rows only (users from their nonzeros, items from the
    item block) gives the whole-graph step's loss and gradients, repeated rows included."""
    model, data, graphs = _setup("lightgcn", communities_path)
    for g in graphs.values():
        g.cpu_tile_bytes = 48
    t = data.meta.target
    u, pos, neg = torch.tensor([3, 12, 3, 7]), torch.tensor([0, 6, 1, 2]), torch.tensor([9, 0, 8, 5])
    batch = Batch(users=u, pos={t: pos}, neg={t: neg})
    results = []
    for restrict in (False, True):
        model.restrict_rows = restrict
        model.zero_grad()
        loss, _ = model.loss(batch, graphs)
        loss.backward()
        results.append((loss.detach(), model.user.grad.clone(), model.item.grad.clone()))
    (l0, gu0, gi0), (l1, gu1, gi1) = results
    assert float(gu0.abs().sum()) > 0 and float(gi0.abs().sum()) > 0
    torch.testing.assert_close(l1, l0)
    torch.testing.assert_close(gu1, gu0)
    torch.testing.assert_close(gi1, gi0)

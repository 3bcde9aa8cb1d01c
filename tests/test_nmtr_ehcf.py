"""EHCF and NMTR by hand: EHCF's cascaded prediction vectors and loss, NMTR's cascade, units and
scorer, and the "behavior_pairs" batches NMTR trains on."""

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_models_contract import TINY_TRAIN, two_communities

from graphrec import snapshot as snap
from graphrec.config import load_config, model_params, train_config
from graphrec.losses import l2, naive_whole_data_loss
from graphrec.models import build_model
from graphrec.models import nmtr as nmtr_module
from graphrec.models.base import Batch, GraphMeta
from graphrec.models.ehcf import EHCFParams
from graphrec.models.nmtr import NMTRParams, cascade_logits
from graphrec.sampling import (
    TrainData,
    behavior_pair_batches,
    model_batches,
    pair_batches,
    sample_negatives,
    user_pair_batches,
)

T = torch.tensor


def _set(param, value):
    with torch.no_grad():
        param.copy_(T(value, dtype=torch.float32))


# ------------------------------------------------------------------------------------------- EHCF


def _ehcf(behaviors, **kw):
    torch.manual_seed(0)
    k = len(behaviors)
    params = EHCFParams(dim=2, coefficient=(0.5,) * k, neg_weight=(0.1,) * k, **kw)
    return build_model("ehcf", params, GraphMeta(3, 4, behaviors, behaviors))


def test_ehcf_prediction_vectors_two_behaviors():
    m = _ehcf(("cart", "buy"))
    _set(m.h1, [1.0, 2.0])
    _set(m.w["0_1"], [[1.0, 0.0], [1.0, 1.0]])
    _set(m.b["0_1"], [0.5, -1.0])
    h_cart, h_buy = m.prediction_vectors()
    torch.testing.assert_close(h_cart, T([1.0, 2.0]))
    torch.testing.assert_close(h_buy, T([1.5, 2.0]))  # W_cb h_cart + b_cb = [1, 3] + [0.5, -1]
    assert set(m.w) == {"0_1"}
    # the test score is ŷ of the target: Σ_d p_ud q_id h_buy,d
    m.eval()
    with torch.no_grad():
        scores = m.scorer({})(torch.arange(3))
    torch.testing.assert_close(scores, (m.user * T([1.5, 2.0])) @ m.item.T)


def test_ehcf_prediction_vectors_three_behaviors():
    m = _ehcf(("view", "cart", "buy"))
    _set(m.h1, [1.0, 2.0])
    _set(m.w["0_1"], [[1.0, 0.0], [1.0, 1.0]])   # view -> cart
    _set(m.b["0_1"], [0.5, -1.0])
    _set(m.w["0_2"], [[0.0, 1.0], [2.0, 0.0]])   # view -> buy
    _set(m.b["0_2"], [1.0, 1.0])
    _set(m.w["1_2"], [[1.0, 1.0], [0.0, -1.0]])  # cart -> buy
    _set(m.b["1_2"], [0.0, 0.5])
    h_view, h_cart, h_buy = m.prediction_vectors()
    torch.testing.assert_close(h_view, T([1.0, 2.0]))
    torch.testing.assert_close(h_cart, T([1.5, 2.0]))
    # (W_vb h_view + b_vb) + (W_cb h_cart + b_cb) = ([2, 2] + [1, 1]) + ([3.5, -2] + [0, 0.5])
    torch.testing.assert_close(h_buy, T([6.5, 1.5]))


def test_ehcf_loss_is_the_weighted_naive_loss_plus_transfer_decay():
    torch.manual_seed(3)
    meta = GraphMeta(3, 4, ("cart", "buy"), ("cart", "buy"))
    params = EHCFParams(dim=2, coefficient=(0.7, 0.2), neg_weight=(0.1, 0.3), weight_decay=0.5)
    m = build_model("ehcf", params, meta)
    with torch.no_grad():
        m.user.normal_(), m.item.normal_()
    labels = {"cart": T([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.float32),
              "buy": T([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float32)}
    users = T([2, 0])
    positives = {}
    for b, lab in labels.items():
        rows, items = torch.nonzero(lab[users], as_tuple=True)
        positives[b] = (rows, items)
    m.eval()  # no user dropout
    loss, parts = m.loss(Batch(users=users, positives=positives), {})
    hs = m.prediction_vectors()
    expected = sum(c * naive_whole_data_loss(m.user[users], m.item, h, labels[b][users], c0)
                   for c, c0, h, b in zip(params.coefficient, params.neg_weight, hs, ("cart", "buy")))
    expected = expected + 0.5 * l2(m.w["0_1"])
    torch.testing.assert_close(loss, expected)
    assert parts["reg"] == pytest.approx(float(0.5 * l2(m.w["0_1"]).detach()))


def test_ehcf_has_no_graph_and_drops_users_only_in_training():
    m = _ehcf(("cart", "buy"), user_dropout=0.5)
    assert type(m).relations(m.meta) == () and type(m).label_relations(m.meta) == ("cart", "buy")
    users = T([0, 1, 2])
    batch = Batch(users=users, positives={b: (T([0]), T([1])) for b in ("cart", "buy")})
    m.eval()
    assert m.loss(batch, {})[0] == m.loss(batch, {})[0]
    m.train()
    torch.manual_seed(0)
    a = m.loss(batch, {})[0]
    torch.manual_seed(1)
    assert a != m.loss(batch, {})[0]


# ------------------------------------------------------------------------------------------- NMTR


def test_cascade_logits_by_hand():
    f = T([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    torch.testing.assert_close(cascade_logits(f), T([[1.0, 2.0], [4.0, 6.0], [9.0, 12.0]]))


def _nmtr(unit="gmf", behaviors=("cart", "buy"), n_users=3, n_items=4, dim=2, **kw):
    torch.manual_seed(0)
    params = NMTRParams(dim=dim, unit=unit, mlp_layers=(4, 3), **kw)
    return build_model("nmtr", params, GraphMeta(n_users, n_items, behaviors, behaviors))


def test_nmtr_gmf_logits_by_hand():
    m = _nmtr("gmf", ("view", "cart", "buy"))
    _set(m.user[1], [1.0, 2.0])
    _set(m.item[3], [3.0, -1.0])
    for unit, w in zip(m.units, ([1.0, 1.0], [2.0, 0.5], [0.0, -1.0])):
        _set(unit.out.weight, [w])
    _set(m.item_bias[:, 3], [0.5, -1.0, 0.25])
    # f_view = 3 - 2 = 1, f_cart = 6 - 1 = 5, f_buy = 0 + 2 = 2 (p ⊙ q = [3, -2])
    u, i = T([1]), T([3])
    m.eval()
    with torch.no_grad():
        assert float(m.logits(0, u, i)) == pytest.approx(1 + 0.5)
        assert float(m.logits(1, u, i)) == pytest.approx(1 + 5 - 1.0)
        assert float(m.logits(2, u, i)) == pytest.approx(1 + 5 + 2 + 0.25)
        assert float(m.scorer({})(u)[0, 3]) == pytest.approx(8.25)


@pytest.mark.parametrize("unit", ["gmf", "mlp", "neumf"])
def test_nmtr_scorer_matches_pairwise_logits_in_small_chunks(unit, monkeypatch):
    m = _nmtr(unit, n_users=5, n_items=11, dim=3)
    with torch.no_grad():
        m.user.normal_(), m.item.normal_(), m.item_bias.normal_()
    monkeypatch.setattr(nmtr_module, "SCORE_CHUNK_ELEMENTS", 2 * 5 * 4)  # 2 items per chunk (width 4)
    users = torch.arange(5)
    m.eval()
    with torch.no_grad():
        grid = m.scorer({})(users)
        uu, ii = torch.meshgrid(users, torch.arange(11), indexing="ij")
        pairwise = m.logits(1, uu.reshape(-1), ii.reshape(-1)).view(5, 11)
    torch.testing.assert_close(grid, pairwise)
    if unit == "neumf":
        assert m.units[0].out.in_features == 3 + 3  # [p ⊙ q ‖ last hidden]


@pytest.mark.parametrize("unit", ["gmf", "mlp", "neumf"])
def test_nmtr_pair_scorer_scores_a_pair_alone_as_inside_a_grid(unit):
    # evaluate_ranks compares a test item's pair score with grid scores: they must be the same
    # numbers, and equal (to rounding) to the full-row scorer.
    m = _nmtr(unit, ("view", "cart", "buy"), n_users=37, n_items=301, dim=16)
    with torch.no_grad():
        m.user.normal_(), m.item.normal_(), m.item_bias.normal_()
    m.eval()
    with torch.no_grad():
        pairs = m.pair_scorer({})
        users, items = torch.arange(37), torch.arange(301)
        grid = pairs(users[:, None], items[None, :])
        uu, ii = torch.meshgrid(users, items, indexing="ij")
        assert torch.equal(pairs(uu.reshape(-1), ii.reshape(-1)).view(37, 301), grid)
        assert torch.equal(pairs(users[5:9, None], items[None, 100:140]), grid[5:9, 100:140])
        torch.testing.assert_close(grid, m.scorer({})(users))


def test_nmtr_full_evaluation_by_rank_counting_equals_scoring_every_cell(tmp_path):
    from graphrec.evaluate import evaluate_full, evaluate_split

    s = snap.read(snap.write(two_communities(), tmp_path / "snap"))
    data = TrainData.from_snapshot(s, "paper", ("cart", "buy"))
    m = build_model("nmtr", NMTRParams(dim=8, unit="neumf", mlp_layers=(8, 4)), data.meta)
    with torch.no_grad():
        m.user.normal_(), m.item.normal_(), m.item_bias.normal_()
    assert m.pair_scorer({}) is not None
    test, exclude = data.eval_sets["test"]
    users = torch.nonzero(test.counts() > 0).flatten()
    ranked = evaluate_split(m, {}, data, "test", (1, 3, 5), 4, "cpu", per_user=True)
    with torch.no_grad():
        full = evaluate_full(m.scorer({}), users, test, exclude, data.meta.n_items, ks=(1, 3, 5), batch_size=4,
                             per_user=True)
    for key in full:
        assert torch.equal(ranked[key], full[key]), key


def test_nmtr_loss_by_hand():
    m = _nmtr("neumf", coefficient=(0.25, 0.75), reg=0.01)
    pairs = {"cart": (T([0, 2]), T([1, 3]), T([[0, 2], [1, 0]])), "buy": (T([1]), T([2]), T([[0, 3]]))}
    loss, parts = m.loss(Batch(users=T([1]), pairs=pairs), {})
    expected = 0
    for r, (b, lam) in enumerate(zip(("cart", "buy"), (0.25, 0.75))):
        u, pos, neg = pairs[b]
        uu = torch.cat([u, u.repeat_interleave(2)])
        ii = torch.cat([pos, neg.reshape(-1)])
        y = torch.cat([torch.ones(len(pos)), torch.zeros(neg.numel())])
        logit = cascade_logits(torch.stack([m.units[t](m.user[uu], m.item[ii]) for t in range(r + 1)]))[r]
        logit = logit + m.item_bias[r, ii]
        bce = F.binary_cross_entropy_with_logits(logit, y)
        reg = 0.01 * (m.user[uu].square().sum(1) + m.item[ii].square().sum(1)).mean()
        expected = expected + lam * (bce + reg)
    torch.testing.assert_close(loss, expected)
    assert set(parts) == {"loss_cart", "reg_cart", "loss_buy", "reg_buy"}


def test_nmtr_params_are_validated():
    with pytest.raises(ValueError, match="unknown unit"):
        NMTRParams(unit="ncf")
    with pytest.raises(ValueError, match="one value per behavior"):
        _nmtr(coefficient=(1.0,))
    assert _nmtr().coefficient == (0.5, 0.5)
    assert _nmtr(neg_ratio=7).negatives_per_positive == 7


@pytest.mark.parametrize("unit", ["mlp", "neumf"])
def test_nmtr_towers_train_on_communities(unit, tmp_path):
    s = snap.read(snap.write(two_communities(), tmp_path / "snap"))
    meta = GraphMeta(s.n_users, s.n_items, s.behaviors.order, tuple(s.relations))
    data = TrainData.from_snapshot(s, "paper", ("cart", "buy"))
    torch.manual_seed(0)
    m = build_model("nmtr", NMTRParams(dim=8, unit=unit, mlp_layers=(8, 4)), data.meta)
    opt = torch.optim.Adagrad(m.parameters(), lr=0.1, initial_accumulator_value=1e-8)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        total = 0.0
        for batch in model_batches(m, data, 16, TINY_TRAIN.drop_last, gen, "cpu"):
            loss, _ = m.loss(batch, {})
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        losses.append(total)
    assert meta.behaviors == ("cart", "buy") and losses[-1] < 0.8 * losses[0]


# -------------------------------------------------------------------------------- behavior_pairs


def test_behavior_pair_batches_cover_every_pair_once_without_collisions():
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 12
    edges = {}
    for name, n in (("view", 200), ("cart", 90), ("buy", 37)):
        keys = rng.choice(n_users * n_items, size=n, replace=False)
        edges[name] = (keys // n_items, keys % n_items)
    gen = torch.Generator().manual_seed(1)
    for epoch in range(2):
        steps = behavior_pair_batches(edges, "buy", n_items, 8, 3, gen)
        assert len(steps) == 5  # ceil(37 / 8), for every behavior
        for name, (users, items) in edges.items():
            assert all(name in step for step in steps)
            seen = Counter()
            known = set(zip(users.tolist(), items.tolist()))
            for step in steps:
                u, pos, neg = step[name]
                assert neg.shape == (len(u), 3) and u.dtype == pos.dtype == neg.dtype == torch.int64
                seen.update(zip(u.tolist(), pos.tolist()))
                assert not any((a, b) in known for a, row in zip(u.tolist(), neg.tolist()) for b in row)
                assert all(0 <= b < n_items for row in neg.tolist() for b in row)
            assert seen == Counter(zip(users.tolist(), items.tolist())), (epoch, name)
            sizes = [len(step[name][0]) for step in steps]
            assert max(sizes) - min(sizes) <= 1  # near-equal slices: nothing dropped, no tiny last step


def test_user_uniform_sampling_weighs_users_equally_and_pair_sampling_weighs_pairs():
    # user 0 has 40 purchases, users 1..4 one each: shuffled pairs give user 0 40 of 44 draws per
    # epoch, LightGCN's sampler about a fifth of them
    users = np.array([0] * 40 + [1, 2, 3, 4], dtype=np.int64)
    items = np.array(list(range(40)) + [0, 1, 2, 3], dtype=np.int64)
    known = set(zip(users.tolist(), items.tolist()))
    gen = torch.Generator().manual_seed(3)
    draws = Counter()
    for _ in range(200):
        batches = user_pair_batches(users, items, 50, 11, True, gen)
        assert [len(b[0]) for b in batches] == [11] * 4  # 44 draws per epoch, like the pair sampler
        for u, pos, neg in batches:
            assert set(zip(u.tolist(), pos.tolist())) <= known
            assert not any((a, b) in known for a, b in zip(u.tolist(), neg.tolist()))
            draws.update(u.tolist())
    share = {u: c / (200 * 44) for u, c in draws.items()}
    assert sorted(share) == [0, 1, 2, 3, 4] and all(abs(v - 0.2) < 0.02 for v in share.values()), share
    pairs = Counter(u for b in pair_batches(users, items, 50, 11, True, gen) for u in b[0].tolist())
    assert pairs == Counter(users.tolist())


def test_negatives_avoid_a_nearly_full_user():
    # user 0 has 9 of 10 items: plain redraws would leave collisions now and then, the fallback not
    known = np.sort(np.array([i for i in range(10) if i != 6], dtype=np.int64))
    gen = torch.Generator().manual_seed(0)
    neg = sample_negatives(np.zeros(500, dtype=np.int64), known, 10, gen)
    assert (neg == 6).all()


def test_batches_of_kind_behavior_pairs_use_the_models_negative_ratio(tmp_path):
    s = snap.read(snap.write(two_communities(), tmp_path / "snap"))
    data = TrainData.from_snapshot(s, "paper", ("cart", "buy"))
    m = build_model("nmtr", NMTRParams(dim=4, neg_ratio=2), data.meta)
    batches = list(model_batches(m, data, 16, TINY_TRAIN.drop_last, torch.Generator(), "cpu"))
    assert len(batches) == int(np.ceil(len(data.edges["buy"][0]) / 16))
    for b in batches:
        assert set(b.pairs) == {"cart", "buy"} and b.pairs["cart"][2].shape[1] == 2
        torch.testing.assert_close(b.users, b.pairs["buy"][0])
    total = {r: sum(len(b.pairs[r][0]) for b in batches) for r in ("cart", "buy")}
    assert total == {r: len(data.edges[r][0]) for r in ("cart", "buy")}


# ---------------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("config", ["configs/beibei.yaml", "configs/taobao.yaml"])
def test_presets_build(config):
    cfg = load_config(config)
    meta = GraphMeta(5, 7, ("cart", "buy"), ("cart", "buy"))
    for name in ("ehcf", "nmtr"):
        build_model(name, model_params(cfg, name), meta)
        tc = train_config(cfg, name)
        assert tc.optimizer == "adagrad"
    assert train_config(cfg, "ehcf").lr == 0.05

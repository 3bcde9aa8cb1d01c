"""Three behaviors for real: view → cart → buy on tiny hand-written graphs.

Every recall model ranks the held-out item first on a two-community graph with views; each
behavior's loss term reaches the gradient exactly when its λ is > 0; per-behavior weights default
for any cascade length and a wrong length names the key and the fix; ``train.behaviors`` trains on
a sub-cascade; the ``fixed`` protocol evaluates the test split once, after the last epoch.
"""

import dataclasses
import json

import pytest
import torch
from test_models_contract import N_PER_SIDE, RECALL, TINY_PARAMS, TINY_TRAIN, assert_top1_is_held_out, held_out_item

from graphrec import snapshot as snap
from graphrec import train as train_mod
from graphrec.config import TrainConfig, load_config, model_params
from graphrec.models import all_models, build_model
from graphrec.models.base import GraphMeta, default_coefficient
from graphrec.runs import TrainError, open_model
from graphrec.sampling import TrainData, model_batches
from graphrec.schema import Behaviors
from graphrec.train import fit

MODELS = all_models()  # both stages' registries

TRAIN, TEST = snap.SPLIT_CODES["train"], snap.SPLIT_CODES["test"]


def three_communities() -> snap.Snapshot:
    """The contract's two communities (users 0-7 on items 0-4, users 8-15 on items 5-9; each user
    bought its 4 in-community items other than the held-out t_u) with views: every user viewed all
    5 in-community items and one item of the other community, and even users carted t_u. The
    derived relations are computed by hand below, with the held-out purchase on the 'not' side."""
    views, carts, buys = [], [], []
    for u in range(2 * N_PER_SIDE):
        base, other = (0, 5) if u < N_PER_SIDE else (5, 0)
        test = held_out_item(u)
        views += [(u, i) for i in range(base, base + 5)] + [(u, other + u % 5)]
        carts += [(u, i) for i in range(base, base + 5) if i != test or u % 2 == 0]
        buys += [(u, i, TEST if i == test else TRAIN) for i in range(base, base + 5)]
    train = {(u, i) for u, i, c in buys if c == TRAIN}
    held = {(u, i) for u, i, c in buys if c == TEST}
    vnc = sorted(set(views) - set(carts))
    vnb = sorted(set(views) - train)
    cnb = sorted(set(carts) - train)

    def rel(pairs, **extra):
        return {"user": [u for u, *_ in pairs], "item": [p[1] for p in pairs], **extra}

    holdout = lambda pairs: [TEST if p in held else snap.NO_HOLDOUT for p in pairs]  # noqa: E731
    return snap.build(
        "communities3", Behaviors(("view", "cart", "buy")), [str(u) for u in range(2 * N_PER_SIDE)],
        [str(i) for i in range(10)],
        {"view": rel(views), "cart": rel(carts), "buy": rel(buys, split=[c for *_, c in buys]),
         "view_not_cart": rel(vnc), "view_not_buy": rel(vnb, holdout=holdout(vnb)),
         "cart_not_buy": rel(cnb, holdout=holdout(cnb))})


def three_params(name: str):
    """The contract's tiny params with one λ and c0 per behavior of the three."""
    p = dict(TINY_PARAMS[name])
    if "coefficient" in p:
        p.update(coefficient=(1 / 3, 1 / 3, 1 / 3), neg_weight=(0.2, 0.2, 0.2))
    return MODELS[name].params(**p)


@pytest.fixture(scope="module")
def three_path(tmp_path_factory):
    return snap.write(three_communities(), tmp_path_factory.mktemp("communities3") / "snap")


def test_the_hand_built_graph_has_the_expected_derived_relations():
    s = three_communities()
    assert s.behaviors.order == ("view", "cart", "buy")
    # views − carts: the out-of-community view of every user, plus t_u of odd users
    assert len(s.relations["view_not_cart"]) == 16 + 8
    # views − train buys: the out-of-community view and t_u of every user (t_u held out as test)
    vnb = s.relations["view_not_buy"]
    assert len(vnb) == 32 and int((vnb.holdout == TEST).sum()) == 16


@pytest.mark.parametrize("name", RECALL)
def test_top1_with_views_is_the_held_out_in_community_item(name, three_path, tmp_path):
    result = fit(name, three_params(name), TINY_TRAIN, three_path, tmp_path / name, device="cpu", log=None)
    assert result.final["dataset"] == "communities3"
    assert_top1_is_held_out(name, result)


# ------------------------------------------------------------------ each loss term reaches the gradient

def _shifted(rows_items: tuple[torch.Tensor, torch.Tensor], n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, items = rows_items
    return rows, (items + 3) % n_items


def _grads(model, batch, graphs) -> torch.Tensor:
    model.zero_grad(set_to_none=False)
    loss, parts = model.loss(batch, graphs)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]), parts


WHOLE_DATA = ["hpmr", "ghcf", "lightgcn_m", "ehcf"]


@pytest.mark.parametrize("name", WHOLE_DATA + ["nmtr"])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_a_behaviors_loss_reaches_the_gradient_exactly_when_its_weight_is_positive(name, k, three_path):
    """Move behavior k's labels (its items, and its ``k_not_*`` unique items): the gradient must
    change when λ_k > 0 and must stay bit-identical when λ_k = 0 (the view term with λ_view = 0
    included), the other behaviors' weights being positive either way."""
    s = snap.read(three_path)
    meta = GraphMeta(s.n_users, s.n_items, s.behaviors.order, tuple(s.relations))
    cls = MODELS[name].cls
    data = TrainData.from_snapshot(s, "paper", cls.label_relations(meta), 99.99, "cpu")
    graphs = data.graphs(cls.relations(data.meta), "cpu")
    b = meta.behaviors[k]
    moved = lambda rel: rel == b or rel.startswith(f"{b}_not_")  # noqa: E731
    tc = dataclasses.replace(TINY_TRAIN, batch_size=64)
    for lam_k, should_change in ((0.0, False), (0.4, True)):
        lam = tuple(lam_k if j == k else 0.3 for j in range(3))
        base = {**TINY_PARAMS[name], "coefficient": lam, "mess_dropout": 0.0, "node_dropout": 0.0}
        if "neg_weight" in base:
            base["neg_weight"] = (0.2, 0.2, 0.2)
        if name == "ehcf":
            base["user_dropout"] = 0.0
        torch.manual_seed(0)
        model = build_model(name, MODELS[name].params(**{k_: v for k_, v in base.items()
                                                        if k_ in MODELS[name].params.__dataclass_fields__}), data.meta)
        model.train()
        gen = torch.Generator().manual_seed(0)
        batch = next(iter(model_batches(model, data, tc.batch_size, tc.drop_last, gen, "cpu")))
        if batch.pairs:
            other = dataclasses.replace(batch, pairs={r: (u, (i + 3) % s.n_items, n) if moved(r) else (u, i, n)
                                                      for r, (u, i, n) in batch.pairs.items()})
        else:
            other = dataclasses.replace(batch, positives={r: _shifted(v, s.n_items) if moved(r) else v
                                                          for r, v in batch.positives.items()})
        g1, parts = _grads(model, batch, graphs)
        g2, _ = _grads(model, other, graphs)
        assert (f"loss_{b}" in parts) == should_change, parts
        if should_change:
            assert not torch.equal(g1, g2), f"{name}: λ_{b} = {lam_k} but its labels do not reach the gradient"
        else:
            assert torch.equal(g1, g2), f"{name}: λ_{b} = 0 but its labels still reach the gradient"


# ------------------------------------------------------------------ per-behavior weights for any cascade

def test_unset_weights_default_for_any_number_of_behaviors():
    assert default_coefficient(1) == (1.0,)
    assert default_coefficient(2) == pytest.approx((5 / 6, 1 / 6))
    assert default_coefficient(4) == pytest.approx((5 / 18, 5 / 18, 5 / 18, 1 / 6))
    for n in (1, 2, 3, 5):
        assert sum(default_coefficient(n)) == pytest.approx(1.0)
    meta = GraphMeta(4, 5, ("click", "collect", "cart", "buy"), ("click", "collect", "cart", "buy"))
    for name in ("hpmr", "ghcf", "lightgcn_m", "ehcf"):
        model = build_model(name, MODELS[name].params(), meta)
        p = model.params
        assert p.coefficient == pytest.approx(default_coefficient(4)) and p.neg_weight == (0.1,) * 4, name


def test_a_wrong_length_names_the_key_the_length_and_the_set_line():
    meta = GraphMeta(4, 5, ("view", "cart", "buy"), ("view", "cart", "buy"))
    cfg = load_config(None, ["models.hpmr.coefficient=[0.8333, 0.1667]"])
    with pytest.raises(ValueError) as exc:
        build_model("hpmr", model_params(cfg, "hpmr"), meta)
    msg = str(exc.value)
    assert "models.hpmr.coefficient has 2 value(s)" in msg and "view → cart → buy needs 3" in msg
    assert "--set models.hpmr.coefficient=[0.4167,0.4167,0.1667]" in msg
    with pytest.raises(ValueError, match=r"models.lightgcn_m.neg_weight has 1 value\(s\).*lightgcn_m.neg_weight="
                                         r"\[0.1,0.1,0.1\]"):
        build_model("lightgcn_m", MODELS["lightgcn_m"].params(neg_weight=(0.1,)), meta)


def test_presets_of_the_three_behavior_data_sets_build_every_model():
    meta = GraphMeta(4, 5, ("view", "cart", "buy"), ("view", "cart", "buy"))
    for preset in ("configs/taobao_mbcgcn.yaml", "configs/retailrocket.yaml"):
        cfg = load_config(preset)
        for name in RECALL:
            build_model(name, model_params(cfg, name), meta)
    cfg = load_config("configs/taobao_mbcgcn.yaml")
    assert cfg.train.protocol == "fixed" and cfg.train.epochs == 100
    assert model_params(cfg, "hpmr").coefficient == pytest.approx((0.0, 5 / 6, 1 / 6))


# ------------------------------------------------------------------ a sub-cascade of the snapshot

def test_train_behaviors_drops_the_views_and_their_derived_relations(three_path, tmp_path):
    tc = dataclasses.replace(TINY_TRAIN, epochs=2, eval_every=1, behaviors=["cart", "buy"])
    params = MODELS["hpmr"].params(**TINY_PARAMS["hpmr"])  # two-value λ, as for cart → buy data
    fit("hpmr", params, tc, three_path, tmp_path / "cb", device="cpu", log=None)
    info, model, data, graphs = open_model(tmp_path / "cb", "cpu")
    assert data.meta.behaviors == ("cart", "buy")
    assert set(data.edges) == {"cart", "buy", "cart_not_buy"} and set(graphs) == {"cart", "buy"}
    with pytest.raises(TrainError, match=r"must be part of the snapshot's cascade view → cart → buy.*"
                                         r"--set train.behaviors=\[cart,buy\]"):
        fit("hpmr", params, dataclasses.replace(tc, behaviors=["buy", "cart"]), three_path, tmp_path / "bad",
            device="cpu", log=None)


# ------------------------------------------------------------------ the fixed protocol

def test_fixed_protocol_reads_the_test_split_once_after_the_last_epoch(three_path, tmp_path, monkeypatch):
    """Every evaluation is recorded with the number of epochs finished by then: under `fixed` the
    only one is of the test split, after the last epoch; the same spy sees `paper` read it early."""
    calls, run = [], {}
    real = train_mod.evaluate_split

    def spy(model, graphs, data, split, *args, **kwargs):
        metrics = run["dir"] / "metrics.jsonl"
        calls.append((split, len(metrics.read_text().splitlines()) if metrics.exists() else 0))
        return real(model, graphs, data, split, *args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate_split", spy)
    params = MODELS["lightgcn"].params(**TINY_PARAMS["lightgcn"])
    tc = TrainConfig(protocol="fixed", epochs=6, batch_size=8, lr=0.02, eval_every=2, seed=7, drop_last=False)
    run["dir"] = tmp_path / "fixed"
    result = fit("lightgcn", params, tc, three_path, run["dir"], device="cpu", log=None)
    assert calls == [("test", 6)]
    rows = [json.loads(r) for r in (run["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and not any("split" in r for r in rows)
    summary = json.loads((run["dir"] / "results.json").read_text())
    assert summary["protocol"] == "fixed" and summary["selection"] is None and summary["best_epoch"] == 6
    assert set(summary["results"]) == {"test"} and result.final["results"] == summary["results"]
    assert "fixed protocol" in (run["dir"] / "results.md").read_text()
    # a checkpoint every eval_every epochs, so a stopped fixed run resumes
    assert (run["dir"] / "checkpoint.pt").is_file() and (run["dir"] / "best.pt").is_file()

    calls.clear()
    run["dir"] = tmp_path / "paper"
    fit("lightgcn", params, dataclasses.replace(tc, protocol="paper"), three_path, run["dir"], device="cpu", log=None)
    assert calls[:3] == [("test", 1), ("test", 3), ("test", 5)]

"""Ranking-stage models (graphrec.ranking): a shared contract on a tiny learnable data set, and the
model-specific properties of DMT (position bias, empty sequences, per-user encoder) and STAN (stage
weights, gradient paths), MLP_Single's independence of tasks and the feature encoder's layout.

The data: 40 users, 30 items in 3 categories (item % 3); user u prefers category u % 3 and its
click/cart sequences mostly hold items of that category. Each user's list has 6 candidates, 3 of
its category (at least one even) and 3 others; cart = item of the preferred category, buy = cart
and even item id. Both labels are learnable from the user's sequences (or id) and the item id.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphrec.ranking.base import RankBatch, Ranker, RankMeta
from graphrec.ranking.dmt import DMT, DMTParams
from graphrec.ranking.features import FeatureEncoder
from graphrec.ranking.mtl import (
    PLE,
    MLPSingle,
    MLPSingleParams,
    MMoE,
    MMoEParams,
    PLEParams,
    SharedBottom,
    SharedBottomParams,
)
from graphrec.ranking.stan import STAN, STANParams, stage_params

N_USERS, N_ITEMS, ROWS = 40, 30, 6
META = RankMeta(n_users=N_USERS, n_items=N_ITEMS, tasks=("cart", "buy"), seq_behaviors=("click", "cart"),
                seq_lengths=(8, 5), n_user_dense=3, n_item_dense=2, n_positions=5)

MODELS: dict[str, tuple[type[Ranker], object]] = {
    "mlp_single": (MLPSingle, MLPSingleParams(dim=8, hidden=(32, 16))),
    "shared_bottom": (SharedBottom, SharedBottomParams(dim=8, bottom=(32, 16), tower=(8,))),
    "mmoe": (MMoE, MMoEParams(dim=8, n_experts=3, expert=(32, 16), tower=(8,))),
    "ple": (PLE, PLEParams(dim=8, expert=(32, 16), tower=(8,))),
    "ple2": (PLE, PLEParams(dim=8, n_shared_experts=1, expert=(16,), tower=(8,), levels=2, dropout=0.1)),
    "dmt": (DMT, DMTParams(dim=8, heads=2, n_experts=3, expert=(32, 16), tower=(8,), pos_weights=(1.0, 2.0))),
    "stan": (STAN, STANParams(dim=8, expert=(32, 16), tower=(8,), seed=3)),
}
STEPS, LR = 100, 0.01


def make_batch(seed: int = 0) -> RankBatch:
    rng = np.random.default_rng(seed)
    pad = META.pad
    seqs, lens = [], []
    for b, length in enumerate(META.seq_lengths):
        s = np.full((N_USERS, length), pad)
        n = rng.integers(1, length + 1, N_USERS)
        if b == 1:
            n[::10] = 0  # some users have no cart sequence
        for u in range(N_USERS):
            pref = np.arange(u % 3, N_ITEMS, 3)
            s[u, :n[u]] = np.where(rng.random(n[u]) < 0.8, rng.choice(pref, n[u]), rng.integers(0, N_ITEMS, n[u]))
        seqs.append(torch.as_tensor(s))
        lens.append(torch.as_tensor(n))
    row_user, items = [], []
    for u in range(N_USERS):
        pref = np.arange(u % 3, N_ITEMS, 3)
        even = rng.choice(pref[pref % 2 == 0])
        same = rng.choice(pref[pref != even], 2, replace=False)
        other = rng.choice(np.setdiff1d(np.arange(N_ITEMS), pref), 3, replace=False)
        lst = rng.permutation(np.concatenate([[even], same, other]))
        row_user += [u] * ROWS
        items += lst.tolist()
    row_user, items = np.array(row_user), np.array(items)
    cart = (items % 3 == row_user % 3).astype(np.float32)
    buy = cart * (items % 2 == 0)
    labels = np.stack([cart, buy], 1)
    # pseudo-labels: mean label of the user's earlier rows (list order stands for time), 0 for the first
    pseudo = np.zeros_like(labels)
    for u in range(N_USERS):
        rows = np.flatnonzero(row_user == u)
        for j, r in enumerate(rows[1:], 1):
            pseudo[r] = labels[rows[:j]].mean(0)
    R = len(items)
    return RankBatch(
        users=torch.arange(N_USERS), seqs=tuple(seqs), seq_lens=tuple(lens),
        user_dense=torch.as_tensor(rng.normal(size=(N_USERS, META.n_user_dense)), dtype=torch.float32),
        user_rows=torch.full((N_USERS,), ROWS), row_user=torch.as_tensor(row_user), items=torch.as_tensor(items),
        item_dense=torch.as_tensor(rng.normal(size=(R, META.n_item_dense)), dtype=torch.float32),
        position=torch.as_tensor(rng.integers(0, META.n_positions, R)),
        labels=torch.as_tensor(labels), pseudo=torch.as_tensor(pseudo))


BATCH = make_batch()


def build(name: str, seed: int = 0) -> Ranker:
    torch.manual_seed(seed)
    cls, params = MODELS[name]
    return cls(params, META)


def per_row(batch: RankBatch) -> RankBatch:
    """Every row as its own user: per-user inputs duplicated per row (the naive computation)."""
    ru = batch.row_user
    return dataclasses.replace(batch, users=batch.users[ru], seqs=tuple(s[ru] for s in batch.seqs),
                               seq_lens=tuple(n[ru] for n in batch.seq_lens), user_dense=batch.user_dense[ru],
                               user_rows=batch.user_rows[ru], row_user=torch.arange(batch.n_rows))


def grouped_auc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Mean per-group AUC (ties count half), over groups that hold both classes."""
    aucs = []
    for g in np.unique(groups):
        s, y = scores[groups == g], labels[groups == g]
        pos, neg = s[y > 0], s[y == 0]
        if len(pos) and len(neg):
            aucs.append(((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()))
    return float(np.mean(aucs))


def eval_loss(model: Ranker, batch: RankBatch) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        loss = float(model.loss(batch)[0])
    model.train(was)
    return loss


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    """Each model before and after STEPS full-batch Adam steps (shared by the tests below)."""
    out = {}
    for name in MODELS:
        model = build(name)
        before = eval_loss(model, BATCH)
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        model.train()
        for _ in range(STEPS):
            loss, parts = model.loss(BATCH)
            assert torch.isfinite(loss) and all(np.isfinite(v) for v in parts.values()), (name, parts)
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[name] = (model, before, eval_loss(model, BATCH))
    return out


# ---------------------------------------------------------------------------------- every model

@pytest.mark.parametrize("name", sorted(MODELS))
def test_builds_with_finite_logits_and_loss(name):
    model = build(name)
    z = model.logits(BATCH)
    assert z.shape == (BATCH.n_rows, len(META.tasks)) and torch.isfinite(z).all()
    loss, parts = model.loss(BATCH)
    assert loss.dim() == 0 and torch.isfinite(loss) and all(np.isfinite(v) for v in parts.values())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_lowers_the_loss_and_ranks_the_target(name, trained):
    model, before, after = trained[name]
    assert after < 0.6 * before, f"{name}: loss {before:.4f} -> {after:.4f}"
    scores = model.predict(BATCH)[:, -1].numpy()
    auc = grouped_auc(scores, BATCH.labels[:, -1].numpy(), BATCH.row_user.numpy())
    assert auc > 0.8, f"{name}: grouped AUC of {META.target} {auc:.3f}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padding_row_stays_zero(name, trained):
    model = trained[name][0]
    for enc in (m for m in model.modules() if isinstance(m, FeatureEncoder)):
        assert torch.equal(enc.item[META.pad], torch.zeros(enc.dim))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_round_trip_gives_identical_logits(name):
    model, clone = build(name, seed=1), build(name, seed=2)
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.logits(BATCH), clone.logits(BATCH), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_builds_the_same_model(name):
    a, b, c = build(name, seed=5), build(name, seed=5), build(name, seed=6)
    for m in (a, b, c):
        m.eval()
    with torch.no_grad():
        torch.testing.assert_close(a.logits(BATCH), b.logits(BATCH), rtol=0, atol=0)
        assert not torch.equal(a.logits(BATCH), c.logits(BATCH))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predict_is_a_probability_and_keeps_the_mode(name):
    model = build(name)
    for mode in (True, False):
        model.train(mode)
        p = model.predict(BATCH)
        assert model.training is mode
        assert p.shape == (BATCH.n_rows, len(META.tasks)) and ((p >= 0) & (p <= 1)).all()
    model.train()
    torch.testing.assert_close(model.predict(BATCH), model.predict(BATCH), rtol=0, atol=0)  # eval: no dropout


@pytest.mark.parametrize("name", sorted(MODELS))
def test_per_user_inputs_gathered_per_row_equal_the_per_row_computation(name):
    model = build(name).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.logits(BATCH), model.logits(per_row(BATCH)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padding_contents_do_not_matter(name):
    """Entries past a sequence's length are masked: any ids there give the same logits."""
    model = build(name).eval()
    rng = torch.Generator().manual_seed(0)
    seqs = []
    for s, n in zip(BATCH.seqs, BATCH.seq_lens):
        junk = torch.randint(0, N_ITEMS, s.shape, generator=rng)
        seqs.append(torch.where(torch.arange(s.shape[1]) < n[:, None], s, junk))
    with torch.no_grad():
        torch.testing.assert_close(model.logits(BATCH), model.logits(dataclasses.replace(BATCH, seqs=tuple(seqs))),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_task_weights_are_checked(name):
    cls, params = MODELS[name]
    with pytest.raises(ValueError, match="task_weights"):
        cls(dataclasses.replace(params, task_weights=(1.0,)), META)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_runs_without_dense_features(name):
    meta = dataclasses.replace(META, n_user_dense=0, n_item_dense=0)
    batch = dataclasses.replace(BATCH, user_dense=BATCH.user_dense[:, :0], item_dense=BATCH.item_dense[:, :0])
    torch.manual_seed(0)
    cls, params = MODELS[name]
    model = cls(params, meta)
    loss, _ = model.loss(batch)
    assert torch.isfinite(loss) and model.logits(batch).shape == (batch.n_rows, 2)


@pytest.mark.parametrize("cls, bad", [
    (MLPSingleParams, dict(dim=0)), (MLPSingleParams, dict(dropout=1.0)), (SharedBottomParams, dict(bottom=())),
    (MMoEParams, dict(n_experts=0)), (MMoEParams, dict(tower=(0,))), (PLEParams, dict(levels=0)),
    (PLEParams, dict(n_shared_experts=0)), (DMTParams, dict(dim=10, heads=4)), (DMTParams, dict(bias_dropout=-0.1)),
    (DMTParams, dict(pos_weights=(1.0, 0.0))), (STANParams, dict(expert=())), (STANParams, dict(dropout=1.5)),
])
def test_params_are_validated(cls, bad):
    with pytest.raises(ValueError):
        cls(**bad)


# ---------------------------------------------------------------------------------- feature encoder

def test_feature_encoder_layout():
    torch.manual_seed(0)
    enc = FeatureEncoder(META, 4)
    flat, tokens = enc.flat(BATCH), enc.user_tokens(BATCH)
    assert enc.in_dim == 4 * 4 + 3 + 2 and flat.shape == (BATCH.n_rows, enc.in_dim)
    assert tokens.shape == (N_USERS, 1 + len(META.seq_behaviors), 4)
    r, u = 7, int(BATCH.row_user[7])
    pooled = []
    for s, n in zip(BATCH.seqs, BATCH.seq_lens):
        ids = s[u, :n[u]]
        pooled.append(enc.item[ids].mean(0) if len(ids) else torch.zeros(4))
    want = torch.cat([enc.user[u], enc.item[BATCH.items[r]], *pooled, BATCH.user_dense[u], BATCH.item_dense[r]])
    torch.testing.assert_close(flat[r], want)
    empty = int(torch.nonzero(BATCH.seq_lens[1] == 0)[0])
    assert torch.equal(tokens[empty, 2], torch.zeros(4))
    emb, pad = enc.seq_emb(0, BATCH)
    assert emb.shape == (N_USERS, 8, 4) and torch.equal(pad, BATCH.seqs[0] == META.pad)


# ---------------------------------------------------------------------------------- MLP_Single

def test_mlp_single_shares_nothing_between_tasks():
    model = build("mlp_single")
    z = model.logits(BATCH)
    F.binary_cross_entropy_with_logits(z[:, 0], BATCH.labels[:, 0]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.per_task[0]["mlp"].parameters())
    assert model.per_task[0]["features"].user.grad is not None
    # the logits' concatenation hands task 1 an all-zero gradient
    assert all(p.grad is None or not p.grad.any() for p in model.per_task[1].parameters())
    ids = [{id(p) for p in t.parameters()} for t in model.per_task]
    assert not ids[0] & ids[1] and sum(map(len, ids)) == len(list(model.parameters()))


# ---------------------------------------------------------------------------------- DMT

def test_dmt_serving_ignores_position_but_training_does_not():
    model = build("dmt").eval()
    moved = dataclasses.replace(BATCH, position=(BATCH.position + 1) % META.n_positions)
    with torch.no_grad():
        torch.testing.assert_close(model.logits(BATCH), model.logits(moved), rtol=0, atol=0)
        assert abs(float(model.loss(BATCH)[0]) - float(model.loss(moved)[0])) > 1e-6
    model.train()
    model.loss(BATCH)[0].backward()
    assert model.position.grad is not None and model.position.grad.abs().sum() > 0


def test_dmt_loss_is_the_biased_plus_unbiased_weighted_bce():
    model = build("dmt").eval()
    with torch.no_grad():
        z, zb, y = model.logits(BATCH), model.bias_logit(BATCH), BATCH.labels
        pw = torch.tensor([1.0, 2.0])

        def bce(logit):
            p = torch.sigmoid(logit)
            return -(pw * y * p.log() + (1 - y) * (1 - p).log()).mean(0)

        want = (bce(z + zb) + bce(z)).sum()
        torch.testing.assert_close(model.loss(BATCH)[0], want, rtol=1e-5, atol=1e-6)


def test_dmt_user_without_sequences_is_finite():
    empty = dataclasses.replace(
        BATCH, seqs=tuple(torch.where(torch.arange(N_USERS)[:, None] < 3, META.pad, s) for s in BATCH.seqs),
        seq_lens=tuple(torch.where(torch.arange(N_USERS) < 3, 0, n) for n in BATCH.seq_lens))
    model = build("dmt")
    loss, _ = model.loss(empty)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        feats = model.sequence_features(empty)
        assert torch.isfinite(model.logits(empty)).all() and torch.isfinite(feats).all()
        assert torch.equal(feats[empty.row_user < 3], torch.zeros_like(feats[empty.row_user < 3]))


def test_dmt_per_user_encoder_equals_per_row_encoder():
    model = build("dmt").eval()
    with torch.no_grad():
        naive = model.sequence_features(per_row(BATCH))
        torch.testing.assert_close(model.sequence_features(BATCH), naive, rtol=1e-5, atol=1e-5)
        # and a literal loop: row r alone, as a one-user batch
        for r in (0, 13, 101):
            u = int(BATCH.row_user[r])
            one = dataclasses.replace(
                BATCH, users=BATCH.users[u:u + 1], seqs=tuple(s[u:u + 1] for s in BATCH.seqs),
                seq_lens=tuple(n[u:u + 1] for n in BATCH.seq_lens), user_dense=BATCH.user_dense[u:u + 1],
                user_rows=BATCH.user_rows[u:u + 1], row_user=torch.zeros(1, dtype=torch.long),
                items=BATCH.items[r:r + 1], item_dense=BATCH.item_dense[r:r + 1], position=BATCH.position[r:r + 1],
                labels=None, pseudo=None)
            torch.testing.assert_close(model.sequence_features(one)[0], naive[r], rtol=1e-5, atol=1e-5)


def test_dmt_rejects_sequences_longer_than_its_positions():
    model = build("dmt")
    long = dataclasses.replace(BATCH, seqs=(torch.cat([BATCH.seqs[0], BATCH.seqs[0]], 1), BATCH.seqs[1]))
    with pytest.raises(ValueError, match="learned positions"):
        model.logits(long)


# ---------------------------------------------------------------------------------- STAN

@pytest.mark.parametrize("ytilde", [0.0, 0.3, 0.77, 1.0])
@pytest.mark.parametrize("n", [0, 1, 2, 6, 25])
def test_stan_stage_params_equal_algorithm_1(ytilde, n):
    alpha = beta = 1.0
    c = 0
    for _ in range(n):  # the user's samples in time order
        c += 1
        alpha += ytilde * c
        beta += (1 - ytilde) * c
    a, b = stage_params(torch.tensor([[ytilde, ytilde]], dtype=torch.float64), torch.tensor([n]))
    assert a.shape == (1, 2)
    torch.testing.assert_close(a, torch.full((1, 2), alpha, dtype=torch.float64))
    torch.testing.assert_close(b, torch.full((1, 2), beta, dtype=torch.float64))


def test_stan_gamma_is_a_detached_beta_draw():
    model = build("stan").train()
    ytilde = torch.tensor([0.3, 0.8, 0.5]).repeat(4000, 1).requires_grad_()
    n = torch.full((4000,), 3)
    gamma = model.stage_weights(ytilde, n)
    assert not gamma.requires_grad and gamma.grad_fn is None and gamma.shape == ytilde.shape
    a, b = stage_params(ytilde.detach(), n)
    torch.testing.assert_close(gamma.mean(0), (a / (a + b))[0], rtol=0, atol=0.01)
    assert gamma.std(0).min() > 0.05  # drawn, not the mean
    again = model.stage_weights(ytilde, n)
    assert not torch.equal(gamma, again)  # refreshed per call
    model.eval()
    torch.testing.assert_close(model.stage_weights(ytilde, n), a / (a + b))
    # seeded by params.seed: a second model replays the same draws
    other = build("stan", seed=9).train()
    torch.testing.assert_close(other.stage_weights(ytilde, n), gamma, rtol=0, atol=0)


def test_stan_preference_module_learns_from_the_pseudo_label_loss_only():
    model = build("stan").train()
    pref = list(model.preference.parameters())
    terms = model.loss_terms(BATCH)
    assert not terms["gamma"].requires_grad
    (terms["task"] * model.task_weights).sum().backward()
    assert all(p.grad is None for p in pref)
    assert all(p.grad is not None for p in model.backbone.parameters())
    model.zero_grad(set_to_none=True)
    (model.loss_terms(BATCH)["pseudo"] * model.task_weights).sum().backward()
    only_pseudo = [p.grad.clone() for p in pref]
    assert all(g.abs().sum() > 0 for g in only_pseudo)
    model.zero_grad(set_to_none=True)
    model.loss(BATCH)[0].backward()
    for p, g in zip(pref, only_pseudo):
        torch.testing.assert_close(p.grad, g)


def test_stan_loss_is_gamma_weighted_bce_plus_pseudo_mse():
    model = build("stan").eval()
    with torch.no_grad():
        terms = model.loss_terms(BATCH)
        z, y, ru = model.logits(BATCH), BATCH.labels, BATCH.row_user
        a, b = stage_params(terms["ytilde"], BATCH.user_rows)
        gamma = (a / (a + b))[ru]
        bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        want = ((gamma * bce).mean(0) + (BATCH.pseudo - terms["ytilde"][ru]).square().mean(0)).sum()
        torch.testing.assert_close(model.loss(BATCH)[0], want)
        assert terms["ytilde"].shape == (N_USERS, 2) and ((terms["ytilde"] > 0) & (terms["ytilde"] < 1)).all()


# ---------------------------------------------------------------------------------- CUDA

@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(MODELS))
def test_cuda_matches_cpu(name):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = build(name).eval()
    gpu = build(name).cuda().eval()
    batch = BATCH.to("cuda")
    with torch.no_grad():
        zg = gpu.logits(batch)
        assert zg.device.type == "cuda"
        torch.testing.assert_close(zg.cpu(), model.logits(BATCH), rtol=1e-4, atol=1e-4)
    model.train(), gpu.train()
    loss, _ = gpu.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    if name == "stan":  # γ is drawn on the CPU: the same seed gives the same draws on any device
        yt, n = torch.rand(5, 2), torch.full((5,), 4)
        on_gpu = build(name).cuda().train().stage_weights(yt.cuda(), n.cuda())
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(build(name).train().stage_weights(yt, n), on_gpu.cpu())


def test_every_registered_ranking_model_is_in_this_contract():
    from graphrec.ranking.registry import RANKERS as REGISTRY

    ranking = {name for name, entry in REGISTRY.items() if entry.stage == "ranking"}
    assert ranking == {name for name in MODELS if name != "ple2"}
    for name in ranking:
        assert REGISTRY[name].cls is MODELS[name][0] and REGISTRY[name].params is type(MODELS[name][1])

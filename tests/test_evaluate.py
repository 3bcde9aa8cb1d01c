"""graphrec.evaluate: hand-computed full-ranking metrics, both NDCG ideals, exclusion rules, batching
invariance, the sampled protocol's negatives and pessimistic ranks, a numpy reference, CUDA vs CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrec.evaluate import (
    UserItems,
    evaluate_full,
    evaluate_ranks,
    evaluate_sampled,
    masked_topk,
    metrics_from_hits,
    row_topk,
    sample_negatives,
    topk_hits,
)

# 3 users x 6 items; items are ranked by score, highest first.
HAND_SCORES = torch.tensor([
    # i0   i1   i2   i3   i4   i5
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # u0: train i0 (its best item), test i2, cart i2
    [0.1, 0.6, 0.2, 0.9, 0.3, 0.5],  # u1: train i5, test i3 and i2
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # u2: train i1, no test items -> skipped
])
HAND_TRAIN = UserItems.from_pairs([0, 1, 2], [0, 5, 1], 3)
HAND_TEST = UserItems.from_pairs([0, 1, 1], [2, 3, 2], 3)
HAND_CART = UserItems.from_pairs([0, 1], [2, 1], 3)
L3 = math.log2(3)
# u0: i0 excluded -> ranking i1, i2, i3, i4, i5 -> test i2 at rank 2 (rank 3 had i0 stayed).
#     K=1: hit list [0]        hr 0  recall 0    precision 0    ndcg 0
#     K=3: hit list [0, 1, 0]  hr 1  recall 1/1  precision 1/3  ndcg = (1/log2(3)) / 1
#          (1 test item: IDCG = 1/log2(2) = 1 under both ideals)
# u1: i5 excluded -> ranking i3 (.9), i1 (.6), i4 (.3), i2 (.2), i0 (.1) -> i3 rank 1, i2 rank 4.
#     K=1: hit list [1]        hr 1  recall 1/2  precision 1    ndcg 1/1 (IDCG: min(2, 1) = 1 term)
#     K=3: hit list [1, 0, 0]  hr 1  recall 1/2  precision 1/3  DCG = 1
#          standard IDCG = 1/log2(2) + 1/log2(3)  (2 test items) -> ndcg = 1 / (1 + 1/log2(3))
#          hits IDCG = 1/log2(2)                   (1 hit in the list) -> ndcg = 1
# u2: skipped. Averages over u0, u1:
HAND_EXPECTED = {
    "hr@1": (0 + 1) / 2,
    "recall@1": (0 + 1 / 2) / 2,
    "precision@1": (0 + 1) / 2,
    "ndcg@1": (0 + 1) / 2,
    "hr@3": (1 + 1) / 2,
    "recall@3": (1 + 1 / 2) / 2,
    "precision@3": (1 / 3 + 1 / 3) / 2,
    "ndcg@3": (1 / L3 + 1 / (1 + 1 / L3)) / 2,
    "users": 2,
}
HAND_NDCG3_HITS = (1 / L3 + 1) / 2


def lookup(scores: torch.Tensor):
    """A score_fn that returns fixed rows: its values cannot depend on the batch it is called with."""
    return lambda u: scores.to(u.device)[u]


def lookup_pairs(scores: torch.Tensor):
    return lambda u, items: scores.to(u.device)[u.unsqueeze(1), items]


def assert_metrics(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


# -- UserItems ------------------------------------------------------------------------------------

def test_user_items_from_pairs_groups_sorts_and_dedups():
    ui = UserItems.from_pairs(np.array([2, 0, 2, 2, 0]), torch.tensor([5, 3, 1, 5, 0]), 4)
    assert ui.indptr.tolist() == [0, 2, 2, 4, 4]
    assert ui.indices.tolist() == [0, 3, 1, 5]
    assert ui.counts().tolist() == [2, 0, 2, 0]
    row, item = ui.rows(torch.tensor([2, 1, 0, 2]))
    assert row.tolist() == [0, 0, 2, 2, 3, 3]
    assert item.tolist() == [1, 5, 0, 3, 1, 5]


def test_user_items_rejects_bad_input():
    with pytest.raises(ValueError, match="outside"):
        UserItems.from_pairs([0, 3], [1, 1], 3)
    with pytest.raises(ValueError, match="integer"):
        UserItems.from_pairs(np.array([0.0]), [1], 3)
    with pytest.raises(ValueError, match="length"):
        UserItems.from_pairs([0, 1], [1], 3)


# -- full ranking: hand-computed -------------------------------------------------------------------

def test_full_ranking_hand_computed():
    got = evaluate_full(lookup(HAND_SCORES), [0, 1, 2], HAND_TEST, HAND_TRAIN, 6, ks=(1, 3))
    assert_metrics(got, HAND_EXPECTED)


def test_ndcg_hits_ideal_differs_on_two_test_item_user_only():
    got = evaluate_full(lookup(HAND_SCORES), [0, 1, 2], HAND_TEST, HAND_TRAIN, 6, ks=(1, 3), ndcg_ideal="hits")
    assert_metrics(got, {**HAND_EXPECTED, "ndcg@3": HAND_NDCG3_HITS})
    per_std = evaluate_full(lookup(HAND_SCORES), [0, 1, 2], HAND_TEST, HAND_TRAIN, 6, ks=(1, 3), per_user=True)
    per_hits = evaluate_full(lookup(HAND_SCORES), [0, 1, 2], HAND_TEST, HAND_TRAIN, 6, ks=(1, 3),
                             ndcg_ideal="hits", per_user=True)
    assert per_std["users"].tolist() == per_hits["users"].tolist() == [0, 1]
    assert per_std["ndcg@3"].tolist() == pytest.approx([1 / L3, 1 / (1 + 1 / L3)], rel=1e-12)
    assert per_hits["ndcg@3"].tolist() == pytest.approx([1 / L3, 1.0], rel=1e-12)
    assert per_std["recall@1"].tolist() == [0.0, 0.5]


def test_metrics_from_hits_ideal_variants_by_hand():
    # Hit list r = [1, 0, 1] (max K = 3), 4 test items; ks = (2, 3).
    #   K=2: DCG = 1/log2(2) = 1
    #        standard IDCG = 1 + 1/log2(3)  (min(4, 2) = 2 ideal hits)
    #        hits IDCG: the reference sorts the whole list r -> [1, 1, 0], keeps 2 -> 1 + 1/log2(3),
    #        although only 1 hit lies in r[:2]
    #   K=3: DCG = 1 + 1/log2(4) = 3/2
    #        standard IDCG = 1 + 1/log2(3) + 1/log2(4)  (min(4, 3) = 3)
    #        hits IDCG = 1 + 1/log2(3)                  (2 hits)
    hits = torch.tensor([[True, False, True]])
    std = metrics_from_hits(hits, torch.tensor([4]), (2, 3))
    ref = metrics_from_hits(hits, torch.tensor([4]), (2, 3), ndcg_ideal="hits")
    assert float(std["ndcg@2"]) == pytest.approx(1 / (1 + 1 / L3), rel=1e-12)
    assert float(ref["ndcg@2"]) == pytest.approx(1 / (1 + 1 / L3), rel=1e-12)
    assert float(std["ndcg@3"]) == pytest.approx(1.5 / (1 + 1 / L3 + 1 / 2), rel=1e-12)
    assert float(ref["ndcg@3"]) == pytest.approx(1.5 / (1 + 1 / L3), rel=1e-12)
    assert float(std["recall@3"]) == 2 / 4 and float(std["precision@3"]) == 2 / 3
    assert float(std["recall@2"]) == 1 / 4 and float(std["precision@2"]) == 1 / 2
    # No hits: 0 under both ideals, not NaN.
    none = torch.zeros(1, 3, dtype=torch.bool)
    for ideal in ("standard", "hits"):
        assert float(metrics_from_hits(none, torch.tensor([1]), (3,), ndcg_ideal=ideal)["ndcg@3"]) == 0.0
    with pytest.raises(ValueError):
        metrics_from_hits(hits, torch.tensor([1]), (4,))
    with pytest.raises(ValueError):
        metrics_from_hits(hits, torch.tensor([1]), (3,), ndcg_ideal="ideal")  # type: ignore[arg-type]


# -- exclusion rules -------------------------------------------------------------------------------

def test_excluded_train_items_never_in_top_k():
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.standard_normal((20, 30)))
    u, i = rng.integers(0, 20, 200), rng.integers(0, 30, 200)
    train = UserItems.from_pairs(u, i, 20)
    users = torch.arange(20)
    top = masked_topk(scores, 10, train.rows(users))
    for user in range(20):
        banned = set(train.indices[train.indptr[user]:train.indptr[user + 1]].tolist())
        assert banned.isdisjoint(top[user].tolist())
        # and the rest is exactly the 10 best non-excluded items
        allowed = [j for j in np.argsort(-scores[user].numpy(), kind="stable") if j not in banned]
        assert top[user].tolist() == allowed[:10]


def test_test_item_never_excluded_even_if_in_cart():
    # Exclusion passed as train + cart: u0's test item i2 is also in its cart, u1's test i3 is not.
    train_and_cart = UserItems.from_pairs([0, 1, 2, 0, 1], [0, 5, 1, 2, 1], 3)
    got = evaluate_full(lookup(HAND_SCORES), [0, 1, 2], HAND_TEST, train_and_cart, 6, ks=(1, 3))
    # u0: i0 excluded, i2 kept -> still rank 2. u1: i5 and i1 excluded -> i3, i4, i2: hits at 1 and 3.
    #   u1 K=3: recall 2/2, precision 2/3, DCG = 1 + 1/log2(4) = 3/2, IDCG = 1 + 1/log2(3)
    assert got["hr@3"] == 1.0
    assert got["recall@3"] == pytest.approx((1 + 1) / 2)
    assert got["precision@3"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert got["ndcg@3"] == pytest.approx((1 / L3 + 1.5 / (1 + 1 / L3)) / 2, rel=1e-12)
    # The cart is not an exclusion: with train only, u0's cart item i2 (its test item) is ranked as usual.
    assert evaluate_full(lookup(HAND_SCORES), [0], HAND_TEST, HAND_TRAIN, 6, ks=(3,))["hr@3"] == 1.0
    # topk_hits directly: the test pair wins over an exclusion of the same pair.
    hits = topk_hits(HAND_SCORES[:1], 1, (torch.tensor([0, 0]), torch.tensor([0, 2])),
                     (torch.tensor([0]), torch.tensor([1])))
    assert hits.tolist() == [[True]]


def test_scores_are_not_modified_and_k_beyond_items_pads():
    scores = HAND_SCORES.clone()
    hits = topk_hits(scores, 8, HAND_TRAIN.rows(torch.arange(3)), HAND_TEST.rows(torch.arange(3)))
    assert torch.equal(scores, HAND_SCORES)
    assert hits.shape == (3, 8) and not hits[:, 6:].any()
    # u1: i3, i1, i4, i2, i0, then the excluded i5 fills the tail
    assert hits[1].tolist() == [True, False, False, True, False, False, False, False]


@pytest.mark.parametrize("n", [7977, 4096, 300])
def test_row_topk_block_prefilter_equals_a_full_topk(n):
    # Wide rows take the block-maximum path (n >= 4 * 32 * k); -inf, repeated values and a ragged
    # tail must not change which values are selected, and without ties not which items.
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(64, n, generator=gen)
    for k in (1, 10, 20):
        assert torch.equal(row_topk(x, k), x.topk(k, dim=1).indices)
    x[:8] = torch.randint(0, 5, (8, n), generator=gen).float()   # many ties at the top
    x[8:16, : n - 3] = -math.inf                                    # only 3 finite items, in the tail
    x[16, :] = -math.inf                                            # nothing finite at all
    for k in (1, 10):
        got = row_topk(x, k)
        assert torch.equal(x.gather(1, got), x.topk(k, dim=1).values)
        assert all(len(set(r)) == k for r in got.tolist())          # k distinct items per row
    # A view into a wider buffer (how bilinear scorers return their aligned rows)
    wide = torch.randn(32, n + 23, generator=gen)
    assert torch.equal(row_topk(wide[:, :n], 10), wide[:, :n].topk(10, dim=1).indices)


def test_masked_topk_restores_the_scores_it_masks_in_place():
    scores = torch.randn(40, 5000, generator=torch.Generator().manual_seed(0))
    before = scores.clone()
    rng = np.random.default_rng(0)
    train = UserItems.from_pairs(rng.integers(0, 40, 3000), rng.integers(0, 5000, 3000), 40)
    test = UserItems.from_pairs(np.arange(40), rng.integers(0, 5000, 40), 40)
    top = masked_topk(scores, 10, train.rows(torch.arange(40)), keep=test.rows(torch.arange(40)))
    assert torch.equal(scores, before)
    masked = before.clone()
    masked[train.rows(torch.arange(40))] = -math.inf
    r, i = test.rows(torch.arange(40))
    masked[r, i] = before[r, i]
    assert torch.equal(top, masked.topk(10, dim=1).indices)
    # A tensor that needs its gradient is copied, never touched in place
    g = before.clone().requires_grad_()
    assert torch.equal(masked_topk(g, 10, train.rows(torch.arange(40)), keep=test.rows(torch.arange(40))), top)


# -- rank counting (evaluate_ranks) ----------------------------------------------------------------

def table_pairs(scores: torch.Tensor, counter: list | None = None):
    """score_pairs over a fixed table; broadcast ids index it as a grid. ``counter`` adds up cells."""
    def score(u, i):
        out = scores.to(u.device)[u, i]
        if counter is not None:
            counter.append(out.numel())
        return out
    return score


@pytest.mark.parametrize("ks", [(1, 5, 10), (3, 60)])   # 60 > 40 items: the hit list pads
def test_evaluate_ranks_equals_evaluate_full(ks):
    scores, train, test = random_split(50, 40, seed=4)   # a permutation: no ties
    (tr, ti), (er, ei) = test.rows(torch.arange(50)), train.rows(torch.arange(50))
    assert bool(torch.isin(tr * 40 + ti, er * 40 + ei).any())   # a test item is also excluded
    full = evaluate_full(lookup(scores), np.arange(50), test, train, 40, ks=ks, per_user=True)
    for cells, bs in ((1, 7), (5, 50), (10_000, 3)):
        ranked = evaluate_ranks(table_pairs(scores), np.arange(50), test, train, 40, ks=ks, batch_size=bs,
                                cells=cells, per_user=True)
        assert set(ranked) == set(full)
        for key in full:
            assert torch.equal(ranked[key], full[key]), key


def test_evaluate_ranks_orders_ties_by_item_id_and_nan_pessimistically():
    # u0: items 0..4 score [1, 2, 2, 2, 0], test item 2: item 1 (lower id) ranks above it, item 3
    # does not -> rank 2. u1: test item 0 scores NaN -> never a hit. u2: a NaN item ranks above
    # test item 4 (score 9) -> rank 2.
    nan = math.nan
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0], [nan, 5.0, 4.0, 3.0, 2.0], [0.0, nan, 1.0, 2.0, 9.0]])
    test = UserItems.from_pairs([0, 1, 2], [2, 0, 4], 3)
    none = UserItems.from_pairs([], [], 3)
    got = evaluate_ranks(table_pairs(scores), [0, 1, 2], test, none, 5, ks=(1, 2), per_user=True)
    assert got["hr@1"].tolist() == [0.0, 0.0, 0.0]
    assert got["hr@2"].tolist() == [1.0, 0.0, 1.0]
    assert got["ndcg@2"][0] == pytest.approx(1 / L3)


def test_evaluate_ranks_stops_scanning_a_user_once_k_items_beat_the_test_item():
    n_users, n_items = 64, 500
    scores = torch.arange(n_items, 0, -1, dtype=torch.float32).expand(n_users, -1).clone()
    test = UserItems.from_pairs(np.arange(n_users), np.full(n_users, n_items - 1), n_users)  # last everywhere
    train = UserItems.from_pairs(np.arange(n_users), np.zeros(n_users, dtype=np.int64), n_users)  # item 0 popular
    cells: list[int] = []
    got = evaluate_ranks(table_pairs(scores, cells), np.arange(n_users), test, train, n_items, ks=(10,), cells=64)
    assert got["hr@10"] == 0.0
    # Test and excluded pairs, then ~11 items per user (item 0 is excluded): far from 64 × 500.
    assert sum(cells) <= 2 * n_users + 12 * n_users


# -- batching --------------------------------------------------------------------------------------

def random_split(n_users: int, n_items: int, seed: int):
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float32))
    n_tr, n_te = n_users * 5, n_users * 2
    train = UserItems.from_pairs(rng.integers(0, n_users, n_tr), rng.integers(0, n_items, n_tr), n_users)
    test = UserItems.from_pairs(rng.integers(0, n_users, n_te), rng.integers(0, n_items, n_te), n_users)
    return scores, train, test


def test_batching_invariance():
    scores, train, test = random_split(50, 40, seed=1)
    assert (test.counts() == 0).any() and (test.counts() > 1).any()  # skipped and multi-item users present
    runs = [evaluate_full(lookup(scores), np.arange(50), test, train, 40, ks=(1, 5, 10), batch_size=bs)
            for bs in (1, 2, 1000)]
    assert runs[0] == runs[1] == runs[2]
    assert runs[0]["users"] == int((test.counts() > 0).sum())
    per = [evaluate_full(lookup(scores), np.arange(50), test, train, 40, ks=(5,), batch_size=bs, per_user=True)
           for bs in (1, 1000)]
    assert all(torch.equal(per[0][k], per[1][k]) for k in per[0])


def test_no_evaluated_users_gives_nan_and_zero_count():
    got = evaluate_full(lookup(HAND_SCORES), [2], HAND_TEST, HAND_TRAIN, 6, ks=(3,))
    assert got["users"] == 0 and math.isnan(got["hr@3"])


def test_score_fn_shape_is_checked():
    with pytest.raises(ValueError, match="shape"):
        evaluate_full(lambda u: HAND_SCORES[u][:, :5], [0], HAND_TEST, HAND_TRAIN, 6)


# -- numpy reference (hypothesis) ------------------------------------------------------------------

@st.composite
def ranking_cases(draw):
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(2, 25))
    k = draw(st.integers(1, n_items + 2))
    # Distinct scores: a permutation of all user-item cells, so no ties anywhere.
    cells = draw(st.permutations(range(n_users * n_items)))
    scores = np.array(cells, dtype=np.float64).reshape(n_users, n_items)
    test = [draw(st.integers(0, n_items - 1)) for _ in range(n_users)]
    excluded = [draw(st.sets(st.integers(0, n_items - 1), max_size=n_items)) for _ in range(n_users)]
    return scores, test, excluded, k


@settings(max_examples=150, deadline=None)
@given(ranking_cases())
def test_hit_ratio_matches_numpy_reference(case):
    scores, test, excluded, k = case
    n_users, n_items = scores.shape
    train = UserItems.from_pairs([u for u in range(n_users) for _ in excluded[u]],
                                 [i for u in range(n_users) for i in sorted(excluded[u])], n_users)
    tests = UserItems.from_pairs(np.arange(n_users), np.array(test), n_users)
    per = evaluate_full(lookup(torch.from_numpy(scores)), np.arange(n_users), tests, train, n_items,
                        ks=(k,), batch_size=4, per_user=True)
    for u in range(n_users):
        s = scores[u].copy()
        s[[i for i in excluded[u] if i != test[u]]] = -np.inf  # the test item is never excluded
        rank = 1 + int(np.nonzero(np.argsort(-s) == test[u])[0][0])
        assert float(per[f"hr@{k}"][u]) == float(rank <= k)
        assert float(per[f"ndcg@{k}"][u]) == pytest.approx(1 / math.log2(rank + 1) if rank <= k else 0.0)


# -- sampled protocol ------------------------------------------------------------------------------

def sampled_setup(n_users: int = 30, n_items: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    test_items = rng.integers(0, n_items, n_users)
    test = UserItems.from_pairs(np.arange(n_users), test_items, n_users)
    n_tr = n_users * 20
    tr_u, tr_i = rng.integers(0, n_users, n_tr), rng.integers(0, n_items, n_tr)
    exclude = UserItems.from_pairs(np.concatenate([tr_u, np.arange(n_users)]),
                                   np.concatenate([tr_i, test_items]), n_users)
    return test, exclude, test_items


def test_sampled_best_positive_scores_perfect():
    test, exclude, test_items = sampled_setup()
    scores = torch.zeros(30, 300)
    scores[torch.arange(30), torch.from_numpy(test_items)] = 1.0
    got = evaluate_sampled(lookup_pairs(scores), np.arange(30), test, exclude, 300, ks=(1, 10))
    assert got == {"hr@1": 1.0, "ndcg@1": 1.0, "hr@10": 1.0, "ndcg@10": 1.0, "users": 30, "pairs": 30}


def test_sampled_constant_scores_rank_last():
    test, exclude, _ = sampled_setup()
    got = evaluate_sampled(lambda u, items: torch.ones(items.shape), np.arange(30), test, exclude, 300,
                           ks=(10, 99, 100))
    # pessimistic: all 99 tied negatives count above the positive -> rank 100 for every pair
    assert got["hr@10"] == 0.0 and got["ndcg@10"] == 0.0 and got["hr@99"] == 0.0
    assert got["hr@100"] == 1.0
    assert got["ndcg@100"] == pytest.approx(1 / math.log2(101), rel=1e-12)


def test_sampled_nan_positive_ranks_last():
    test, exclude, _ = sampled_setup()
    def fn(u, items):
        return torch.where(torch.arange(items.shape[1]) == 0, math.nan, 1.0).expand(items.shape)
    got = evaluate_sampled(fn, np.arange(30), test, exclude, 300, ks=(99, 100))
    assert got["hr@99"] == 0.0 and got["hr@100"] == 1.0


def test_sampled_negatives_avoid_exclusions_and_are_distinct():
    # 6 users x 120 items, ~70% of each user's items excluded: 99 negatives out of ~36 allowed is
    # impossible, so use 30 and a two-item test user.
    n_users, n_items, n_neg = 6, 120, 30
    rng = np.random.default_rng(7)
    excluded = [set(rng.choice(n_items, size=84, replace=False).tolist()) for _ in range(n_users)]
    test_pairs = [(u, sorted(excluded[u])[0]) for u in range(n_users)] + [(0, sorted(excluded[0])[1])]
    test = UserItems.from_pairs([p[0] for p in test_pairs], [p[1] for p in test_pairs], n_users)
    exclude = UserItems.from_pairs([u for u in range(n_users) for _ in excluded[u]],
                                   [i for u in range(n_users) for i in sorted(excluded[u])], n_users)
    seen = []

    def record(u, items):
        seen.append((u.clone(), items.clone()))
        return torch.zeros(items.shape)

    got = evaluate_sampled(record, np.arange(n_users), test, exclude, n_items, n_negatives=n_neg, batch_size=3)
    assert got["users"] == 6 and got["pairs"] == 7
    users = torch.cat([s[0] for s in seen])
    items = torch.cat([s[1] for s in seen])
    assert items.shape == (7, 1 + n_neg)
    assert sorted(zip(users.tolist(), items[:, 0].tolist())) == sorted(test_pairs)
    for u, row in zip(users.tolist(), items[:, 1:].tolist()):
        assert len(set(row)) == n_neg
        assert excluded[u].isdisjoint(row)
        assert all(0 <= i < n_items for i in row)


def test_sample_negatives_covers_allowed_items_uniformly():
    # One user, 10 allowed items out of 40, 4 negatives, 5000 draws: every allowed item is expected
    # 5000 * 4 / 10 = 2000 times (sd ~ 35); forbidden ones never.
    n_items = 40
    forbidden_items = [i for i in range(n_items) if i % 4 != 1]
    forbidden = UserItems.from_pairs([0] * len(forbidden_items), forbidden_items, 1)
    g = torch.Generator().manual_seed(5)
    neg = sample_negatives(torch.zeros(5000, dtype=torch.int64), forbidden, n_items, 4, g)
    assert all(len(set(r)) == 4 for r in neg.tolist())
    freq = torch.bincount(neg.reshape(-1), minlength=n_items)
    assert freq[torch.tensor(forbidden_items)].sum() == 0
    allowed = freq[1::4]
    assert allowed.numel() == 10 and int(allowed.min()) > 1800 and int(allowed.max()) < 2200
    with pytest.raises(ValueError, match="fewer than"):
        sample_negatives(torch.zeros(1, dtype=torch.int64), forbidden, n_items, 11, g)


def test_sampled_seed_repeatable_and_batch_independent():
    test, exclude, _ = sampled_setup()
    calls: dict[str, list[torch.Tensor]] = {}

    def recorder(name):
        def fn(u, items):
            calls.setdefault(name, []).append(items.clone())
            return torch.sin(items * 0.37 + u.unsqueeze(1))  # per-row, so batching cannot change it
        return fn

    a = evaluate_sampled(recorder("a"), np.arange(30), test, exclude, 300, seed=11, batch_size=7)
    b = evaluate_sampled(recorder("b"), np.arange(30), test, exclude, 300, seed=11, batch_size=4096)
    c = evaluate_sampled(recorder("c"), np.arange(30), test, exclude, 300, seed=12)
    items = {k: torch.cat(v) for k, v in calls.items()}
    assert torch.equal(items["a"], items["b"])
    assert not torch.equal(items["a"], items["c"])
    assert torch.equal(items["a"][:, 0], items["c"][:, 0])  # same positives, different negatives
    assert a["pairs"] == b["pairs"] == c["pairs"] == 30
    g = torch.Generator().manual_seed(11)
    assert evaluate_sampled(recorder("d"), np.arange(30), test, exclude, 300, seed=g) == a


# -- CUDA ------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    scores, train, test = random_split(300, 200, seed=2)
    kw = dict(ks=(1, 10, 20), batch_size=64)
    cpu = evaluate_full(lookup(scores), np.arange(300), test, train, 200, device="cpu", **kw)
    gpu = evaluate_full(lookup(scores), np.arange(300), test, train, 200, device="cuda", **kw)
    assert cpu == gpu
    gpu_pairs = evaluate_sampled(lookup_pairs(scores), np.arange(300), test, train, 200, n_negatives=50,
                                 ks=(10,), seed=3, device="cuda")
    cpu_pairs = evaluate_sampled(lookup_pairs(scores), np.arange(300), test, train, 200, n_negatives=50,
                                 ks=(10,), seed=3, device="cpu")
    assert cpu_pairs == gpu_pairs
    wide = torch.randn(300, 5000, generator=torch.Generator().manual_seed(5))   # row_topk's block path
    wide_train = UserItems.from_pairs(np.repeat(np.arange(300), 3), np.arange(900) % 5000, 300)
    assert (evaluate_full(lookup(wide), np.arange(300), test, wide_train, 5000, device="cuda", **kw)
            == evaluate_full(lookup(wide), np.arange(300), test, wide_train, 5000, device="cpu", **kw))
    ranks = evaluate_ranks(table_pairs(scores), np.arange(300), test, train, 200, device="cuda", cells=500, **kw)
    assert ranks == cpu

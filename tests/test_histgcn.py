"""HistGCN's parts against hand-computed values on a tiny view → buy graph: the pair lookup, the
history terms, the hard negatives, full scores, and that with every part off it is LightGCN."""

from __future__ import annotations

import pytest
import torch

from graphrec.adjacency import has_pairs, normalized_bipartite, sample_row_entries
from graphrec.errors import BadValue
from graphrec.models import MODELS, build_model
from graphrec.models.base import Batch, GraphMeta
from graphrec.models.lightgcn import LightGCNParams

# 3 users, 4 items. Views: u0 {0, 1, 2}, u1 {1}, u2 {}. Buys (training): u0 {0}, u1 {1, 3}, u2 {2}.
VIEW = ([0, 0, 0, 1], [0, 1, 2, 1])
BUY = ([0, 1, 1, 2], [0, 1, 3, 2])
META = GraphMeta(3, 4, ("view", "buy"), ("view", "buy", "view_not_buy"))


def graphs():
    def pairs(edges):
        return {(u, i) for u, i in zip(*edges)}
    union = sorted(pairs(VIEW) | pairs(BUY))
    vnb = sorted(pairs(VIEW) - pairs(BUY))  # u0 {1, 2}
    adj = lambda e: normalized_bipartite(torch.tensor([u for u, _ in e]), torch.tensor([i for _, i in e]), 3, 4)  # noqa: E731
    return {"view|buy": adj(union), "buy": adj(sorted(pairs(BUY))), "view": adj(sorted(pairs(VIEW))),
            "view_not_buy": adj(vnb)}


def model(**kw):
    return build_model("histgcn", MODELS["histgcn"].params(dim=2, **kw), META)


def test_pair_lookup_and_row_draws_are_exact():
    g = graphs()
    users, items = torch.tensor([0, 0, 0, 0, 1, 1, 2]), torch.tensor([0, 1, 2, 3, 1, 0, 2])
    assert has_pairs(g["view"], users, items, 3).tolist() == [True, True, True, False, True, False, False]
    draws = [sample_row_entries(g["view_not_buy"], torch.tensor([0, 1, 2]), torch.Generator().manual_seed(s))
             for s in range(200)]
    # u0 draws item 1 or 2 (nodes 4, 5), about equally; u1 and u2 have no such item
    first = [int(c[0]) - 3 for c, _ in draws]
    assert set(first) == {1, 2} and 70 < first.count(1) < 130
    assert all(f.tolist() == [True, False, False] for _, f in draws)


def test_history_terms_by_hand():
    m, g = model(), graphs()
    with torch.no_grad():
        m.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
        m.weight.fill_(2.0)
        m.conversion.copy_(torch.tensor([[0.0, -0.5, 1.0, 7.0]]))
    users, items = torch.tensor([0, 0, 0, 1, 2]), torch.tensor([1, 2, 3, 1, 1])
    # viewed: (0,1) 0.2 + 2 − 0.5; (0,2) 0.3 + 2 + 1; (0,3) not viewed: 0.4; (1,1) 0.2 + 1.5; (2,1) 0.2
    torch.testing.assert_close(m.pair_terms(g, users, items), torch.tensor([1.7, 3.3, 0.4, 1.7, 0.2]))
    e = m(g)
    scores = m.scorer(g)(torch.tensor([0, 1, 2]))
    dense = e[:3] @ e[3:].T + m.bias + torch.tensor([[2.0, 1.5, 3.0, 0.0], [0.0, 1.5, 0.0, 0.0], [0.0] * 4])
    torch.testing.assert_close(scores, dense)
    assert model(history=False, conversion_bias=False).pair_terms(g, users, items).shape == (5,)  # bias only
    assert model(history=False, conversion_bias=False, item_bias=False).pair_terms(g, users, items) is None


def test_hard_negatives_come_from_the_users_own_unbought_items():
    m, g = model(hard_negatives=1.0), graphs()
    torch.manual_seed(0)
    uniform = torch.tensor([3, 3, 3])
    drawn = torch.stack([m.negatives(g, torch.tensor([0, 1, 2]), uniform)[0] for _ in range(50)])
    assert set(drawn[:, 0].tolist()) == {1, 2}       # u0's views it did not buy
    assert drawn[:, 1:].eq(3).all()                  # u1 and u2 have none: the uniform draw stays
    assert m.negatives(g, torch.tensor([0]), torch.tensor([3]))[0].item() in (1, 2)
    m.eval()
    assert m.negatives(g, torch.tensor([0]), torch.tensor([3]))[0].tolist() == [3]  # never outside training
    assert model(hard_negatives=0.0).negatives(g, torch.tensor([0]), torch.tensor([3]))[0].tolist() == [3]


def test_hard_negatives_train_only_the_item_terms_unless_asked():
    g = graphs()
    batch = Batch(users=torch.tensor([0, 0]), pos={"buy": torch.tensor([0, 0])}, neg={"buy": torch.tensor([3, 3])})
    grads = {}
    for scope in ("terms", "all"):
        torch.manual_seed(1)
        # no propagation and no L2, so that an item's gradient can only come through its own score
        m = model(hard_negatives=1.0, hard_negative_scope=scope, layers=0, reg=0.0)
        m.loss(batch, g)[0].backward()
        grads[scope] = m.item.grad.clone(), m.conversion.grad.clone()
    # u0's drawn negatives are items 1 and 2 (viewed, not bought): their embeddings get a gradient
    # only from scope "all"; their conversion terms from both
    assert grads["terms"][0][1:3].abs().sum() == 0 and grads["all"][0][1:3].abs().sum() > 0
    assert grads["terms"][1][0, 1:3].abs().sum() > 0
    # every negative was drawn, so under "terms" no embedding learns from this batch at all
    assert grads["terms"][0].abs().sum() == 0 and grads["all"][0][0].abs().sum() > 0


def test_with_every_part_off_it_is_lightgcn_on_the_chosen_graph():
    g = graphs()
    batch = Batch(users=torch.tensor([0, 1, 2]), pos={"buy": torch.tensor([0, 3, 2])},
                  neg={"buy": torch.tensor([3, 0, 1])})
    torch.manual_seed(5)
    ours = model(graph="target", history=False, item_bias=False, conversion_bias=False, hard_negatives=0.0,
                 layers=2, init_std=0.1, reg=1e-3)
    torch.manual_seed(5)
    theirs = build_model("lightgcn", LightGCNParams(dim=2, layers=2, init_std=0.1, reg=1e-3), META)
    assert ours.loss(batch, g)[0].item() == pytest.approx(theirs.loss(batch, g)[0].item(), rel=1e-6)
    torch.testing.assert_close(ours.scorer(g)(torch.arange(3)), theirs.scorer(g)(torch.arange(3)))


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(BadValue, match="conversion_bias"):
        MODELS["histgcn"].params(history=False)
    with pytest.raises(BadValue, match="share"):
        MODELS["histgcn"].params(hard_negatives=1.5)
    with pytest.raises(BadValue, match="graph must be"):
        MODELS["histgcn"].params(graph="views")
    with pytest.raises(BadValue, match="upstream behavior"):
        build_model("histgcn", MODELS["histgcn"].params(), GraphMeta(3, 4, ("buy",), ("buy",)))


def test_the_untrained_floor_ranks_upstream_items_first_by_purchases():
    """bench/ideas.py's first row: the user's own upstream items first, by training purchases."""
    import types

    from ideas import HistoryPopularity

    g = graphs()
    data = types.SimpleNamespace(meta=META, edges={"buy": ([0, 1, 2, 2], [1, 1, 1, 3])})
    s = HistoryPopularity(data).scorer(g)(torch.tensor([0, 1, 2]))
    pop = torch.tensor([0.0, 3.0, 0.0, 1.0])  # training purchases per item
    expected = pop.repeat(3, 1)
    expected[0, :3] += 1e6  # u0 viewed 0, 1, 2
    expected[1, 1] += 1e6   # u1 viewed 1
    torch.testing.assert_close(s, expected)

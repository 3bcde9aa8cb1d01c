"""The whole-data loss equals its naive dense definition; BPR and L2 on hand-computed values."""

import math

import pytest
import torch

from graphrec.losses import bpr_loss, floored_bpr_loss, l2, naive_whole_data_loss, whole_data_loss


@pytest.mark.parametrize("c0", [0.1, 0.01, 1.0])
def test_whole_data_loss_equals_the_naive_sum(c0):
    g = torch.Generator().manual_seed(0)
    users, items, h = (torch.randn(4, 3, generator=g, dtype=torch.float64),
                       torch.randn(6, 3, generator=g, dtype=torch.float64),
                       torch.randn(3, generator=g, dtype=torch.float64))
    # user 0: items 1, 4; user 1: item 0; user 2: none; user 3: items 2, 3, 5
    rows, cols = torch.tensor([0, 0, 1, 3, 3, 3]), torch.tensor([1, 4, 0, 2, 3, 5])
    labels = torch.zeros(4, 6, dtype=torch.float64)
    labels[rows, cols] = 1.0
    fast = whole_data_loss(users, items, h, rows, cols, c0)
    naive = naive_whole_data_loss(users, items, h, labels, c0)
    assert fast.item() == pytest.approx(naive.item(), rel=1e-12)
    # and the naive form is what it says: Σ c_uv (y − ŷ)² − |pos|, checked cell by cell
    total = 0.0
    for u in range(4):
        for v in range(6):
            y_hat = float((users[u] * items[v] * h).sum())
            c = 1.0 if labels[u, v] else c0
            total += c * (float(labels[u, v]) - y_hat) ** 2
    assert naive.item() == pytest.approx(total - 6, rel=1e-12)


def test_whole_data_loss_gradients_equal_the_naive_ones():
    g = torch.Generator().manual_seed(1)
    users = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    items = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([0, 2, 4])
    labels = torch.zeros(3, 5, dtype=torch.float64)
    labels[rows, cols] = 1
    fast = torch.autograd.grad(whole_data_loss(users, items, h, rows, cols, 0.1), (users, items, h))
    slow = torch.autograd.grad(naive_whole_data_loss(users, items, h, labels, 0.1), (users, items, h))
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)


def test_bpr_and_l2_values():
    assert bpr_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(math.log1p(math.exp(-2)))
    assert bpr_loss(torch.tensor([100.0]), torch.tensor([-100.0])).item() == pytest.approx(0.0, abs=1e-30)
    assert l2(torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])).item() == pytest.approx(0.5 * (1 + 4 + 9))


def test_lightgcn_loss_by_hand():
    """With no propagation layer the score is p·q: BPR plus LightGCN's own regulariser,
    reg · ½ Σ x² over the batch's ego embeddings / batch size."""
    from graphrec.models import build_model
    from graphrec.models.base import Batch, GraphMeta
    from graphrec.models.lightgcn import LightGCNParams

    m = build_model("lightgcn", LightGCNParams(dim=2, layers=0, reg=0.5), GraphMeta(2, 3, ("buy",), ("buy",)))
    with torch.no_grad():
        m.user.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        m.item.copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0], [2.0, 0.0]]))
    batch = Batch(users=torch.tensor([0, 1]), pos={"buy": torch.tensor([0, 1])}, neg={"buy": torch.tensor([1, 2])})
    loss, parts = m.loss(batch, {})
    # user 0: pos 1, neg 0; user 1: pos 2, neg 0
    bpr = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))) / 2
    sq = (1 + 4) + (2 + 1) + (1 + 4)   # Σx² of the users, the positives, the negatives
    assert parts["bpr"] == pytest.approx(bpr, rel=1e-6)
    assert parts["reg"] == pytest.approx(0.5 * 0.5 * sq / 2, rel=1e-6)
    assert loss.item() == pytest.approx(bpr + 0.5 * 0.5 * sq / 2, rel=1e-6)


def test_floored_bpr_is_bpr_for_moderate_margins_and_capped_for_hopeless_ones():
    pos, neg = torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    # −log σ(2), −log σ(0) = log 2, −log σ(−2), each + 1e-10 inside the log: equal to 1e-9 relative
    expected = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert abs(float(floored_bpr_loss(pos, neg)) - expected) < 1e-8
    assert abs(float(bpr_loss(pos, neg)) - expected) < 1e-12
    hopeless = torch.tensor([-200.0], dtype=torch.float64, requires_grad=True)
    loss = floored_bpr_loss(hopeless, torch.zeros(1, dtype=torch.float64))
    assert abs(float(loss) + math.log(1e-10)) < 1e-9  # −log(1e-10 + σ(−200)) = 23.03
    loss.backward()
    assert abs(float(hopeless.grad)) < 1e-60  # softplus would pass a gradient of −1

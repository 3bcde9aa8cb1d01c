"""MuLe's parts against values computed by hand on graphs of three or four nodes: the propagation
P_g(x; L), the target-guided attention weights, the target-intersected and target-complemented
graphs (a partition of each auxiliary behavior), the loss with its 1e-10 floor and its decay, and
the aggregator whose keys cancel in their softmax."""

import math

import numpy as np
import pytest
import torch
from test_three_behaviors import three_communities

from graphrec.adjacency import attention_spmm, normalized_bipartite
from graphrec.models.base import Batch, GraphMeta
from graphrec.models.mule import MuLe, MuLeParams, propagate
from graphrec.sampling import TrainData

R2 = math.sqrt(2.0)


def star(n_items: int = 3):
    """User 0 with items 0 and 1; item 2 (when present) has no edges. Nodes: u0, i0, i1[, i2]."""
    return normalized_bipartite(np.array([0, 0]), np.array([0, 1]), 1, n_items)


def test_propagate_is_x_plus_each_normalised_layer_over_its_depth():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 1.0], [7.0, -2.0]])
    out = propagate(star(), x, layers=2)
    # layer 1: u0 ← (i0 + i1)/√2 → [1, 1]/√2; i0, i1 ← u0/√2 → [0.6, 0.8]
    # layer 2: u0 ← (0.6, 0.8)·2/√2 → [0.6, 0.8]; i0, i1 ← [1, 1]/2 → [1, 1]/√2
    expected = torch.tensor([
        [3 + 1 / R2 + 0.6 / 2, 4 + 1 / R2 + 0.8 / 2],
        [1 + 0.6 + 1 / R2 / 2, 0 + 0.8 + 1 / R2 / 2],
        [0 + 0.6 + 1 / R2 / 2, 1 + 0.8 + 1 / R2 / 2],
        [7.0, -2.0],  # no edges: keeps its input
    ])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(propagate(star(), x, layers=0), x)


def test_attention_weights_are_the_senders_softmax_over_its_neighbours():
    # u0's query matches i0's row by ln 3 and i1's by 0: it sends 3/4 of its row to i0, 1/4 to i1;
    # each item has u0 as its only neighbour, so it sends its whole row to u0
    query = torch.tensor([[1.0, 0.0], [5.0, 5.0], [-1.0, 2.0], [0.0, 0.0]])
    x = torch.tensor([[2.0, 4.0], [math.log(3.0), 1.0], [0.0, 5.0], [9.0, 9.0]])
    out = attention_spmm(star(), query, x)
    expected = torch.tensor([
        [math.log(3.0) + 0.0, 1.0 + 5.0],
        [0.75 * 2.0, 0.75 * 4.0],
        [0.25 * 2.0, 0.25 * 4.0],
        [0.0, 0.0],
    ])
    torch.testing.assert_close(out, expected)
    # the weights do not depend on the adjacency's GCN values, only on its pattern
    torch.testing.assert_close(attention_spmm(star().with_values(torch.full((4,), 9.0)), query, x), expected)


def test_tda_layers_propagate_with_the_attention_and_normalise():
    query = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    x = torch.tensor([[0.0, 2.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    out = propagate(star(2), x, layers=1, query=query)
    # u0 ← i0 + i1 = [ln 3, 0] → [1, 0]; i0 ← 3/4·u0 → [0, 1]; i1 ← 1/4·u0 → [0, 1]
    torch.testing.assert_close(out, x + torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))


@pytest.fixture(scope="module")
def data():
    s = three_communities()
    meta = GraphMeta(s.n_users, s.n_items, s.behaviors.order, tuple(s.relations))
    return TrainData.from_snapshot(s, "fixed", MuLe.label_relations(meta))


def pairs(edges) -> set[tuple[int, int]]:
    return set(zip(edges[0].tolist(), edges[1].tolist()))


def test_intersected_and_complemented_graphs_partition_each_auxiliary_behavior(data):
    for a in ("view", "cart"):
        both, rest = pairs(data.graph_edges(f"{a}&buy")), pairs(data.graph_edges(f"{a}_not_buy"))
        assert not both & rest
        assert both | rest == pairs(data.graph_edges(a))
        assert both == pairs(data.graph_edges(a)) & pairs(data.graph_edges("buy"))
    n = 8  # users per community; t_u is the held-out purchase (5 in-community items, one held out)
    t = {(u, (0 if u < n else 5) + u % 5) for u in range(2 * n)}
    # every user viewed its 4 training purchases: the intersection; t_u and the one view in the
    # other community are the complement (the held-out test purchase is not a training purchase)
    assert len(pairs(data.graph_edges("view&buy"))) == 16 * 4
    assert t < pairs(data.graph_edges("view_not_buy")) and len(pairs(data.graph_edges("view_not_buy"))) == 32
    # even users carted t_u, the only cart that is not a training purchase
    assert pairs(data.graph_edges("cart_not_buy")) == {p for p in t if p[0] % 2 == 0}
    # the unified graph: 5 in-community views and one out-of-community view per user cover everything
    assert len(pairs(data.graph_edges("view|cart|buy"))) == 16 * 6


def model_with(data, params: MuLeParams, user: torch.Tensor, item: torch.Tensor) -> MuLe:
    model = MuLe(params, data.meta)
    with torch.no_grad():
        model.user.copy_(torch.zeros_like(model.user)), model.item.copy_(torch.zeros_like(model.item))
        model.user[: len(user)] = user
        model.item[: len(item)] = item
        for lin in (model.behavior_score, model.target_score):
            lin.weight.zero_(), lin.bias.zero_()
    return model


def test_the_loss_is_bpr_with_the_floor_inside_the_log_and_half_the_decay_over_every_parameter(data):
    graphs = data.graphs(MuLe.relations(data.meta), "cpu")
    # no layers: every graph returns its input, so z is the embedding table itself
    user = torch.tensor([[1.0, 2.0], [10.0, 0.0]])
    item = torch.tensor([[0.5, 0.0], [0.0, 0.25], [0.0, 0.0], [1.0, 0.0]])
    model = model_with(data, MuLeParams(dim=2, layers=0, tda_layers=0), user, item)
    torch.testing.assert_close(model(graphs)[: 2], user)
    # user 0: margin 0.5 − 0.5 = 0, −log(1e-10 + 0.5); user 1: margin 0 − 10·1 = −10;
    # user 1 again with the roles swapped and 100× its row would underflow σ: −log(1e-10)
    batch = Batch(users=torch.tensor([0, 1]), pos={"buy": torch.tensor([0, 2])}, neg={"buy": torch.tensor([1, 3])})
    loss, parts = model.loss(batch, graphs)
    expected = (-math.log(1e-10 + 0.5) - math.log(1e-10 + 1 / (1 + math.exp(10.0)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6) and "reg" not in parts
    with torch.no_grad():
        model.user[1] *= 100  # margin −1000: σ is 0 in float32
    loss, _ = model.loss(batch, graphs)
    assert loss.item() == pytest.approx((-math.log(1e-10 + 0.5) - math.log(1e-10)) / 2, rel=1e-6)

    decayed = model_with(data, MuLeParams(dim=2, layers=0, tda_layers=0, weight_decay=0.1), user, item)
    loss, parts = decayed.loss(batch, graphs)
    squares = 1 + 4 + 100 + 0.25 + 0.0625 + 1  # every other parameter is 0
    assert parts["reg"] == pytest.approx(0.5 * 0.1 * squares, rel=1e-6)
    assert loss.item() == pytest.approx(expected + 0.5 * 0.1 * squares, rel=1e-6)


def test_the_aggregators_keys_cancel_so_only_the_value_half_of_the_second_scores_matters(data):
    graphs = data.graphs(MuLe.relations(data.meta), "cpu")
    torch.manual_seed(0)
    model = MuLe(MuLeParams(dim=4, layers=1, tda_layers=2), data.meta)
    z = model(graphs).detach()
    d = model.params.dim
    with torch.no_grad():
        model.behavior_score.weight.normal_(), model.behavior_score.bias.normal_()  # stage 1 entirely
        model.target_score.weight[:, :d].normal_(), model.target_score.bias.normal_()  # stage 2's key half
    torch.testing.assert_close(model(graphs).detach(), z)
    with torch.no_grad():
        model.target_score.weight[:, d:].mul_(-3.0)
    assert not torch.allclose(model(graphs).detach(), z)
    # with the value half zero the weights are uniform: z is the mean of the four target-related embeddings
    with torch.no_grad():
        model.target_score.weight.zero_()
    p, b = model.params, data.meta.behaviors
    unified = propagate(graphs["view|cart|buy"], torch.cat([model.user, model.item]), p.layers)
    e = {k: propagate(graphs[k], unified, p.layers) for k in b}
    values = [propagate(graphs[f"{a}_not_buy"], e[a], p.tda_layers, query=e["buy"]) for a in ("view", "cart")]
    values += [propagate(graphs[f"{a}&buy"], e[a], p.layers) for a in ("view", "cart")]
    torch.testing.assert_close(model(graphs).detach(), (sum(values) / 4).detach())

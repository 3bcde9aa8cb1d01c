"""DGL through graphrec.compat, and snapshot → heterograph (no Neo4j needed)."""

import sys

import numpy as np
import pytest
import torch
from conftest import tiny_snapshot

from graphrec import graph
from graphrec import snapshot as snap
from graphrec.compat import DGLUnavailable, graphbolt_is_placeholder, import_dgl

try:
    dgl = import_dgl()
except DGLUnavailable as exc:  # e.g. a GPU host with torch only
    pytest.skip(f"DGL is not importable here: {exc}", allow_module_level=True)


def test_compat_import_gives_working_dgl_core(tmp_path):
    """Heterograph build, update_all with autograd, save/load: what graphrec uses DGL for."""
    import dgl.function as fn

    torch_version = torch.__version__.split("+")[0]
    assert graphbolt_is_placeholder() == (tuple(int(x) for x in torch_version.split(".")[:2]) > (2, 2))
    g = dgl.heterograph({("user", "buy", "item"): (torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])),
                         ("item", "rev_buy", "user"): (torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]))},
                        num_nodes_dict={"user": 3, "item": 2})
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    g.nodes["item"].data["h"] = x
    g.update_all(fn.copy_u("h", "m"), fn.sum("m", "out"), etype="rev_buy")
    out = g.nodes["user"].data["out"]
    assert out.tolist() == [[4.0, 6.0], [3.0, 4.0], [0.0, 0.0]]  # user 2 has no purchase
    out.sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0], [2.0, 2.0]]  # item 1 was bought twice
    dgl.save_graphs(str(tmp_path / "g.bin"), [g])
    (back,), _ = dgl.load_graphs(str(tmp_path / "g.bin"))
    assert back.num_nodes("user") == 3 and back.edges(etype="buy")[1].tolist() == [0, 1, 1]


def test_placeholder_graphbolt_fails_loudly_when_used():
    if not graphbolt_is_placeholder():
        pytest.skip("this torch has a real graphbolt library")
    with pytest.raises(ImportError, match="graphrec does not use graphbolt"):
        sys.modules["dgl.graphbolt"].FusedCSCSamplingGraph


def test_heterograph_from_snapshot():
    data = graph.load(tiny_snapshot())
    g = data.graph
    assert sorted(g.canonical_etypes) == sorted([
        ("user", "cart", "item"), ("item", "rev_cart", "user"), ("user", "buy", "item"), ("item", "rev_buy", "user"),
        ("user", "cart_not_buy", "item"), ("item", "rev_cart_not_buy", "user")])
    assert g.num_nodes("user") == 3 and g.num_nodes("item") == 4 and g.idtype == torch.int32
    # the test purchase (u0, i1) is not in the graph; it travels alongside
    assert list(zip(*[t.tolist() for t in g.edges(etype="buy")])) == [(0, 0), (1, 2), (2, 3)]
    assert list(zip(*[t.tolist() for t in g.edges(etype="rev_buy")])) == [(0, 0), (2, 1), (3, 2)]
    assert [a.tolist() for a in data.held_out["test"]] == [[0], [1]]
    assert [len(a) for a in data.held_out["valid"]] == [0, 0]
    assert g.num_edges("cart") == 5


def test_save_dgl_round_trip(tmp_path):
    data = graph.load(tiny_snapshot())
    path = graph.save_dgl(data, tmp_path / "g.dgl")
    (g,), labels = dgl.load_graphs(str(path))
    for etype in data.graph.canonical_etypes:
        np.testing.assert_array_equal(g.edges(etype=etype)[0], data.graph.edges(etype=etype)[0])
    assert labels["test_user"].tolist() == [0] and labels["test_item"].tolist() == [1]


def test_graph_that_disagrees_with_snapshot_is_rejected():
    s = tiny_snapshot()
    g = graph.to_heterograph(s)
    fewer = dgl.remove_edges(g, torch.tensor([0], dtype=torch.int32), etype="cart")
    with pytest.raises(snap.SnapshotError, match=r"relation 'cart': 4 edges in the graph, 5 training edges"):
        graph.validate_graph(fewer, s)
    other = dgl.heterograph({("user", "view", "item"): ([0], [0])}, num_nodes_dict={"user": 3, "item": 4})
    with pytest.raises(snap.SnapshotError, match=r"unknown: \[\('user', 'view', 'item'\)\]"):
        graph.validate_graph(other, s)

"""graphrec.adjacency: hand-checked normalization, transpose/perm consistency, spmm against dense
matmul and DGL, edge-dropout statistics, input errors, and CUDA against CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphrec.adjacency import CPU_TILE_BYTES, SparseAdj, normalized_bipartite, spmm

# CPU column tiling only kicks in when x's columns outgrow a tile; 64 bytes forces tiles of a
# couple of columns on these small graphs so the tiled path is checked against dense too.
TILINGS = [0, 64, CPU_TILE_BYTES]


def random_graph(n_users: int, n_items: int, n_edges: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, size=n_edges, replace=False)
    return keys // n_items, keys % n_items


def with_tiling(adj: SparseAdj, tile_bytes: int) -> SparseAdj:
    adj.cpu_tile_bytes = tile_bytes
    return adj


def small_bipartite(n_users: int, n_items: int, n_edges: int, seed: int, tile_bytes: int | None) -> SparseAdj:
    """A random float64 bipartite adjacency; ``tile_bytes`` None keeps the default tiling."""
    u, i = random_graph(n_users, n_items, n_edges, seed)
    adj = normalized_bipartite(u, i, n_users, n_items, dtype=torch.float64)
    return adj if tile_bytes is None else with_tiling(adj, tile_bytes)


def test_normalization_by_hand():
    # users u0..u3 (u3 isolated), items i0..i2 (i2 isolated); nodes u0..u3 = 0..3, i0..i2 = 4..6
    # edges (u0,i0) (u0,i1) (u1,i0) (u2,i1): deg u0=2, u1=1, u2=1, u3=0; deg i0=2, i1=2, i2=0
    #   (u0,i0) = 1/sqrt(2*2) = 1/2      (u0,i1) = 1/sqrt(2*2) = 1/2
    #   (u1,i0) = 1/sqrt(1*2) = 1/sqrt2  (u2,i1) = 1/sqrt(1*2) = 1/sqrt2
    adj = normalized_bipartite(np.array([0, 0, 1, 2]), np.array([0, 1, 0, 1]), 4, 3, dtype=torch.float64)
    h, r = 0.5, 1 / math.sqrt(2)
    expected = torch.tensor([
        # u0 u1 u2 u3 i0 i1 i2
        [0, 0, 0, 0, h, h, 0],  # u0
        [0, 0, 0, 0, r, 0, 0],  # u1
        [0, 0, 0, 0, 0, r, 0],  # u2
        [0, 0, 0, 0, 0, 0, 0],  # u3: isolated -> zero row, no nan
        [h, r, 0, 0, 0, 0, 0],  # i0
        [h, 0, r, 0, 0, 0, 0],  # i1
        [0, 0, 0, 0, 0, 0, 0],  # i2: isolated
    ], dtype=torch.float64)
    dense = adj.matrix.to_dense()
    assert torch.allclose(dense, expected, atol=1e-7, rtol=0)
    assert torch.isfinite(dense).all()
    assert adj.shape == (7, 7) and adj.nnz == 8
    assert adj.matrix.crow_indices().tolist() == [0, 2, 3, 4, 4, 6, 8, 8]
    assert adj.matrix.col_indices().dtype == torch.int32
    # no self loops
    assert torch.all(torch.diagonal(dense) == 0)


@pytest.mark.parametrize("tile_bytes", TILINGS)
def test_no_edges(tile_bytes):
    adj = with_tiling(normalized_bipartite(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 3, 2),
                      tile_bytes)
    x = torch.randn(5, 4, requires_grad=True)
    y = adj.dropout(0.5) @ x
    y.sum().backward()
    assert adj.nnz == 0 and torch.equal(y, torch.zeros(5, 4)) and torch.equal(x.grad, torch.zeros(5, 4))


def test_float32_default_and_order_independence():
    u, i = random_graph(30, 20, 150)
    order = np.random.default_rng(1).permutation(len(u))
    a = normalized_bipartite(u, i, 30, 20)
    b = normalized_bipartite(torch.from_numpy(u[order]), torch.from_numpy(i[order]), 30, 20)
    assert a.dtype == torch.float32
    assert torch.equal(a.matrix.to_dense(), b.matrix.to_dense())


@pytest.mark.parametrize("tile_bytes", TILINGS)
def test_transpose_matches_before_and_after_dropout(tile_bytes):
    u, i = random_graph(40, 25, 300)
    adj = with_tiling(normalized_bipartite(u, i, 40, 25, dtype=torch.float64), tile_bytes)
    assert torch.equal(adj.transpose.to_dense(), adj.matrix.to_dense().T)
    assert torch.equal(adj.transpose.values(), adj.matrix.values()[adj.perm])

    dropped = adj.dropout(0.5, torch.Generator().manual_seed(3))
    # run the product first: on CPU it derives tiles from the mask without building the CSRs
    x = torch.randn(65, 4, dtype=torch.float64)
    y = dropped @ x
    m, t = dropped.matrix.to_dense(), dropped.transpose.to_dense()
    assert torch.equal(t, m.T)  # same mask on both sides, through perm
    assert torch.equal(dropped.transpose.values(), dropped.matrix.values()[dropped.perm])
    assert 0 < (m != 0).sum() < (adj.matrix.to_dense() != 0).sum()
    assert torch.allclose(y, m @ x, atol=1e-12)
    # the full matrix is not symmetric any more: (u,i) and (i,u) are dropped independently
    assert not torch.equal(m, m.T)


@pytest.mark.parametrize("tile_bytes", [0, 256])
def test_with_values_carries_new_values_to_both_sides_and_both_products(tile_bytes):
    u, i = random_graph(40, 25, 300)
    adj = with_tiling(normalized_bipartite(u, i, 40, 25, dtype=torch.float64), tile_bytes)
    vals = torch.randn(adj.nnz, dtype=torch.float64)
    other = adj.with_values(vals)
    x = torch.randn(65, 3, dtype=torch.float64)
    dense = torch.sparse_coo_tensor(adj.matrix.to_sparse_coo().indices(), vals, (65, 65)).to_dense()
    # products first: on CPU they read tiles, and the transpose is gathered only when asked for
    torch.testing.assert_close(spmm(other, x), dense @ x)
    torch.testing.assert_close(spmm(other.dropout(1.0), x), dense @ x)
    assert torch.equal(other.transpose.to_dense(), dense.T)
    assert torch.equal(other.transpose.values(), vals[adj.perm])
    assert torch.equal(adj.matrix.values(), normalized_bipartite(u, i, 40, 25, dtype=torch.float64).matrix.values())


def test_from_coo_rectangular():
    rows = torch.tensor([2, 0, 1, 0, 2])
    cols = torch.tensor([3, 1, 0, 3, 0])
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    adj = SparseAdj.from_coo(rows, cols, vals, (3, 4))
    expected = torch.zeros(3, 4, dtype=torch.float64)
    expected[rows, cols] = vals
    assert torch.equal(adj.matrix.to_dense(), expected)
    assert torch.equal(adj.transpose.to_dense(), expected.T)
    assert torch.equal(adj.transpose.values(), adj.matrix.values()[adj.perm])
    x = torch.randn(4, 2, dtype=torch.float64)
    assert torch.allclose(adj @ x, expected @ x)
    with pytest.raises(ValueError, match=r"duplicate entry \(row 0, col 3\)"):
        SparseAdj.from_coo(torch.tensor([0, 1, 0]), torch.tensor([3, 1, 3]), torch.ones(3), (3, 4))


@pytest.mark.parametrize("tile_bytes", TILINGS)
@pytest.mark.parametrize("keep", [1.0, 0.6])
def test_spmm_matches_dense_forward_and_gradient(tile_bytes, keep):
    u, i = random_graph(50, 35, 500, seed=2)
    adj = with_tiling(normalized_bipartite(u, i, 50, 35, dtype=torch.float64), tile_bytes)
    adj = adj.dropout(keep, torch.Generator().manual_seed(5))
    dense = adj.matrix.to_dense()
    x = torch.randn(85, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(85, 6, dtype=torch.float64)
    y = spmm(adj, x)
    assert torch.allclose(y, dense @ x, atol=1e-12)
    (y * g).sum().backward()
    assert torch.allclose(x.grad, dense.T @ g, atol=1e-12)
    # a gradient with stride 0 (from .sum()) goes through the same path
    x.grad = None
    spmm(adj, x).sum().backward()
    assert torch.allclose(x.grad, dense.T @ torch.ones(85, 6, dtype=torch.float64), atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: spmm(adj, z), (torch.randn(85, 3, dtype=torch.float64,
                                                                          requires_grad=True),))


def test_spmm_matches_dgl_update_all():
    from graphrec.compat import DGLUnavailable, import_dgl

    try:
        dgl = import_dgl()
    except DGLUnavailable as exc:
        pytest.skip(f"DGL unavailable, no reference to compare with: {exc}")
    fn = dgl.function
    n_users, n_items, d = 60, 45, 8
    u, i = random_graph(n_users, n_items, 700, seed=4)
    ut, it = torch.from_numpy(u), torch.from_numpy(i)
    g = dgl.heterograph({("user", "r", "item"): (ut, it), ("item", "rev_r", "user"): (it, ut)},
                        num_nodes_dict={"user": n_users, "item": n_items})
    du = torch.bincount(ut, minlength=n_users).double()
    di = torch.bincount(it, minlength=n_items).double()
    w = (1.0 / torch.sqrt(du[ut] * di[it])).unsqueeze(1)
    g.edges["r"].data["w"] = w
    g.edges["rev_r"].data["w"] = w
    torch.manual_seed(0)
    eu = torch.randn(n_users, d, dtype=torch.float64, requires_grad=True)
    ei = torch.randn(n_items, d, dtype=torch.float64, requires_grad=True)
    g.nodes["user"].data["h"] = eu
    g.nodes["item"].data["h"] = ei
    for etype in ("r", "rev_r"):
        g.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "out"), etype=etype)
    ref = torch.cat([g.nodes["user"].data["out"], g.nodes["item"].data["out"]])
    coeff = torch.randn_like(ref)
    (ref * coeff).sum().backward()
    ref_gu, ref_gi = eu.grad.clone(), ei.grad.clone()

    for tile_bytes in TILINGS:
        adj = with_tiling(normalized_bipartite(u, i, n_users, n_items, dtype=torch.float64), tile_bytes)
        eu.grad = ei.grad = None
        out = adj @ torch.cat([eu, ei])
        assert torch.allclose(out, ref.detach(), atol=1e-12)
        (out * coeff).sum().backward()
        assert torch.allclose(eu.grad, ref_gu, atol=1e-12)
        assert torch.allclose(ei.grad, ref_gi, atol=1e-12)


def test_dropout_statistics_and_seeding():
    u, i = random_graph(2000, 1000, 100_000, seed=7)  # 200k nonzeros
    adj = normalized_bipartite(u, i, 2000, 1000, dtype=torch.float64)
    keep = 0.8
    v = adj.matrix.values()
    dropped = adj.dropout(keep, torch.Generator().manual_seed(11))
    vd = dropped.matrix.values()
    n = v.numel()
    assert n == 200_000 and vd.shape == v.shape
    kept = vd != 0
    # kept entries are scaled by exactly 1/keep, the rest are exact zeros (structure kept)
    assert torch.allclose(vd[kept], v[kept] / keep, rtol=1e-15, atol=0)
    # fraction kept ~ Binomial(n, keep) / n
    se_frac = math.sqrt(keep * (1 - keep) / n)
    assert abs(kept.double().mean().item() - keep) < 4 * se_frac
    # each value v*B/keep has mean v and variance v^2 (1-keep)/keep, so the mean over all entries
    # is unbiased with standard error sqrt(sum v^2 (1-keep)/keep) / n
    se_mean = math.sqrt((v**2).sum().item() * (1 - keep) / keep) / n
    assert abs(vd.mean().item() - v.mean().item()) < 4 * se_mean
    # the transpose uses the same draw
    assert torch.equal(dropped.transpose.values(), vd[dropped.perm])
    # a seeded generator reproduces the mask; another seed does not
    again = adj.dropout(keep, torch.Generator().manual_seed(11)).matrix.values()
    other = adj.dropout(keep, torch.Generator().manual_seed(12)).matrix.values()
    assert torch.equal(again, vd)
    assert not torch.equal((other != 0), kept)
    # keep = 1 is the identity
    assert adj.dropout(1.0) is adj
    with pytest.raises(ValueError, match="keep must be in"):
        adj.dropout(0.0)


def test_input_errors():
    with pytest.raises(ValueError, match=r"duplicate edge \(user 1, item 2\).*deduplicate"):
        normalized_bipartite(np.array([0, 1, 3, 1]), np.array([0, 2, 1, 2]), 4, 3)
    with pytest.raises(ValueError, match=r"items contains 3, outside \[0, 3\)"):
        normalized_bipartite(np.array([0, 1]), np.array([0, 3]), 4, 3)
    with pytest.raises(ValueError, match=r"users contains 4, outside \[0, 4\)"):
        normalized_bipartite(np.array([4, 1]), np.array([0, 1]), 4, 3)
    with pytest.raises(ValueError, match=r"users contains -1, outside \[0, 4\)"):
        normalized_bipartite(np.array([-1, 1]), np.array([0, 1]), 4, 3)
    with pytest.raises(ValueError, match="differ in length"):
        normalized_bipartite(np.array([0, 1]), np.array([0]), 4, 3)
    with pytest.raises(ValueError, match="integer ids"):
        normalized_bipartite(np.array([0.0, 1.0]), np.array([0, 1]), 4, 3)
    adj = normalized_bipartite(np.array([0, 1]), np.array([0, 1]), 4, 3)
    with pytest.raises(ValueError, match="float64 on cpu but the adjacency is torch.float32"):
        adj @ torch.ones(7, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="with 7 rows"):
        adj @ torch.ones(6, 2)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    u, i = random_graph(300, 200, 6000, seed=9)
    cpu = normalized_bipartite(u, i, 300, 200).dropout(0.7, torch.Generator().manual_seed(1))
    gpu = cpu.to("cuda")
    assert normalized_bipartite(u, i, 300, 200, device="cuda").device.type == "cuda"
    x = torch.randn(500, 64, requires_grad=True)
    xg = x.detach().cuda().requires_grad_()
    g = torch.randn(500, 64)
    y = spmm(cpu, x)
    yg = spmm(gpu, xg)
    assert yg.device.type == "cuda"
    assert torch.allclose(yg.cpu(), y, atol=1e-5, rtol=1e-5)
    (y * g).sum().backward()
    (yg * g.cuda()).sum().backward()
    assert torch.allclose(xg.grad.cpu(), x.grad, atol=1e-5, rtol=1e-5)
    # dropout drawn on the device keeps the transpose consistent there too
    d = gpu.dropout(0.5, torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(d.transpose.to_dense(), d.matrix.to_dense().T)
    assert torch.allclose(spmm(d, xg).cpu(), d.matrix.to_dense().cpu() @ x.detach(), atol=1e-5, rtol=1e-5)
    # the batch-rows paths of a training step: a row span (a CSR slice there) and scattered rows
    from graphrec.adjacency import last_layer_rows, spmm_rows

    rows = torch.tensor([450, 3, 299, 3, 300])
    dense = cpu.matrix.to_dense() @ x.detach()
    assert torch.allclose(spmm(gpu, xg, rows=(300, 500)).cpu(), dense[300:], atol=1e-5, rtol=1e-5)
    assert torch.allclose(spmm_rows(gpu, xg, rows[1:3].cuda()).cpu(), dense[rows[1:3]], atol=1e-5, rtol=1e-5)
    assert torch.allclose(last_layer_rows(gpu, xg, rows.cuda(), 300).cpu(), dense[rows], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tile_bytes", [0, 64, None])
def test_spmm_first_rows_only_matches_the_full_product_and_its_gradient(tile_bytes):
    from graphrec.adjacency import spmm

    g = torch.Generator().manual_seed(3)
    n_users, n_items = 30, 20
    adj = small_bipartite(n_users, n_items, 150, seed=3, tile_bytes=tile_bytes).dropout(
        0.7, torch.Generator().manual_seed(4))
    x = torch.randn(n_users + n_items, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n_users, 5, generator=g, dtype=torch.float64)
    full = adj.matrix.to_dense() @ x
    part = spmm(adj, x, rows=n_users)
    torch.testing.assert_close(part, full[:n_users])
    (grad,) = torch.autograd.grad((part * w).sum(), x)
    (expected,) = torch.autograd.grad((full[:n_users] * w).sum(), x)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("tile_bytes", [0, 64, None])
def test_spmm_row_spans_and_scattered_rows_match_the_full_product_and_its_gradient(tile_bytes):
    """The item rows (a span that starts mid-matrix, cut through tiles of both sides) and a few
    scattered user rows, dropout applied, against the dense product: values and gradients."""
    from graphrec.adjacency import spmm_rows

    g = torch.Generator().manual_seed(5)
    n_users, n_items = 30, 20
    adj = small_bipartite(n_users, n_items, 160, seed=5, tile_bytes=tile_bytes)
    n = n_users + n_items
    for a in (adj, adj.dropout(0.6, torch.Generator().manual_seed(6))):
        dense = a.matrix.to_dense()
        x = torch.randn(n, 5, generator=g, dtype=torch.float64, requires_grad=True)
        users = torch.tensor([17, 3, 29, 0, 11])
        items = spmm(a, x, rows=(n_users, n))
        picked = spmm_rows(a, x, users)
        from_items = spmm_rows(a, x[n_users:], users, col_offset=n_users)
        torch.testing.assert_close(items, dense[n_users:] @ x)
        torch.testing.assert_close(picked, dense[users] @ x)
        torch.testing.assert_close(from_items, picked)
        w1, w2 = torch.randn(n_items, 5, dtype=torch.float64), torch.randn(len(users), 5, dtype=torch.float64)
        (grad,) = torch.autograd.grad((items * w1).sum() + (picked * w2).sum(), x)
        (expected,) = torch.autograd.grad(((dense[n_users:] @ x) * w1).sum() + ((dense[users] @ x) * w2).sum(), x)
        torch.testing.assert_close(grad, expected)
    with pytest.raises(ValueError, match="non-empty span"):
        spmm(adj, x, rows=(n_users, n_users))


def test_last_layer_rows_mixes_users_and_items_in_the_asked_order():
    from graphrec.adjacency import last_layer_rows

    n_users, n_items = 12, 9
    adj = small_bipartite(n_users, n_items, 40, seed=8, tile_bytes=64).dropout(0.7, torch.Generator().manual_seed(9))
    x = torch.randn(n_users + n_items, 3, dtype=torch.float64)
    rows = torch.tensor([14, 2, 20, 2, 0, 12])  # items and users interleaved, one repeated
    torch.testing.assert_close(last_layer_rows(adj, x, rows, n_users), (adj.matrix.to_dense() @ x)[rows])


def test_attention_spmm_is_the_source_grouped_softmax_and_its_gradient_is_exact():
    """MuLe's TDA: node s spreads its row with weights softmax over its neighbours r of ⟨q_s, x_r⟩;
    against the dense form, and torch's gradcheck of the hand-written backward (float64)."""
    from graphrec.adjacency import attention_spmm

    torch.manual_seed(0)
    adj = normalized_bipartite(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 0, 1, 2]), 3, 3, dtype=torch.float64)
    q = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    mask = adj.matrix.to_dense() != 0
    alpha = torch.softmax((q @ x.T).masked_fill(~mask, float("-inf")), dim=1)
    torch.testing.assert_close(attention_spmm(adj, q, x), alpha.T @ x)
    assert torch.autograd.gradcheck(lambda a, b: attention_spmm(adj, a, b), (q, x))

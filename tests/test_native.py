"""graphrec's compiled CPU product (graphrec/_native.c via graphrec.native): equal to a dense
product and to MKL's for every width, index type and row selection; the same losses and
gradients in a training step either way; refused input; the environment switch; built where a
compiler is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from graphrec import native
from graphrec import snapshot as snap
from graphrec.adjacency import SparseAdj, attention_spmm, normalized_bipartite, spmm, spmm_rows
from graphrec.models import build_model, get_model
from graphrec.models.base import GraphMeta
from graphrec.sampling import TrainData, model_batches
from graphrec.schema import Behaviors

needs_kernel = pytest.mark.skipif(not native.enabled(), reason=f"no compiled kernel: {native.status()}")


@pytest.fixture
def mkl():
    """Run the body on MKL's product, then go back to the environment's choice."""
    native.use(False)
    yield
    native.use(None)


def compiled_then_mkl(run, *args):
    """``run(*args)`` on the compiled kernel, then on MKL's product and torch's draws: (got, want)."""
    got = run(*args)
    native.use(False)
    try:
        return got, run(*args)
    finally:
        native.use(None)


def graph(n_users: int = 150, n_items: int = 90, n_edges: int = 1500, seed: int = 0) -> SparseAdj:
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, size=n_edges, replace=False)
    return normalized_bipartite(keys // n_items, keys % n_items, n_users, n_items)


def dense(adj: SparseAdj) -> torch.Tensor:
    return adj.matrix.to_dense().double()


@pytest.fixture(params=native.isa_levels() or [None], ids=lambda v: f"isa{v}")
def isa(request):
    """Each copy of the kernel this CPU runs (generic, SSE2, AVX2, AVX-512), then the best again."""
    if request.param is None:
        pytest.skip(f"no compiled kernel: {native.status()}")
    native.use_isa(request.param)
    yield request.param
    native.use_isa(None)


@needs_kernel
@pytest.mark.parametrize("d", [1, 7, 16, 32, 64, 100, 128])
@pytest.mark.parametrize("index", [torch.int32, torch.int64])
def test_the_kernel_is_a_dense_product_for_every_width_and_index_type(d, index, isa):
    adj = graph()
    m = adj.matrix
    crow, col = m.crow_indices().to(index), m.col_indices().to(index)
    x = torch.randn(adj.shape[1], d)
    want = dense(adj) @ x.double()
    out = native.csr_mm(crow, col, m.values(), x, torch.empty(adj.shape[0], d))
    assert torch.allclose(out.double(), want, atol=1e-5)
    # a row span, scattered rows in any order (repeats too), alpha and accumulation
    span = native.csr_mm(crow, col, m.values(), x, torch.empty(40, d), row0=100)
    assert torch.allclose(span.double(), want[100:140], atol=1e-5)
    rows = torch.tensor([5, 239, 0, 5, 131], dtype=torch.int64)
    picked = native.csr_mm(crow, col, m.values(), x, torch.empty(5, d), rows=rows)
    assert torch.allclose(picked.double(), want[rows], atol=1e-5)
    base = torch.randn(5, d)
    acc = native.csr_mm(crow, col, m.values(), x, base.clone(), rows=rows, alpha=2.5, accumulate=True)
    assert torch.allclose(acc.double(), base.double() + 2.5 * want[rows], atol=1e-5)


@needs_kernel
def test_rows_without_nonzeros_come_out_zero_not_uninitialised():
    adj = normalized_bipartite([0, 0], [0, 1], 5, 3)  # users 1-4 and item 2 have no edges
    x = torch.randn(8, 64)
    out = native.csr_mm(adj.matrix.crow_indices(), adj.matrix.col_indices(), adj.matrix.values(), x,
                        torch.full((8, 64), float("nan")))
    assert torch.equal(out[1:5], torch.zeros(4, 64)) and torch.equal(out[7], torch.zeros(64))
    assert torch.allclose(out[0], (x[5] + x[6]) / 2 ** 0.5)


def _forward_backward(adj: SparseAdj, x: torch.Tensor, rows):
    x = x.clone().requires_grad_(True)
    y = spmm(adj, x, rows)
    g = torch.linspace(-1, 1, y.numel()).view_as(y)
    (y * g).sum().backward()
    return y.detach(), x.grad


@needs_kernel
@pytest.mark.parametrize("rows", [None, 150, (150, 240), (10, 20)])
@pytest.mark.parametrize("keep", [1.0, 0.7])
def test_spmm_and_its_gradient_equal_mkls_for_every_row_span_and_with_dropout(rows, keep):
    base = graph()
    adj = base.dropout(keep, torch.Generator().manual_seed(3))
    x = torch.randn(base.shape[1], 64)
    (y, gx), (y_mkl, gx_mkl) = compiled_then_mkl(_forward_backward, adj, x, rows)
    assert torch.allclose(y, y_mkl, atol=1e-5) and torch.allclose(gx, gx_mkl, atol=1e-5)
    # and both against the dense product
    a = dense(adj)
    lo, hi = (0, 150) if rows == 150 else rows if rows else (0, a.shape[0])
    assert torch.allclose(y.double(), (a @ x.double())[lo:hi], atol=1e-5)


@needs_kernel
def test_a_backward_that_reads_only_item_rows_zero_fills_the_item_rows():
    adj = graph()
    x = torch.randn(adj.shape[1], 32)
    _, gx = _forward_backward(adj, x, (150, 240))  # item rows only: their gradient lands on users
    assert torch.equal(gx[150:], torch.zeros(90, 32)) and gx[:150].abs().sum() > 0
    assert adj._rows_reading(True, (150, 240)) == (0, 150, True)
    assert adj._rows_reading(True, (0, 150)) == (150, 240, True)
    r0, r1, inside = adj._rows_reading(True, (10, 20))  # the items of users 10-19, who have other users too
    assert 150 <= r0 < r1 <= 240 and not inside


@needs_kernel
def test_attention_and_scattered_rows_equal_mkls():
    adj = graph(60, 40, 500, seed=2)
    q, x = torch.randn(100, 16, requires_grad=True), torch.randn(100, 16, requires_grad=True)
    rows = torch.tensor([3, 70, 12, 99])

    def run():
        q.grad = x.grad = None
        out = attention_spmm(adj, q, x)
        part = spmm_rows(adj, x, rows)
        (out.square().sum() + part.sum()).backward()
        return out.detach(), part.detach(), q.grad.clone(), x.grad.clone()

    got, want = compiled_then_mkl(run)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5)


def random_log(n_users: int = 120, n_items: int = 60, seed: int = 0) -> snap.Snapshot:
    """Cart and buy on random pairs; one buy per user held out for test."""
    rng = np.random.default_rng(seed)
    cart = {(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 1500), rng.integers(0, n_items, 1500))}
    buy = sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 900), rng.integers(0, n_items, 900))})
    seen, split = set(), []
    for u, _ in buy:
        split.append(snap.SPLIT_CODES["test"] if u not in seen else snap.SPLIT_CODES["train"])
        seen.add(u)
    cart = sorted(cart)
    bought = {p for p, c in zip(buy, split) if c == snap.SPLIT_CODES["train"]}
    cnb = [p for p in cart if p not in bought]
    return snap.build(
        "random", Behaviors(("cart", "buy")), [str(u) for u in range(n_users)], [str(i) for i in range(n_items)],
        {"cart": {"user": [u for u, _ in cart], "item": [i for _, i in cart]},
         "buy": {"user": [u for u, _ in buy], "item": [i for _, i in buy], "split": split},
         "cart_not_buy": {"user": [u for u, _ in cnb], "item": [i for _, i in cnb],
                          "holdout": [snap.SPLIT_CODES["test"]] * len(cnb)}})


def _step(name: str, params, s: snap.Snapshot) -> tuple[float, dict[str, torch.Tensor]]:
    """One training step from a fixed seed: its loss and every parameter's gradient."""
    torch.manual_seed(0)
    cls = get_model(name).cls
    meta = GraphMeta(s.n_users, s.n_items, s.behaviors.order, tuple(s.relations))
    data = TrainData.from_snapshot(s, "paper", cls.label_relations(meta), 99.99, "cpu")
    model = build_model(name, params, data.meta)
    graphs = data.graphs(cls.relations(data.meta), "cpu")
    batch = next(iter(model_batches(model, data, 32, False, torch.Generator().manual_seed(1), "cpu")))
    model.train()
    torch.manual_seed(5)  # the dropout masks
    loss, _ = model.loss(batch, graphs)
    loss.backward()
    return float(loss), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@needs_kernel
@pytest.mark.parametrize("name,params", [
    ("hpmr", dict(dim=16, layers=3)),            # the reference dropouts (message 0.2, edge 0.1)
    ("ghcf", dict(dim=32, layers=2)),
    ("lightgcn", dict(dim=64, layers=3)),
    ("lightgcn_m", dict(dim=16, layers=2)),
    ("histgcn", dict(dim=16, layers=2)),
    ("mule", dict(dim=16, layers=1, tda_layers=2)),  # attention products: weights as values
])
def test_a_training_step_has_the_same_loss_and_gradients_on_either_product(name, params):
    s = random_log()
    p = get_model(name).params(**params)
    (loss, grads), (loss_mkl, grads_mkl) = compiled_then_mkl(_step, name, p, s)
    assert loss == pytest.approx(loss_mkl, rel=1e-5)
    assert grads.keys() == grads_mkl.keys() and grads
    for k in grads:
        assert torch.allclose(grads[k], grads_mkl[k], rtol=1e-4, atol=1e-6), k


@needs_kernel
def test_refused_input_names_what_is_wrong():
    adj = graph(20, 10, 60)
    m = adj.matrix
    crow, col, vals = m.crow_indices(), m.col_indices(), m.values()
    x, out = torch.randn(30, 8), torch.empty(30, 8)
    with pytest.raises(ValueError, match="int32 or int64"):
        native.csr_mm(crow, col.long(), vals, x, out)
    with pytest.raises(ValueError, match="float32"):
        native.csr_mm(crow, col, vals.double(), x, out)
    with pytest.raises(ValueError, match="contiguous"):
        native.csr_mm(crow, col, vals, torch.randn(8, 30).T, out)
    with pytest.raises(ValueError, match="width 8"):
        native.csr_mm(crow, col, vals, torch.randn(30, 4), out)
    with pytest.raises(ValueError, match="outside the CSR"):
        native.csr_mm(crow, col, vals, x, torch.empty(10, 8), row0=25)
    with pytest.raises(ValueError, match="within"):
        native.csr_mm(crow, col, vals, x, torch.empty(1, 8), rows=torch.tensor([30]))


def test_mkl_is_used_when_turned_off(mkl):
    assert not native.enabled() and "turned off" in native.status()
    adj = graph(20, 10, 60)
    x = torch.randn(30, 16)
    assert torch.allclose(spmm(adj, x).double(), dense(adj) @ x.double(), atol=1e-5)


def test_the_environment_switch_turns_the_kernel_off():
    code = "from graphrec import native; print(native.enabled()); print(native.status())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "GRAPHREC_NATIVE": "0"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["False", "MKL product: compiled kernel turned off by GRAPHREC_NATIVE=0"]


@needs_kernel
def test_every_copy_of_the_kernel_sums_a_row_within_float_rounding_of_the_best():
    """A row with an odd number of nonzeros and dropout flags read through perm: the copies differ
    only in rounding (FMA or not, the generic loop's order), the AVX2 and AVX-512 ones not at all."""
    adj = graph(n_edges=4000, seed=3).dropout(0.7, torch.Generator().manual_seed(1))
    x = torch.randn(adj.shape[1], 64)
    outs = {}
    for level in native.isa_levels():
        native.use_isa(level)
        outs[level] = (spmm(adj, x), spmm(adj, x.clone()))  # and the same again: no thread-dependent order
    native.use_isa(None)
    best = outs[max(outs)]
    for level, (a, b) in outs.items():
        assert torch.allclose(a, best[0], atol=1e-5) and torch.equal(a, b)
    if 2 in outs and 3 in outs:
        assert torch.equal(outs[2][0], outs[3][0])


def test_the_kernel_is_built_wherever_a_compiler_is():
    """An install with a C compiler must not fall back silently (CI installs from a clean clone)."""
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler on this machine: the MKL product is the expected fallback")
    if os.environ.get("GRAPHREC_NATIVE", "1") == "0":
        pytest.skip("GRAPHREC_NATIVE=0 in the environment")
    assert native.enabled(), native.status()


def _layer_run(z, rel, acc, slope, rate, rows=None, n_rows=None):
    from graphrec.layers import relation_layer
    z, rel, acc = (t.clone().requires_grad_(True) for t in (z, rel, acc))
    torch.manual_seed(11)
    x, out = relation_layer(z, rel, acc, slope, rate, True, n_rows, rows)
    (x.square().sum() + (out * torch.linspace(-2, 2, out.numel()).view_as(out)).sum()).backward()
    return x.detach(), out.detach(), z.grad, rel.grad, acc.grad


@needs_kernel
@pytest.mark.parametrize("slope,rate", [(0.2, 0.2), (1.0, 0.2), (0.2, 0.0)])
@pytest.mark.parametrize("restricted", [False, True])
def test_the_compiled_layer_equals_the_torch_ops_bitwise_forward_and_closely_backward(slope, rate, restricted):
    n, d = 700, 64
    rows = torch.tensor([5, 699, 0, 300] + list(range(400, 700))) if restricted else None
    m = n if rows is None else rows.numel()
    z, rel, acc = torch.randn(m, d), torch.randn(d), torch.randn(m, d)
    got, want = compiled_then_mkl(_layer_run, z, rel, acc, slope, rate, rows, n)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # the same mask, the same floats
    if rate:
        dropped = (got[0] == 0).float().mean()
        assert 0.15 < dropped < 0.25
    for a, b in zip(got[2:], want[2:]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("explicit", [False, True])
def test_compiled_draws_are_torchs_stream_and_leave_the_generator_where_torch_would(explicit):
    """keep_bits draws through the compiled Mersenne Twister: the same int16s as torch's random_,
    across twists (624 outputs each), odd starts and many calls, and the same draws afterwards."""
    from graphrec.adjacency import keep_bits

    def run():
        gen = torch.Generator().manual_seed(42) if explicit else None
        if not explicit:
            torch.manual_seed(42)
        torch.rand(3, generator=gen)  # start mid-block
        bits = [keep_bits(n, generator=gen) for n in (1, 2, 3, 311, 312, 5000, 1, 250_001)]
        return bits, torch.rand(5, generator=gen), torch.randint(0, 10**6, (7,), generator=gen)

    got, want = compiled_then_mkl(run)
    assert native.random_int64(torch.empty(4, dtype=torch.int64), None)  # the compiled path ran
    for a, b in zip(got[0], want[0]):
        assert a.dtype == torch.int16 and torch.equal(a, b)
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    # the flags are fair: keep 0.9 keeps 90%
    from graphrec.adjacency import keep_threshold
    assert abs((got[0][-1] < keep_threshold(0.9)).float().mean().item() - 0.9) < 0.003


def test_compiled_draws_decline_what_they_do_not_cover():
    assert not native.random_int64(torch.empty(4, dtype=torch.int32), None)
    assert not native.random_int64(torch.empty(8, dtype=torch.int64)[::2], None)

"""graphrec's compiled CPU product (graphrec/_native.c): loading it, the switch, the checked call.

The extension is built by ``pip install`` where a C compiler exists and is optional: without it,
or with ``GRAPHREC_NATIVE=0`` in the environment, graphrec.adjacency multiplies with torch's MKL
product. ``status()`` says which one runs and why.
"""

from __future__ import annotations

import os
from types import ModuleType

import torch
from torch import Tensor

_loaded = False
_module: ModuleType | None = None
_reason = ""
_forced: bool | None = None
_draws_ok: bool | None = None  # whether mt_draw reproduces torch's stream (checked once)


def _load() -> ModuleType | None:
    global _loaded, _module, _reason
    if not _loaded:
        _loaded = True
        if os.environ.get("GRAPHREC_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            _reason = "turned off by GRAPHREC_NATIVE=0"
        else:
            try:
                from graphrec import _native
                _module, _reason = _native, "built at install"
            except ImportError as e:  # not built: no compiler at install time
                _reason = (f"not built ({e}); reinstall with a C compiler present "
                           "(pip install -e .) to get the faster CPU product")
    return _module


def enabled() -> bool:
    """Whether CPU products run on the compiled kernel (``use`` overrides the environment)."""
    if _forced is not None:
        return _forced and _load() is not None
    return _load() is not None


def use(on: bool | None) -> None:
    """Force the compiled kernel on (if built) or off; None goes back to the environment's choice.
    For benchmarks and the tests that compare the two products."""
    global _forced
    _forced = on


def status() -> str:
    """One line: which CPU product runs, on which instruction set, and why."""
    _load()
    if _forced is False:
        return "MKL product (compiled kernel turned off by graphrec.native.use(False))"
    if _module is None:
        return f"MKL product: compiled kernel {_reason}"
    return f"compiled kernel, {_module.isa()[0]} ({_reason})"


def isa_levels() -> list[int]:
    """The kernel copies this CPU runs: 0 the generic loop, 1 SSE2, 2 AVX2+FMA, 3 AVX-512 (x86);
    [0] elsewhere, [] without the kernel."""
    module = _load()
    return [] if module is None else list(range(module.isa()[2] + 1))


def use_isa(level: int | None) -> None:
    """Run the product on the copy of ``level`` (at most the CPU's best; None: the best). For the
    tests, which check every copy the machine can run, and for benchmarks."""
    module = _load()
    if module is None:
        raise RuntimeError(status())
    module.set_isa(module.isa()[2] if level is None else level)


def csr_mm(crow: Tensor, col: Tensor, values: Tensor, x: Tensor, out: Tensor, *, row0: int = 0,
           rows: Tensor | None = None, alpha: float = 1.0, accumulate: bool = False,
           keep: Tensor | None = None, keep_at: Tensor | None = None, col0: int = 0) -> Tensor:
    """``out[k] (+)= alpha · Σ_p values[p] · x[col[p]]`` over the CSR row ``row0 + k`` (or
    ``rows[k]``) for every row k of ``out``. float32 operands, int32 or int64 indices, all on CPU
    and contiguous; ``x`` and ``out`` have the same width. ``keep``: an edge-dropout mask (bool,
    one per nonzero) that zeroes the dropped values, read at ``keep_at[p]`` (int64) when given,
    e.g. a transpose reading its matrix's mask through perm. ``col0``: ``x`` holds the operand's
    rows col0.. only; every column the rows read must be at least col0 (the caller checks it).
    Returns ``out``."""
    module = _load()
    if module is None:
        raise RuntimeError(status())
    n, d = out.shape
    bits = {torch.int32: 32, torch.int64: 64}.get(crow.dtype)
    if bits is None or col.dtype != crow.dtype:
        raise ValueError(f"crow and col must both be int32 or int64, got {crow.dtype} and {col.dtype}")
    tensors = {"crow": crow, "col": col, "values": values, "x": x, "out": out}
    for name, t in tensors.items():
        if t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous CPU tensor")
    if values.dtype != torch.float32 or x.dtype != torch.float32 or out.dtype != torch.float32:
        raise ValueError(f"values, x and out must be float32, got {values.dtype}, {x.dtype}, {out.dtype}")
    if col0 < 0:
        raise ValueError(f"col0 must be >= 0, got {col0}")
    if x.dim() != 2 or x.shape[1] != d or values.numel() != col.numel():
        raise ValueError(f"x must be 2-D with width {d} and values one per column index")
    if rows is not None:
        if rows.dtype != torch.int64 or rows.numel() != n or not rows.is_contiguous():
            raise ValueError("rows must be a contiguous int64 tensor with one row number per output row")
        if n and (int(rows.min()) < 0 or int(rows.max()) >= crow.numel() - 1):
            raise ValueError(f"rows must be within [0, {crow.numel() - 1})")
    elif not 0 <= row0 <= row0 + n <= crow.numel() - 1:
        raise ValueError(f"rows {row0}..{row0 + n - 1} are outside the CSR's {crow.numel() - 1} rows")
    if keep is not None:
        if keep.dtype != torch.bool or keep.device.type != "cpu" or not keep.is_contiguous():
            raise ValueError("keep must be a contiguous CPU bool tensor")
        at = keep_at if keep_at is not None else col
        if at.numel() != col.numel() or (keep_at is not None and keep_at.dtype != torch.int64):
            raise ValueError("keep_at must be int64 with one position per nonzero")
        if keep_at is None and keep.numel() != col.numel():
            raise ValueError(f"keep has {keep.numel()} flags for {col.numel()} nonzeros")
    if n == 0 or d == 0:
        return out
    # Indices are trusted past this point: a column outside x would read out of bounds. The CSRs
    # come from SparseAdj, whose constructors check them.
    module.csr_mm(n, 0 if rows is None else rows.data_ptr(), row0, crow.data_ptr(), col.data_ptr(),
                  values.data_ptr(), 0 if keep is None else keep.data_ptr(),
                  0 if keep is None or keep_at is None else keep_at.data_ptr(), x.data_ptr(), int(col0),
                  out.data_ptr(), d,
                  float(alpha), int(accumulate), bits, torch.get_num_threads())
    return out


def _check_layer(name: str, t: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> int:
    if t is None:
        return 0
    if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous() or tuple(t.shape) != shape:
        raise ValueError(f"{name} must be a contiguous CPU {dtype} tensor of shape {shape}, got "
                         f"{t.dtype} {tuple(t.shape)}{'' if t.is_contiguous() else ' (not contiguous)'}")
    return t.data_ptr()


def layer_forward(z: Tensor, rel: Tensor, acc: Tensor, bits: Tensor | None, threshold: int, scale: float,
                  slope: float) -> tuple[Tensor, Tensor]:
    """A GCCF (``slope`` 0.2) or LightGCN (``slope`` 1) layer after its product ``z`` (n×d), as
    ``x = dropout(leaky_relu(z * rel, slope))`` with the dropout flags ``bits < threshold`` (n×d
    int16, None: no dropout) and ``scale`` = 1/keep, and ``acc + x``: returns (x, acc + x)."""
    module = _load()
    if module is None:
        raise RuntimeError(status())
    n, d = z.shape
    ptrs = [_check_layer("z", z, (n, d)), _check_layer("rel", rel, (d,)), _check_layer("acc", acc, (n, d)),
            _check_layer("bits", bits, (n, d), torch.int16)]
    x, out = torch.empty_like(z), torch.empty_like(z)
    module.layer_forward(n, d, *ptrs, int(threshold), float(scale), float(slope), x.data_ptr(), out.data_ptr(),
                         torch.get_num_threads())
    return x, out


def layer_backward(g_x: Tensor | None, g_acc: Tensor | None, z: Tensor, rel: Tensor, bits: Tensor | None,
                   threshold: int, scale: float, slope: float) -> tuple[Tensor, Tensor]:
    """The gradients of ``layer_forward`` for z and rel, given those of x and of acc + x (None: zero)."""
    module = _load()
    if module is None:
        raise RuntimeError(status())
    n, d = z.shape
    ptrs = [_check_layer("g_x", g_x, (n, d)), _check_layer("g_acc", g_acc, (n, d)), _check_layer("z", z, (n, d)),
            _check_layer("rel", rel, (d,)), _check_layer("bits", bits, (n, d), torch.int16)]
    g_z, g_rel = torch.empty_like(z), z.new_empty(d)
    if g_x is None and g_acc is None:
        return g_z.zero_(), g_rel.zero_()
    module.layer_backward(n, d, *ptrs, int(threshold), float(scale), float(slope), g_z.data_ptr(), g_rel.data_ptr(),
                          torch.get_num_threads())
    return g_z, g_rel


def _draws_match(module: ModuleType) -> bool:
    """Whether ``mt_draw`` gives torch's own draws and leaves the generator where torch would: on
    a few seeds, across a twist, from fresh and from advanced states."""
    for seed, n in ((0, 1), (1, 311), (12345, 1500)):
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for k in (n, 7):
            want = torch.empty(k, dtype=torch.int64)
            want.random_(-(2**63), None, generator=theirs)
            got = torch.empty(k, dtype=torch.int64)
            state = ours.get_state()
            if state.numel() < 24 + 8 * 624:
                return False
            try:
                module.mt_draw(state.data_ptr(), got.data_ptr(), k)
                ours.set_state(state)
            except (ValueError, RuntimeError):
                return False
            if not torch.equal(got, want):
                return False
        if not torch.equal(ours.get_state(), theirs.get_state()):
            return False
    return True


def random_int64(out: Tensor, generator: torch.Generator | None) -> bool:
    """Fill the contiguous CPU int64 ``out`` with what ``out.random_(-2**63, None, generator=...)``
    gives (the default generator for None), about 4x faster; False (``out`` untouched) where the
    compiled kernel is off or this torch's generator state is not the layout it reads. The state is
    read and written back around the draw, so another thread drawing from the same generator at the
    same time would repeat draws: graphrec draws from one thread."""
    global _draws_ok
    module = _load() if enabled() else None
    if module is None or out.dtype != torch.int64 or out.device.type != "cpu" or not out.is_contiguous():
        return False
    gen = torch.default_generator if generator is None else generator
    if gen.device.type != "cpu":
        return False
    if _draws_ok is None:
        _draws_ok = _draws_match(module)
    if not _draws_ok:
        return False
    state = gen.get_state()
    module.mt_draw(state.data_ptr(), out.data_ptr(), out.numel())
    gen.set_state(state)
    return True

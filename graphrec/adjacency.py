"""Normalized bipartite adjacency and a sparse-dense product with an explicit transpose.

Torch and numpy only: this runs on a GPU host that has no DGL.

Why not ``torch.sparse.mm`` with torch's own autograd: its backward rebuilds the transpose (a sort
of all nonzeros) on every call, ~8x the cost of the forward on the Beibei view graph. We sort once,
keep the transpose as its own CSR, and carry dropout masks onto it through ``perm``. On CPU the
product is also split into column tiles whose slice of ``x`` stays in L2 (``_tile_plan``).
``bench/propagation.py`` has the numbers.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from graphrec import native

# int32 indices: 31.3 vs 34.1 ms per product with int64 (4.82M nonzeros, d=64, 2 CPU threads, MKL);
# cuSPARSE takes int32 too. int64 only when a size would overflow.
_INT32_MAX = 2**31 - 1

# Bytes of x that one CPU column tile gathers from (2048 columns at d=64 float32). Untiled, every
# gathered row comes from L3: ~32 ms per product; tiled ~22 ms (2 threads, 4.82M nonzeros). 1 MiB
# measured the same; 512 KiB leaves room on CPUs with a smaller L2. 0 disables tiling.
CPU_TILE_BYTES = 512 * 1024


def csr_tensor(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    # Invariants hold by construction; checking them would cost a pass over all nonzeros.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _as_index(a: np.ndarray | Tensor, name: str) -> Tensor:
    t = torch.as_tensor(a).reshape(-1)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer ids, got dtype {t.dtype}")
    return t.to(device="cpu", dtype=torch.int64)


def _check_range(ids: Tensor, bound: int, name: str) -> None:
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= bound:
            raise ValueError(f"{name} contains {lo if lo < 0 else hi}, outside [0, {bound}): "
                             f"every id in {name} must be >= 0 and < {bound}")


def keep_bits(n: int, device: torch.device | str | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """n uniform int16 draws, four from each 64-bit draw: ~4x fewer random draws than torch.rand
    and ~10x faster than torch.bernoulli_ on CPU (dropout masks were a tenth of an HPMR step).
    ``bits < keep_threshold(keep)`` is a Bernoulli(keep) mask; the compiled layer reads the bits.
    On CPU the compiled kernel draws them (torch's own stream, ~4x faster than random_)."""
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    if not native.random_int64(bits, generator):  # the same draws, compiled (CPU)
        bits.random_(-(2**63), None, generator=generator)
    return bits.view(torch.int16)[:n]


def keep_threshold(keep: float) -> int:
    """The int16 bound below which a ``keep_bits`` draw is kept: keep resolved to 2^-16."""
    return min(round(keep * 2**16), 2**16 - 1) - 2**15


def keep_mask(n: int, keep: float, device: torch.device | str | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """n Bernoulli(keep) booleans (``keep_bits`` below ``keep_threshold``)."""
    return keep_bits(n, device, generator) < keep_threshold(keep)


class SparseAdj:
    """A CSR ``matrix`` with its ``transpose`` stored as its own CSR.

    ``perm`` maps the transpose's nonzeros onto the matrix's: ``transpose.values() ==
    matrix.values()[perm]``. Instances are immutable; ``dropout`` and ``to`` return new ones.
    """

    def __init__(self, matrix: Tensor, transpose: Tensor, perm: Tensor, *, cpu_tile_bytes: int = CPU_TILE_BYTES):
        if matrix.layout != torch.sparse_csr or transpose.layout != torch.sparse_csr:
            raise ValueError("matrix and transpose must be sparse CSR tensors")
        if tuple(transpose.shape) != tuple(matrix.shape)[::-1] or perm.numel() != matrix.values().numel():
            raise ValueError("transpose and perm do not match the matrix")
        self._matrix: Tensor | None = matrix
        self._transpose: Tensor | None = transpose
        self._t_pattern: Tensor | None = None  # with_values copies: the transpose's structure
        self.perm = perm
        self.cpu_tile_bytes = cpu_tile_bytes
        # A dropout copy is (base, mask, scale); its CSRs and tiles are derived only when used,
        # because on CPU the product needs just the tiles.
        self._base: SparseAdj | None = None
        self._mask: Tensor | None = None
        self._mask_t: Tensor | None = None
        self._scale = 1.0
        # Tile plans depend on the structure only, so dropout copies share this dict.
        self._plans: dict[tuple[bool, int], tuple[Tensor, list]] = {}
        self._tiles: dict[tuple[bool, int], tuple[Tensor, float, list]] = {}
        # Other structure-only arrays (the row of every nonzero), shared the same way.
        self._structure: dict[str, Tensor] = {}

    @classmethod
    def from_coo(cls, rows: np.ndarray | Tensor, cols: np.ndarray | Tensor, values: Tensor,
                 shape: tuple[int, int]) -> SparseAdj:
        """Build from unique (row, col, value) triples in any order; duplicates raise ValueError."""
        n_rows, n_cols = int(shape[0]), int(shape[1])
        rows, cols = _as_index(rows, "rows"), _as_index(cols, "cols")
        values = torch.as_tensor(values).reshape(-1)
        if not rows.numel() == cols.numel() == values.numel():
            raise ValueError("rows, cols and values must have the same length")
        _check_range(rows, n_rows, "rows")
        _check_range(cols, n_cols, "cols")
        device, values = values.device, values.cpu()
        idx = torch.int32 if max(n_rows, n_cols, rows.numel()) <= _INT32_MAX else torch.int64
        # torch.sort of int64 keys is a radix sort on CPU: ~170 ms for 4.8M, 2x faster than numpy's
        # argsort. Rows and cols come back out of the sorted key, which beats gathering them.
        key, order = torch.sort(rows * n_cols + cols)
        dup = torch.nonzero(key[1:] == key[:-1])
        if dup.numel():
            k = int(key[int(dup[0])])
            raise ValueError(f"duplicate entry (row {k // n_cols}, col {k % n_cols}); deduplicate the pairs first")
        key_t, order_t = torch.sort(cols * n_rows + rows)
        inverse = torch.empty_like(order).index_copy_(0, order, torch.arange(order.numel()))

        def compressed(k: Tensor, n_major: int, n_minor: int, vals: Tensor) -> Tensor:
            crow = torch.zeros(n_major + 1, dtype=torch.int64)
            torch.cumsum(torch.bincount(k // n_minor, minlength=n_major), 0, out=crow[1:])
            return csr_tensor(crow.to(idx), (k % n_minor).to(idx), vals, (n_major, n_minor))

        return cls(compressed(key, n_rows, n_cols, values.index_select(0, order)),
                   compressed(key_t, n_cols, n_rows, values.index_select(0, order_t)),
                   inverse.index_select(0, order_t)).to(device)

    @property
    def matrix(self) -> Tensor:
        if self._matrix is None:
            self._matrix = self._derive(self._base.matrix, self._mask)
        return self._matrix

    @property
    def transpose(self) -> Tensor:
        if self._transpose is None:
            if self._base is not None:
                self._transpose = self._derive(self._base.transpose, self.transposed_mask)
            else:
                t = self._t_pattern
                self._transpose = csr_tensor(t.crow_indices(), t.col_indices(), self._matrix.values().index_select(
                    0, self.perm), tuple(t.shape))
        return self._transpose

    @property
    def transposed_mask(self) -> Tensor:
        """An edge-dropout copy's mask in the transpose's order (``mask[perm]``), gathered once: a
        step reads it in every backward product over this graph, and reading the mask through perm
        in each of them cost more than the gather (8 more bytes a nonzero, in random order)."""
        if self._mask_t is None:
            self._mask_t = self._mask.index_select(0, self.perm)
        return self._mask_t

    def _derive(self, csr: Tensor, mask: Tensor) -> Tensor:
        values = torch.where(mask, csr.values() * self._scale, 0.0).to(csr.dtype)
        return csr_tensor(csr.crow_indices(), csr.col_indices(), values, tuple(csr.shape))

    @property
    def shape(self) -> tuple[int, int]:
        return self._base.shape if self._base is not None else (int(self._matrix.shape[0]), int(self._matrix.shape[1]))

    @property
    def nnz(self) -> int:
        return self.perm.numel()

    @property
    def device(self) -> torch.device:
        return self.perm.device

    @property
    def dtype(self) -> torch.dtype:
        return self._base.dtype if self._base is not None else self._matrix.dtype

    def __repr__(self) -> str:
        return f"SparseAdj(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype}, device={self.device})"

    def to(self, device: torch.device | str) -> SparseAdj:
        device = torch.device(device)
        if device == self.device:
            return self
        return SparseAdj(self.matrix.to(device), self.transpose.to(device), self.perm.to(device),
                         cpu_tile_bytes=self.cpu_tile_bytes)

    def dropout(self, keep: float, generator: torch.Generator | None = None) -> SparseAdj:
        """Edge dropout: keep each nonzero with probability ``keep`` and scale it by ``1/keep``.

        Dropped entries become explicit zeros, so the structure and its tile plans are reused:
        compacting them away cost more than the 10% fewer nonzeros saved (bench/propagation.py).
        The transpose sees the same mask through ``perm``. No re-normalization. ``generator``
        must be on the adjacency's device.
        """
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1], got {keep}")
        if keep == 1.0:
            return self
        mask = keep_mask(self.nnz, keep, self.device, generator)
        out = SparseAdj.__new__(SparseAdj)
        out._matrix = out._transpose = None
        out.perm, out.cpu_tile_bytes = self.perm, self.cpu_tile_bytes
        out._base, out._mask, out._mask_t, out._scale = self, mask, None, 1.0 / keep
        out._plans, out._tiles, out._structure = self._plans, {}, self._structure
        return out

    def __matmul__(self, x: Tensor) -> Tensor:
        return spmm(self, x)

    def with_values(self, values: Tensor) -> SparseAdj:
        """The same structure carrying ``values`` (one per nonzero, in ``matrix`` order) instead of
        its own, e.g. attention weights; tile plans are shared, dropout is not carried over."""
        m, t = self._pattern(), self._pattern(transposed=True)
        out = SparseAdj(csr_tensor(m.crow_indices(), m.col_indices(), values, tuple(m.shape)), t, self.perm,
                        cpu_tile_bytes=self.cpu_tile_bytes)
        # The transpose's values are gathered through perm on first use only: the CPU product reads
        # the tiles, which gather from the matrix's values themselves (MuLe's attention builds two
        # such copies per layer and never needs their transpose on CPU).
        out._transpose, out._t_pattern = None, t
        out._plans, out._structure = self._plans, self._structure
        return out

    def _pattern(self, transposed: bool = False) -> Tensor:
        """A CSR with this structure (its values are not this copy's when dropout applies)."""
        if self._base is not None:
            return self._base._pattern(transposed)
        if not transposed:
            return self._matrix
        # a with_values copy whose transpose was not needed yet has only its structure
        return self._transpose if self._transpose is not None else self._t_pattern

    def row_ids(self) -> Tensor:
        """The row of every nonzero of ``matrix`` (int64), computed once per structure."""
        if "rows" not in self._structure:
            crow = self._pattern().crow_indices()
            self._structure["rows"] = torch.repeat_interleave(torch.arange(self.shape[0], device=crow.device),
                                                              crow.diff().long())
        return self._structure["rows"]

    def row_entries(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The nonzeros of the given rows as ``(position in rows, column, value)``, dropout applied,
        without deriving the whole dropped matrix (a step's few hundred users touch ~1% of it)."""
        base = self._base if self._base is not None else self
        crow = base.matrix.crow_indices()
        rows = rows.to(device=crow.device, dtype=torch.int64)
        start, end = crow.index_select(0, rows).long(), crow.index_select(0, rows + 1).long()
        lengths = end - start
        local = torch.repeat_interleave(torch.arange(rows.numel(), device=crow.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths
        idx = torch.arange(local.numel(), device=crow.device) + (start - first).index_select(0, local)
        vals = base.matrix.values().index_select(0, idx)
        if self._base is not None:
            vals = torch.where(self._mask.index_select(0, idx), vals * self._scale, 0.0).to(vals.dtype)
        return local, base.matrix.col_indices().index_select(0, idx).long(), vals

    def _rows_reading(self, transposed: bool, cols: tuple[int, int]) -> tuple[int, int, bool]:
        """The span of (transposed) rows with a nonzero in columns ``cols[0]..cols[1]-1`` ((0, 0)
        if none) and whether every nonzero of those rows lies in ``cols``; structure only, computed
        once per span. In a bipartite graph (users first) the item columns are read by the user
        rows alone, and those read nothing else: a product with x nonzero only on the items writes
        the user rows from the item rows of x alone and zero-fills the rest."""
        key = f"rows_reading/{int(transposed)}/{cols[0]}/{cols[1]}"
        if key not in self._structure:
            csr = self._pattern(transposed)
            crow, col = csr.crow_indices(), csr.col_indices()
            hit = torch.nonzero((col >= cols[0]) & (col < cols[1])).squeeze(1)
            if hit.numel() == 0:
                self._structure[key] = torch.tensor([0, 0, 1])
            else:
                first, last = int(hit[0]), int(hit[-1])
                # the row of a nonzero p is the last r with crow[r] <= p
                r0 = int(torch.searchsorted(crow, torch.tensor(first, dtype=crow.dtype), right=True)) - 1
                r1 = int(torch.searchsorted(crow, torch.tensor(last, dtype=crow.dtype), right=True))
                span = col[int(crow[r0]):int(crow[r1])]
                inside = bool((span >= cols[0]).all() and (span < cols[1]).all())
                self._structure[key] = torch.tensor([r0, r1, int(inside)])
        r0, r1, inside = (int(v) for v in self._structure[key])
        return r0, r1, bool(inside)

    def _cpu_tiles(self, transposed: bool, dim: int, itemsize: int) -> tuple[float, list] | None:
        """``(alpha, tiles)``: the (transposed) matrix is ``alpha`` times the column tiles
        ``(r0, r1, c0, c1, csr)``, for an operand of width ``dim``; None when untiled."""
        width = max(1, self.cpu_tile_bytes // max(1, dim * itemsize))
        if self.cpu_tile_bytes <= 0 or self.shape[0 if transposed else 1] <= width or self.nnz == 0:
            return None
        return self._tiles_at(transposed, width)[1:]

    def _tiles_at(self, transposed: bool, width: int) -> tuple[Tensor, float, list]:
        key = (transposed, width)
        if key not in self._tiles:
            if self._base is not None:
                base_vals, alpha, _ = self._base._tiles_at(transposed, width)  # makes the shared plan
                src, segments = self._plans[key]
                # The 1/keep scale rides on addmm's alpha: one pass over the values instead of two.
                vals = torch.where(self._mask.index_select(0, src), base_vals, 0.0).to(base_vals.dtype)
                alpha *= self._scale
            else:
                if key not in self._plans:
                    csr = self.transpose if transposed else self.matrix
                    self._plans[key] = _tile_plan(csr, width, self.perm if transposed else None)
                src, segments = self._plans[key]
                vals, alpha = self.matrix.values().index_select(0, src), 1.0
            self._tiles[key] = (vals, alpha, [(r0, r1, c0, c1, csr_tensor(crow, col, vals[a:b], (r1 - r0, c1 - c0)))
                                       for r0, r1, c0, c1, a, b, crow, col in segments])
        return self._tiles[key]


def _tile_plan(csr: Tensor, width: int, perm: Tensor | None) -> tuple[Tensor, list]:
    """Split ``csr`` into blocks of ``width`` columns, each cut to its span of nonzero rows.

    Returns the position in ``matrix.values()`` of every tile nonzero (``perm`` is None for the
    matrix itself, or the adjacency's perm when ``csr`` is its transpose) and per tile
    ``(r0, r1, c0, c1, start, end, crow, col)``. The row span is what exploits the bipartite
    layout: a block of user columns touches item rows only, so only those output rows are written.
    """
    crow, col = csr.crow_indices(), csr.col_indices()
    n_rows, n_cols = csr.shape
    rows = torch.repeat_interleave(torch.arange(n_rows, dtype=col.dtype), crow.diff().long())
    block = col // width
    orders, segments, start = [], [], 0
    for c0 in range(0, n_cols, width):
        # One pass per block (a handful) keeps row-major order inside the block without a sort.
        idx = torch.nonzero(block == c0 // width).squeeze(1)
        if idx.numel() == 0:
            continue
        r = rows.index_select(0, idx).long()
        r0, r1 = int(r[0]), int(r[-1]) + 1
        sub = torch.zeros(r1 - r0 + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(r - r0, minlength=r1 - r0), 0, out=sub[1:])
        c1 = min(c0 + width, n_cols)
        segments.append((r0, r1, c0, c1, start, start + idx.numel(), sub.to(col.dtype), col.index_select(0, idx) - c0))
        orders.append(idx)
        start += idx.numel()
    src = torch.cat(orders)
    return (src if perm is None else perm.index_select(0, src)), segments


def _product(adj: SparseAdj, x: Tensor, transposed: bool, rows: tuple[int, int] | None = None,
             cols: tuple[int, int] | None = None) -> Tensor:
    """(adj or its transpose) @ x. ``rows = (lo, hi)``: only output rows lo..hi-1 are wanted (and
    returned); ``cols = (lo, hi)``: only input rows lo..hi-1 of x are nonzero. Tiles outside those
    spans are skipped (CPU)."""
    if x.device != adj.device or x.dtype != adj.dtype:
        raise ValueError(f"x is {x.dtype} on {x.device} but the adjacency is {adj.dtype} on {adj.device}; "
                         f"use adj.to(device) or normalized_bipartite(dtype=...)")
    # MKL and cuSPARSE want a row-major operand; an expanded gradient (stride 0) would be copied anyway.
    x = x.contiguous()
    if x.device.type == "cpu" and x.dtype == torch.float32 and native.enabled():
        return _native_product(adj, x, transposed, rows, cols)
    tiled = adj._cpu_tiles(transposed, x.shape[1], x.element_size()) if x.device.type == "cpu" else None
    if tiled is None:
        csr = adj.transpose if transposed else adj.matrix
        if rows is not None:  # a row span of a CSR is a slice of its arrays: multiply just that
            lo, hi = rows
            crow = csr.crow_indices()
            a, b = int(crow[lo]), int(crow[hi])
            csr = csr_tensor(crow[lo:hi + 1] - a, csr.col_indices()[a:b], csr.values()[a:b], (hi - lo, csr.shape[1]))
        return torch.sparse.mm(csr, x)
    alpha, tiles = tiled
    out = x.new_zeros((adj.shape[1 if transposed else 0], x.shape[1]))
    for r0, r1, c0, c1, block in tiles:
        if (rows is None or (r0 < rows[1] and r1 > rows[0])) and (cols is None or (c0 < cols[1] and c1 > cols[0])):
            out[r0:r1].addmm_(block, x[c0:c1], alpha=alpha)
    return out if rows is None else out[rows[0]:rows[1]]


def _native_product(adj: SparseAdj, x: Tensor, transposed: bool, rows: tuple[int, int] | None,
                    cols: tuple[int, int] | None, partial: bool = False) -> Tensor:
    """``_product`` on graphrec's compiled kernel: one pass over the CSR's rows, each output row
    summed in registers. Untiled: the kernel gathers from L3 fast enough that column tiles (MKL's
    fix) cost more in read-modify-writes of the output than they save (bench/propagation.py).
    ``partial``: ``x`` holds only the rows ``cols`` of the operand (the caller checked with
    ``_rows_reading`` that the rows reading them read nothing else)."""
    drop = {}
    if adj._base is not None and adj._matrix is None:
        # An edge-dropout copy: the kernel reads the base values and the mask (for the transpose in
        # its order, gathered once) instead of a masked copy of every value per direction; 1/keep
        # rides on alpha.
        csr = adj._base.transpose if transposed else adj._base.matrix
        drop = {"keep": adj.transposed_mask if transposed else adj._mask, "alpha": adj._scale}
    else:
        csr = adj.transpose if transposed else adj.matrix
    crow, col, values = csr.crow_indices(), csr.col_indices(), csr.values()
    n_out = csr.shape[0]
    lo, hi = rows if rows is not None else (0, n_out)
    if cols is not None and rows is None:
        lo, hi, _ = adj._rows_reading(transposed, cols)
        out = x.new_empty((n_out, x.shape[1]))
        out[:lo].zero_()
        out[hi:].zero_()
        native.csr_mm(crow, col, values, x, out[lo:hi], row0=lo, col0=cols[0] if partial else 0, **drop)
        return out
    return native.csr_mm(crow, col, values, x, x.new_empty((hi - lo, x.shape[1])), row0=lo, **drop)


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adj: SparseAdj, x: Tensor, rows: tuple[int, int] | None) -> Tensor:  # type: ignore[override]
        ctx.adj, ctx.rows = adj, rows
        return _product(adj, x, transposed=False, rows=rows)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None]:  # type: ignore[override]
        if ctx.rows is not None:  # the gradient of rows that were not computed is zero
            lo, hi = ctx.rows
            n = ctx.adj.shape[0]
            if (lo, hi) != (0, n):
                if (grad.device.type == "cpu" and grad.dtype == torch.float32 and native.enabled()
                        and ctx.adj._rows_reading(True, ctx.rows)[2]):
                    # the rows that read these gradient rows read no others: no zero-padded copy
                    return None, _native_product(ctx.adj, grad.contiguous(), True, None, ctx.rows, partial=True), None
                grad = torch.cat([grad.new_zeros(lo, grad.shape[1]), grad, grad.new_zeros(n - hi, grad.shape[1])])
        return None, _product(ctx.adj, grad, transposed=True, cols=ctx.rows), None


def spmm(adj: SparseAdj, x: Tensor, rows: int | tuple[int, int] | None = None) -> Tensor:
    """``adj.matrix @ x`` for a dense 2-D ``x``; the gradient for ``x`` is ``adj.transpose @ grad``.

    ``rows``: return only the first ``rows`` output rows (e.g. the users of a bipartite graph), or
    rows ``lo..hi-1`` for ``(lo, hi)`` (e.g. its items); on CPU the tiles that write only other
    rows are skipped, in both directions. No gradient flows to the adjacency values
    (normalization and dropout masks are constants).
    """
    if x.dim() != 2 or x.shape[0] != adj.shape[1]:
        raise ValueError(f"x must be 2-D with {adj.shape[1]} rows, got shape {tuple(x.shape)}")
    if isinstance(rows, int):
        rows = (0, rows)
    if rows is not None and not 0 <= rows[0] < rows[1] <= adj.shape[0]:
        raise ValueError(f"rows must be a non-empty span within [0, {adj.shape[0]}], got {rows}")
    return _SpMM.apply(adj, x, rows)


def spmm_rows(adj: SparseAdj, x: Tensor, rows: Tensor, col_offset: int = 0) -> Tensor:
    """``(adj.matrix @ x)[rows]`` for a few scattered ``rows``, from their nonzeros alone. ``x``
    may hold only the input rows ``col_offset..`` (e.g. the items of a bipartite graph, when
    ``rows`` are users); every column of those rows must fall inside it. Differentiable in ``x``.
    """
    local, col, vals = adj.row_entries(rows)
    if col_offset:
        col = col - col_offset
    terms = x.index_select(0, col) * vals.unsqueeze(1)
    return x.new_zeros((rows.numel(), x.shape[1])).index_add_(0, local, terms)


def users_then_items(adj: SparseAdj, x: Tensor, users: Tensor, n_users: int) -> Tensor:
    """``(adj.matrix @ x)`` at the rows ``users`` then every item row (users first in a bipartite
    graph): a whole-data step's last layer, which reads the batch's users and all items."""
    return torch.cat([spmm_rows(adj, x, users), spmm(adj, x, (n_users, adj.shape[0]))])


def last_layer_rows(adj: SparseAdj, x: Tensor, rows: Tensor, n_users: int) -> Tensor:
    """``(adj.matrix @ x)[rows]`` on a bipartite graph (users first): user rows from their own
    nonzeros, item rows from the tiled product of the item block. A BPR batch's items are drawn by
    popularity, so gathering their neighbourhoods moved more than the whole block's product."""
    n = adj.shape[0]
    is_user = rows < n_users
    out = x.new_empty((rows.numel(), x.shape[1]))
    user_pos, item_pos = torch.nonzero(is_user).squeeze(1), torch.nonzero(~is_user).squeeze(1)
    if user_pos.numel():
        out = out.index_copy(0, user_pos, spmm_rows(adj, x, rows.index_select(0, user_pos)))
    if item_pos.numel() and n > n_users:
        items = spmm(adj, x, (n_users, n))
        out = out.index_copy(0, item_pos, items.index_select(0, rows.index_select(0, item_pos) - n_users))
    return out


def pair_keys(adj: SparseAdj, n_users: int) -> Tensor:
    """``u · n_items + i`` of every (user u, item i) nonzero of a bipartite adjacency (users first,
    then items), ascending; computed once per structure."""
    key = ("pair_keys", n_users)
    if key not in adj._structure:
        m = adj._pattern()
        crow = m.crow_indices()[:n_users + 1].long()
        n_items = adj.shape[1] - n_users
        users = torch.repeat_interleave(torch.arange(n_users, device=crow.device), crow.diff())
        # CSR rows are sorted and so are the columns within a row: the keys come out ascending
        adj._structure[key] = users * n_items + (m.col_indices()[:int(crow[-1])].long() - n_users)
    return adj._structure[key]


def has_pairs(adj: SparseAdj, users: Tensor, items: Tensor, n_users: int) -> Tensor:
    """Whether each (users[k], items[k]) is an edge of a bipartite adjacency (users first)."""
    keys = pair_keys(adj, n_users)
    if keys.numel() == 0:
        return torch.zeros(users.shape, dtype=torch.bool, device=users.device)
    q = users.long() * (adj.shape[1] - n_users) + items.long()
    at = torch.searchsorted(keys, q).clamp_(max=keys.numel() - 1)
    return keys.index_select(0, at) == q


def sample_row_entries(adj: SparseAdj, rows: Tensor, generator: torch.Generator | None = None
                       ) -> tuple[Tensor, Tensor]:
    """One uniformly drawn nonzero column of each of ``rows`` and whether the row has any (a row
    without nonzeros gets column 0 and False)."""
    m = adj._pattern()
    crow = m.crow_indices().long()
    rows = rows.long()
    start = crow.index_select(0, rows)
    degree = crow.index_select(0, rows + 1) - start
    u = torch.rand(rows.shape, generator=generator, device=rows.device)
    pick = (start + (u * degree).long().clamp_(max=(degree - 1).clamp(min=0))).clamp_(max=max(adj.nnz - 1, 0))
    cols = m.col_indices().long().index_select(0, pick) if adj.nnz else torch.zeros_like(rows)
    return torch.where(degree > 0, cols, 0), degree > 0


def sddmm(adj: SparseAdj, x: Tensor, y: Tensor) -> Tensor:
    """``⟨x[r], y[c]⟩`` for every nonzero ``(r, c)`` of ``adj.matrix``, in its order (its values
    are not read). MKL's and cuSPARSE's sampled product: 54 ms for 1.6M nonzeros at d = 64 on 2
    CPU threads, where gathering both rows per nonzero took 1.9 s."""
    m = adj._pattern()
    pattern = csr_tensor(m.crow_indices(), m.col_indices(), x.new_zeros(adj.nnz), tuple(m.shape))
    return torch.sparse.sampled_addmm(pattern, x.contiguous(), y.T, beta=0.0).values()


def row_softmax(adj: SparseAdj, scores: Tensor) -> Tensor:
    """Softmax of per-nonzero ``scores`` within each row of ``adj.matrix`` (max-shifted)."""
    crow, rows = adj._pattern().crow_indices().long(), adj.row_ids()
    e = (scores - torch.segment_reduce(scores, "max", offsets=crow).index_select(0, rows)).exp()
    return e / torch.segment_reduce(e, "sum", offsets=crow).index_select(0, rows)


class _AttentionSpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adj: SparseAdj, query: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        alpha = row_softmax(adj, sddmm(adj, query, x))
        weighted = adj.with_values(alpha)
        ctx.adj, ctx.weighted = adj, weighted
        ctx.save_for_backward(query, x, alpha)
        return _product(weighted, x.contiguous(), transposed=True)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, Tensor]:  # type: ignore[override]
        query, x, alpha = ctx.saved_tensors
        adj, grad = ctx.adj, grad.contiguous()
        # out = Wᵀx with W[s, r] = α_sr: dx = W·g through the product, dα_sr = ⟨x_s, g_r⟩
        grad_x = _product(ctx.weighted, grad, transposed=False)
        d_alpha = sddmm(adj, x, grad)
        crow, rows = adj._pattern().crow_indices().long(), adj.row_ids()
        inner = torch.segment_reduce(alpha * d_alpha, "sum", offsets=crow).index_select(0, rows)
        scores = adj.with_values(alpha * (d_alpha - inner))
        # σ_sr = ⟨q_s, x_r⟩: dq_s = Σ_r dσ_sr x_r, dx_r += Σ_s dσ_sr q_s
        grad_query = _product(scores, x, transposed=False)
        grad_x = grad_x + _product(scores, query.contiguous(), transposed=True)
        return None, grad_query, grad_x


def attention_spmm(adj: SparseAdj, query: Tensor, x: Tensor) -> Tensor:
    """``out[r] = Σ_s α_sr x[s]`` over the nonzeros ``(s, r)`` of ``adj.matrix``, with
    ``α_sr = softmax over r' in row s of ⟨query[s], x[r']⟩``: every node spreads its own row to its
    neighbours with weights it sets by how well each neighbour matches its query (MuLe's
    target-guided denoising attention; the weights arriving at a node need not sum to 1).
    Differentiable in ``query`` and ``x``; the attention is never stored beyond one value per
    nonzero, and the backward is two sampled products and three sparse products."""
    if x.shape != query.shape or x.dim() != 2 or x.shape[0] != adj.shape[0] or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"query and x must both be {adj.shape[0]}×d for a square adjacency; got "
                         f"{tuple(query.shape)} and {tuple(x.shape)}")
    return _AttentionSpMM.apply(adj, query, x)


def normalized_bipartite(users: np.ndarray | Tensor, items: np.ndarray | Tensor, n_users: int, n_items: int, *,
                         device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> SparseAdj:
    """D^-1/2 A D^-1/2 for A = [[0, R], [R^T, 0]] with R[u, i] = 1 per edge (users[k], items[k]).

    Nodes: users 0..n_users-1, then item i at n_users + i. No self loops; a node without edges
    has an all-zero row and column. Edges must be unique and in range (ValueError otherwise).
    """
    u, i = _as_index(users, "users"), _as_index(items, "items")
    if u.numel() != i.numel():
        raise ValueError(f"users and items differ in length ({u.numel()} vs {i.numel()})")
    _check_range(u, n_users, "users")
    _check_range(i, n_items, "items")
    key = torch.sort(u * n_items + i).values
    dup = torch.nonzero(key[1:] == key[:-1])
    if dup.numel():
        k = int(key[int(dup[0])])
        raise ValueError(f"duplicate edge (user {k // n_items}, item {k % n_items}): edges must be unique; "
                         f"deduplicate them first")
    deg_u = torch.bincount(u, minlength=n_users).double()
    deg_i = torch.bincount(i, minlength=n_items).double()
    # Every edge's endpoints have degree >= 1, so no inf/nan; isolated nodes just have no entries.
    w = torch.rsqrt(deg_u[u] * deg_i[i]).to(dtype)
    n = n_users + n_items
    adj = SparseAdj.from_coo(torch.cat([u, i + n_users]), torch.cat([i + n_users, u]), torch.cat([w, w]), (n, n))
    return adj.to(device) if device is not None else adj

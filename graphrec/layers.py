"""Small building blocks shared by the recall models and the ranking stage (kept outside both
packages so that neither imports the other's registry)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphrec import native
from graphrec.adjacency import keep_bits, keep_mask, keep_threshold


def xavier(*shape: int) -> nn.Parameter:
    """Glorot-uniform parameter (the reference models' initializer for tables, weights and biases)."""
    w = torch.empty(*shape)
    nn.init.xavier_uniform_(w)
    return nn.Parameter(w)


def dropout(x: Tensor, rate: float, training: bool) -> Tensor:
    """Inverted dropout with the fast mask of graphrec.adjacency (F.dropout's bernoulli_ took 28 ms
    per (U+V)×64 Beibei tensor on 2 cores, this ~6 ms; it ran 6× per HPMR step)."""
    if not training or rate == 0.0:
        return x
    scale = keep_mask(x.numel(), 1.0 - rate, x.device).view(x.shape).to(x.dtype).mul_(1.0 / (1.0 - rate))
    return x * scale


def dropout_rows(x: Tensor, rate: float, training: bool, n_rows: int, rows: Tensor) -> Tensor:
    """``dropout`` of an n_rows×d tensor of which only ``rows`` were computed (``x`` holds them, in
    that order): the mask is drawn for all n_rows×d elements, so the random stream and the kept
    values are exactly those of the whole tensor's dropout."""
    if not training or rate == 0.0:
        return x
    mask = keep_mask(n_rows * x.shape[1], 1.0 - rate, x.device).view(n_rows, x.shape[1]).index_select(0, rows)
    return x * mask.to(x.dtype).mul_(1.0 / (1.0 - rate))


class _CompiledLayer(torch.autograd.Function):
    """``relation_layer`` on graphrec's compiled kernels: one pass forward, one backward."""

    @staticmethod
    def forward(ctx, z: Tensor, rel: Tensor, acc: Tensor, bits: Tensor | None, threshold: int, scale: float,
                slope: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        ctx.set_materialize_grads(False)  # an unused x passes None, not a zero tensor to read
        ctx.save_for_backward(z, rel, bits)
        ctx.constants = (threshold, scale, slope)
        return native.layer_forward(z, rel, acc, bits, threshold, scale, slope)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_x: Tensor | None, g_acc: Tensor | None):  # type: ignore[override]
        z, rel, bits = ctx.saved_tensors
        g_z, g_rel = native.layer_backward(None if g_x is None else g_x.contiguous(),
                                           None if g_acc is None else g_acc.contiguous(), z, rel, bits,
                                           *ctx.constants)
        return g_z, g_rel, g_acc, None, None, None, None


def relation_layer(z: Tensor, rel: Tensor, acc: Tensor, slope: float, rate: float, training: bool,
                   n_rows: int | None = None, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """A GCCF (``slope`` 0.2) or LightGCN (``slope`` 1) layer after its product ``z``:
    ``x = dropout(leaky_relu(z * rel, slope), rate)`` and ``acc + x``; returns both. With
    ``rows``, ``z`` and ``acc`` hold just those rows of an n_rows×d layer, and the dropout mask is
    drawn for all of it, as in ``dropout_rows``. The random stream is ``dropout``'s either way.

    On CPU in float32 it runs on the compiled kernels (one pass each way where the torch ops made
    six forward and five backward, each from memory); elsewhere on those torch ops."""
    d = z.shape[1]
    bits, threshold, scale = None, 0, 1.0
    if training and rate > 0.0:
        n = z.shape[0] if rows is None else n_rows
        bits = keep_bits(n * d, z.device).view(n, d)
        if rows is not None:
            bits = bits.index_select(0, rows)
        threshold, scale = keep_threshold(1.0 - rate), 1.0 / (1.0 - rate)
    if (z.device.type == "cpu" and z.dtype == torch.float32 == rel.dtype == acc.dtype and rel.dim() == 1
            and native.enabled()):
        return _CompiledLayer.apply(z.contiguous(), rel.contiguous(), acc.contiguous(), bits, threshold, scale,
                                    slope)
    t = z * rel
    x = t if slope == 1.0 else F.leaky_relu(t, slope)
    if bits is not None:
        x = x * (bits < threshold).to(x.dtype).mul_(scale)
    return x, acc + x

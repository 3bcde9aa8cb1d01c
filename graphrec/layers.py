"""Small building blocks shared by the recall models and the ranking stage (kept outside both
packages so that neither imports the other's registry)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from graphrec.adjacency import keep_mask


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

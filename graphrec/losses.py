"""Losses as pure functions: the whole-data (non-sampling) loss, BPR (plain and floored) and binary
cross-entropy.

The whole-data loss (MODELS.md §0c) is what HPMR, GHCF, EHCF and LightGCN_M train with. For one
behavior with prediction ŷ_uv = Σ_d p_ud q_vd h_d, negative weight c0 and positive weight 1:

    L = c0 · Σ_{i,j} (Σ_{u∈B} p_ui p_uj) (Σ_{v∈V} q_vi q_vj) (h_i h_j)
        + Σ_{u∈B} Σ_{v∈V_u^+} [ (1 − c0) ŷ_uv² − 2 ŷ_uv ]

which equals Σ_{u∈B} Σ_{v∈V} c_uv (y_uv − ŷ_uv)² − |positives|, but costs O((|B|+|V|)·d²) instead
of O(|B|·|V|·d): the |B|×|V| score matrix is never formed. It is a sum over the batch (not a mean);
the reference learning rates and decays are tuned for that scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _Gram(torch.autograd.Function):
    """``x.T @ x`` with the backward ``x @ (g + g.T)``: one product where autograd's two (one per
    factor) plus a transposed add were a third of the loss's time on HPMR's 7,977 × 64 items."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.T @ x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return x @ (g + g.T)


def gram(x: Tensor) -> Tensor:
    """``x.T @ x`` (d×d) for an n×d ``x``, differentiable."""
    return _Gram.apply(x)


def whole_data_loss(users: Tensor, items: Tensor, h: Tensor, pos_rows: Tensor, pos_items: Tensor,
                    c0: float) -> Tensor:
    """Non-sampling loss of one behavior for a batch of users.

    users: B×d user representations; items: V×d (all items, every step); h: d prediction vector;
    (pos_rows, pos_items): the batch's positive pairs, row = position in the batch; c0: weight of
    every unobserved (user, item) cell. Positives as a pair list rather than a padded B×L matrix:
    on Beibei's cart lists L (the 99.99th percentile) is ~7× the mean, and the gather and its
    backward scatter were an eighth of an HPMR step.
    """
    cells = gram(users) * gram(items) * torch.outer(h, h)
    y = ((users * h).index_select(0, pos_rows) * items.index_select(0, pos_items)).sum(-1)
    return c0 * cells.sum() + ((1.0 - c0) * y.square() - 2.0 * y).sum()


def naive_whole_data_loss(users: Tensor, items: Tensor, h: Tensor, labels: Tensor, c0: float) -> Tensor:
    """Σ_u Σ_v c_uv (y_uv − ŷ_uv)² − |positives|, formed densely: for tests and tiny data only."""
    scores = (users * h) @ items.T
    weight = torch.where(labels > 0, torch.ones_like(scores), torch.full_like(scores, c0))
    return (weight * (labels - scores).square()).sum() - labels.sum()


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """Mean of −log σ(ŷ_pos − ŷ_neg) (softplus form: stable for large margins)."""
    return F.softplus(neg_scores - pos_scores).mean()


def floored_bpr_loss(pos_scores: Tensor, neg_scores: Tensor, eps: float = 1e-10) -> Tensor:
    """Mean of −log(eps + σ(ŷ_pos − ŷ_neg)), the form of MuLe's reference code: a margin that
    underflows σ costs at most −log eps (≈ 23 for 1e-10) and passes almost no gradient, where
    ``bpr_loss`` keeps growing linearly. Kept apart so the models that train with it match it."""
    return -(torch.sigmoid(pos_scores - neg_scores) + eps).log().mean()


def bce_loss(logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy on logits."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), weight=weight)


def l2(*tensors: Tensor) -> Tensor:
    """TensorFlow's l2_loss summed over tensors: ½ Σ x² (the reference regularisers use it)."""
    return sum(0.5 * t.square().sum() for t in tensors)

"""The optimizers and the inner loop of an epoch, shared by recall and ranking training."""

from __future__ import annotations

from typing import Iterable

import torch

from graphrec.config import TrainConfig


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``train.optimizer`` names (EHCF and NMTR train with Adagrad, as published)."""
    if tc.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=tc.lr)
    return torch.optim.Adagrad(model.parameters(), lr=tc.lr, initial_accumulator_value=1e-8)


def optimize_epoch(steps: Iterable[tuple[torch.Tensor, dict[str, float]]], opt: torch.optim.Optimizer
                   ) -> tuple[float, float, dict[str, float]]:
    """One optimizer step per ``(loss, parts)`` that ``steps`` yields (lazily, so each loss is
    built after the previous step); returns the summed loss, its mean and the parts' means."""
    total, parts_sum, n = 0.0, {}, 0
    for loss, parts in steps:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
        n += 1
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + v
    n = max(n, 1)
    return total, total / n, {k: v / n for k, v in parts_sum.items()}

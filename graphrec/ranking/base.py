"""What every ranking-stage model shares: the shape of the ranking data, one batch, the interface.

The ranking stage scores a user's candidate list (from a recall run) on one task per behavior of
the cascade (e.g. cart, buy; view, cart, buy where views exist). A batch holds *whole lists of a
few users*: per-user inputs (sequences, user dense features) are computed once per user and
gathered per row, which is what makes per-behavior Transformers (DMT) affordable on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphrec.errors import BadValue


@dataclass(frozen=True)
class RankMeta:
    """Sizes the models are built from. Item ids are ``0..n_items-1``; ``n_items`` is the padding
    id of the sequences (an extra embedding row that is masked out)."""

    n_users: int
    n_items: int
    #: One task per behavior, cascade order, target (e.g. buy) last.
    tasks: tuple[str, ...]
    #: Behaviors with a per-user item sequence, and each one's maximum length.
    seq_behaviors: tuple[str, ...]
    seq_lengths: tuple[int, ...]
    n_user_dense: int
    n_item_dense: int
    #: Buckets of the recall position for the bias network; the last one means "not retrieved"
    #: (a held-out positive appended to the list so that it can be scored).
    n_positions: int

    @property
    def target(self) -> str:
        return self.tasks[-1]

    @property
    def pad(self) -> int:
        return self.n_items


@dataclass
class RankBatch:
    """The rows of a few users' candidate lists.

    Per user (``U`` distinct users): ``users``, ``seqs[b]`` (``U × L_b`` item ids, valid entries
    first, padded with ``meta.pad``), ``seq_lens[b]`` (``U``), ``user_dense`` (``U × Fu``),
    ``user_rows`` (``U``: the user's number of training rows, for STAN's stage weights).
    Per row (``R`` candidates): ``row_user`` (index into ``users``), ``items``, ``item_dense``
    (``R × Fi``), ``position`` (bias bucket), ``labels`` (``R × T``, one column per task; None when
    serving) and ``pseudo`` (``R × T``: mean label of the user's earlier rows, STAN's pseudo-labels;
    None when serving).
    """

    users: Tensor
    seqs: tuple[Tensor, ...]
    seq_lens: tuple[Tensor, ...]
    user_dense: Tensor
    user_rows: Tensor
    row_user: Tensor
    items: Tensor
    item_dense: Tensor
    position: Tensor
    labels: Tensor | None = None
    pseudo: Tensor | None = None

    def to(self, device: torch.device | str) -> "RankBatch":
        def mv(x):
            if x is None:
                return None
            if isinstance(x, tuple):
                return tuple(t.to(device) for t in x)
            return x.to(device)

        return RankBatch(**{k: mv(v) for k, v in self.__dict__.items()})

    @property
    def n_rows(self) -> int:
        return int(self.items.shape[0])


class Ranker(nn.Module):
    """Interface of every ranking model in the registry.

    ``logits(batch)`` gives the serving logits, one column per task (``R × T``); ``loss(batch)``
    the training loss and a dict of its parts for logging. The default loss is the per-task
    weighted binary cross-entropy; models with extra training-only terms (DMT's bias network,
    STAN's preference module and stage weights) override it.
    """

    stage: ClassVar[str] = "ranking"

    def __init__(self, meta: RankMeta, task_weights: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.meta = meta
        w = task_weights if task_weights is not None else (1.0,) * len(meta.tasks)
        if len(w) != len(meta.tasks):
            raise BadValue(f"task_weights has {len(w)} values for {len(meta.tasks)} tasks {meta.tasks}")
        self.register_buffer("task_weights", torch.tensor(w, dtype=torch.float32), persistent=False)

    def logits(self, batch: RankBatch) -> Tensor:
        raise NotImplementedError

    def loss(self, batch: RankBatch) -> tuple[Tensor, dict[str, float]]:
        assert batch.labels is not None
        per_task = F.binary_cross_entropy_with_logits(self.logits(batch), batch.labels, reduction="none").mean(0)
        total = (per_task * self.task_weights).sum()
        return total, {f"bce_{t}": float(v) for t, v in zip(self.meta.tasks, per_task.detach())}

    @torch.no_grad()
    def predict(self, batch: RankBatch) -> Tensor:
        """Serving probabilities per task (``R × T``), in eval mode."""
        was = self.training
        self.eval()
        try:
            return torch.sigmoid(self.logits(batch))
        finally:
            self.train(was)

"""Multi-task ranking baselines and the building blocks DMT and STAN reuse.

* ``MLPSingle``: one independent model per task (own embeddings, own MLP); nothing is shared. It is
  the base of STAN's RelaImpr (MODELS.md §6.1).
* ``SharedBottom``: one shared MLP, one tower per task.
* ``MMoE`` (Ma et al., KDD 2018): shared experts, one softmax gate and one tower per task
  (``MMoEHead``, also DMT's head).
* ``PLE`` (Tang et al., RecSys 2020): CGC extraction levels of task-specific and shared experts, each
  task's gate over [its experts, the shared experts]; between levels a shared gate over all experts
  feeds the next level's shared experts (``PLEBackbone``, STAN's backbone with one level).

Every model reads ``FeatureEncoder.flat``. Dense layers keep PyTorch's default init; dropout follows
every hidden ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from graphrec.errors import BadValue
from graphrec.layers import dropout as drop
from graphrec.ranking.base import RankBatch, Ranker, RankMeta
from graphrec.ranking.features import FeatureEncoder

# ------------------------------------------------------------------------------------------ validation

def check_sizes(**values: int | tuple[int, ...]) -> None:
    """Counts and layer-width lists that must be positive (lists non-empty)."""
    for name, v in values.items():
        if isinstance(v, (tuple, list)):
            if not v or any(int(w) < 1 for w in v):
                raise BadValue(f"{name} must be a non-empty list of positive widths; got {list(v)}")
        elif int(v) < 1:
            raise BadValue(f"{name} must be >= 1; got {v}")


def check_widths(**values: tuple[int, ...]) -> None:
    """Layer-width lists that may be empty (a tower of no hidden layer is one linear layer)."""
    for name, v in values.items():
        if any(int(w) < 1 for w in v):
            raise BadValue(f"{name} must hold positive widths; got {list(v)}")


def check_rates(**values: float) -> None:
    for name, v in values.items():
        if not 0.0 <= v < 1.0:
            raise BadValue(f"{name} is a drop rate in [0, 1); got {v}")


# ------------------------------------------------------------------------------------------ blocks

class MLPTower(nn.Module):
    """Linear+ReLU(+dropout) per width of ``hidden``, then a linear ``out_dim`` output if given.
    ``out_dim`` (attribute) is the width of what it returns."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float = 0.0, out: int | None = None):
        super().__init__()
        widths = [in_dim, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(widths[-1], out) if out is not None else None
        self.rate = dropout
        self.out_dim = out if out is not None else widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = drop(torch.relu(layer(x)), self.rate, self.training)
        return self.head(x) if self.head is not None else x


def mix(gate_logits: Tensor, experts: list[Tensor]) -> Tensor:
    """Softmax-gated sum of expert outputs: ``R × E`` gate logits, E tensors ``R × H`` → ``R × H``."""
    w = torch.softmax(gate_logits, dim=-1)
    return torch.einsum("re,reh->rh", w, torch.stack(experts, dim=1))


class MMoEHead(nn.Module):
    """Experts on a shared input, one softmax gate and one tower per task → ``R × n_tasks`` logits."""

    def __init__(self, in_dim: int, n_tasks: int, n_experts: int, expert: tuple[int, ...], tower: tuple[int, ...],
                 dropout: float):
        super().__init__()
        self.experts = nn.ModuleList(MLPTower(in_dim, expert, dropout) for _ in range(n_experts))
        self.gates = nn.ModuleList(nn.Linear(in_dim, n_experts) for _ in range(n_tasks))
        self.towers = nn.ModuleList(MLPTower(expert[-1], tower, dropout, out=1) for _ in range(n_tasks))

    def forward(self, x: Tensor) -> Tensor:
        h = [e(x) for e in self.experts]
        return torch.cat([tower(mix(gate(x), h)) for gate, tower in zip(self.gates, self.towers)], dim=1)


class CGCLevel(nn.Module):
    """One customized-gate-control extraction level.

    Takes one input per task plus the shared input (all the same tensor at the first level) and
    returns each task's gated mix of [its own experts, the shared experts], plus (``shared_gate``,
    every level but the last) the shared input of the next level: a gate over all experts.
    """

    def __init__(self, in_dim: int, n_tasks: int, n_task_experts: int, n_shared_experts: int,
                 expert: tuple[int, ...], dropout: float, shared_gate: bool):
        super().__init__()
        self.task_experts = nn.ModuleList(
            nn.ModuleList(MLPTower(in_dim, expert, dropout) for _ in range(n_task_experts)) for _ in range(n_tasks))
        self.shared_experts = nn.ModuleList(MLPTower(in_dim, expert, dropout) for _ in range(n_shared_experts))
        self.task_gates = nn.ModuleList(nn.Linear(in_dim, n_task_experts + n_shared_experts) for _ in range(n_tasks))
        self.shared_gate = (nn.Linear(in_dim, n_tasks * n_task_experts + n_shared_experts) if shared_gate else None)
        self.out_dim = expert[-1]

    def forward(self, task_inputs: list[Tensor], shared_input: Tensor) -> tuple[list[Tensor], Tensor | None]:
        shared = [e(shared_input) for e in self.shared_experts]
        own = [[e(x) for e in experts] for experts, x in zip(self.task_experts, task_inputs)]
        outs = [mix(gate(x), h + shared) for gate, x, h in zip(self.task_gates, task_inputs, own)]
        nxt = None
        if self.shared_gate is not None:
            nxt = mix(self.shared_gate(shared_input), [h for hs in own for h in hs] + shared)
        return outs, nxt


class PLEBackbone(nn.Module):
    """``levels`` CGC levels and one tower per task → ``R × n_tasks`` logits."""

    def __init__(self, in_dim: int, n_tasks: int, n_task_experts: int, n_shared_experts: int,
                 expert: tuple[int, ...], tower: tuple[int, ...], levels: int, dropout: float):
        super().__init__()
        self.levels = nn.ModuleList()
        for lv in range(levels):
            self.levels.append(CGCLevel(in_dim if lv == 0 else expert[-1], n_tasks, n_task_experts,
                                        n_shared_experts, expert, dropout, shared_gate=lv < levels - 1))
        self.towers = nn.ModuleList(MLPTower(expert[-1], tower, dropout, out=1) for _ in range(n_tasks))
        self.n_tasks = n_tasks

    def forward(self, x: Tensor) -> Tensor:
        task_inputs, shared = [x] * self.n_tasks, x
        for level in self.levels:
            task_inputs, shared = level(task_inputs, shared)
        return torch.cat([tower(h) for tower, h in zip(self.towers, task_inputs)], dim=1)


# ------------------------------------------------------------------------------------------ models

@dataclass(frozen=True)
class MLPSingleParams:
    dim: int = 32
    hidden: tuple[int, ...] = (128, 64, 32)     # each task's MLP, then a linear logit
    dropout: float = 0.0
    task_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_sizes(dim=self.dim)
        check_widths(hidden=self.hidden)
        check_rates(dropout=self.dropout)


class MLPSingle(Ranker):
    """One FeatureEncoder and one MLP per task: the tasks share no parameter."""

    def __init__(self, params: MLPSingleParams, meta: RankMeta):
        super().__init__(meta, params.task_weights)
        self.params = params
        self.per_task = nn.ModuleList()
        for _ in meta.tasks:
            enc = FeatureEncoder(meta, params.dim)
            self.per_task.append(nn.ModuleDict({"features": enc,
                                                "mlp": MLPTower(enc.in_dim, params.hidden, params.dropout, out=1)}))

    def logits(self, batch: RankBatch) -> Tensor:
        return torch.cat([t["mlp"](t["features"].flat(batch)) for t in self.per_task], dim=1)


@dataclass(frozen=True)
class SharedBottomParams:
    dim: int = 32
    bottom: tuple[int, ...] = (128, 64)
    tower: tuple[int, ...] = (32,)
    dropout: float = 0.0
    task_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_sizes(dim=self.dim, bottom=self.bottom)
        check_widths(tower=self.tower)
        check_rates(dropout=self.dropout)


class SharedBottom(Ranker):
    def __init__(self, params: SharedBottomParams, meta: RankMeta):
        super().__init__(meta, params.task_weights)
        self.params = params
        self.features = FeatureEncoder(meta, params.dim)
        self.bottom = MLPTower(self.features.in_dim, params.bottom, params.dropout)
        self.towers = nn.ModuleList(MLPTower(params.bottom[-1], params.tower, params.dropout, out=1)
                                    for _ in meta.tasks)

    def logits(self, batch: RankBatch) -> Tensor:
        h = self.bottom(self.features.flat(batch))
        return torch.cat([tower(h) for tower in self.towers], dim=1)


@dataclass(frozen=True)
class MMoEParams:
    dim: int = 32
    n_experts: int = 4
    expert: tuple[int, ...] = (128, 64)
    tower: tuple[int, ...] = (32,)
    dropout: float = 0.0
    task_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_sizes(dim=self.dim, n_experts=self.n_experts, expert=self.expert)
        check_widths(tower=self.tower)
        check_rates(dropout=self.dropout)


class MMoE(Ranker):
    def __init__(self, params: MMoEParams, meta: RankMeta):
        super().__init__(meta, params.task_weights)
        self.params = params
        self.features = FeatureEncoder(meta, params.dim)
        self.head = MMoEHead(self.features.in_dim, len(meta.tasks), params.n_experts, params.expert, params.tower,
                             params.dropout)

    def logits(self, batch: RankBatch) -> Tensor:
        return self.head(self.features.flat(batch))


@dataclass(frozen=True)
class PLEParams:
    dim: int = 32
    n_task_experts: int = 1        # per task, per level
    n_shared_experts: int = 2      # per level
    expert: tuple[int, ...] = (128, 64)
    tower: tuple[int, ...] = (32,)
    levels: int = 1                # STAN's backbone uses one extraction level
    dropout: float = 0.0
    task_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_sizes(dim=self.dim, n_task_experts=self.n_task_experts, n_shared_experts=self.n_shared_experts,
                    expert=self.expert, levels=self.levels)
        check_widths(tower=self.tower)
        check_rates(dropout=self.dropout)


class PLE(Ranker):
    def __init__(self, params: PLEParams, meta: RankMeta):
        super().__init__(meta, params.task_weights)
        self.params = params
        self.features = FeatureEncoder(meta, params.dim)
        self.backbone = PLEBackbone(self.features.in_dim, len(meta.tasks), params.n_task_experts,
                                    params.n_shared_experts, params.expert, params.tower, params.levels, params.dropout)

    def logits(self, batch: RankBatch) -> Tensor:
        return self.backbone(self.features.flat(batch))

"""The ranking stage's model registry: multi-task models trained on a recall run's candidate lists
(``graphrec train --model NAME --recall-run DIR``)."""

from __future__ import annotations

from graphrec.models import ModelEntry
from graphrec.ranking.dmt import DMT, DMTParams
from graphrec.ranking.mtl import (
    PLE,
    MLPSingle,
    MLPSingleParams,
    MMoE,
    MMoEParams,
    PLEParams,
    SharedBottom,
    SharedBottomParams,
)
from graphrec.ranking.stan import STAN, STANParams

RANKERS: dict[str, ModelEntry] = {
    "mlp_single": ModelEntry(MLPSingle, MLPSingleParams, "one independent MLP per task (RelaImpr's base)"),
    "shared_bottom": ModelEntry(SharedBottom, SharedBottomParams, "Shared-Bottom: one shared MLP, one tower per task"),
    "mmoe": ModelEntry(MMoE, MMoEParams, "MMoE: shared experts, one softmax gate and tower per task"),
    "ple": ModelEntry(PLE, PLEParams, "PLE: CGC levels of task-specific and shared experts"),
    "dmt": ModelEntry(DMT, DMTParams, "DMT (CIKM 2020): a Transformer per behavior sequence, MMoE, bias network"),
    "stan": ModelEntry(STAN, STANParams,
                       "STAN (RecSys 2023): PLE + user preference pseudo-labels + Beta stage weights"),
}

"""The model registry: one entry per model, name -> (model class, params dataclass)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphrec.errors import BadValue
from graphrec.models.base import Batch, GraphMeta, Recommender
from graphrec.models.ehcf import EHCF, EHCFParams
from graphrec.models.ghcf import GHCF, GHCFParams
from graphrec.models.hpmr import HPMR, HPMRParams
from graphrec.models.lightgcn import LightGCN, LightGCNParams
from graphrec.models.lightgcn_m import LightGCNM, LightGCNMParams
from graphrec.models.nmtr import NMTR, NMTRParams
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


@dataclass(frozen=True)
class ModelEntry:
    cls: type
    params: type
    summary: str

    @property
    def stage(self) -> str:
        """"recall" (graph models, trained on a snapshot) or "ranking" (trained on a recall run's lists)."""
        return self.cls.stage


MODELS: dict[str, ModelEntry] = {
    "hpmr": ModelEntry(HPMR, HPMRParams, "HPMR (KDD 2023): per-behavior encoders + projection/transfer network"),
    "ghcf": ModelEntry(GHCF, GHCFParams, "GHCF (AAAI 2021): one shared stream over all behavior graphs"),
    "lightgcn": ModelEntry(LightGCN, LightGCNParams, "LightGCN on the target behavior only, BPR"),
    "lightgcn_m": ModelEntry(LightGCNM, LightGCNMParams,
                             "LightGCN encoder per behavior (HPMR w/o PTN), whole-data loss"),
    "ehcf": ModelEntry(EHCF, EHCFParams, "EHCF (AAAI 2020): no graph, cascaded prediction vectors, whole-data loss"),
    "nmtr": ModelEntry(NMTR, NMTRParams, "NMTR (ICDE 2019): NCF units per behavior, cascaded logits, sampled BCE"),
    # the ranking stage: multi-task models on a recall run's candidate lists (--recall-run)
    "mlp_single": ModelEntry(MLPSingle, MLPSingleParams, "one independent MLP per task (RelaImpr's base)"),
    "shared_bottom": ModelEntry(SharedBottom, SharedBottomParams, "Shared-Bottom: one shared MLP, one tower per task"),
    "mmoe": ModelEntry(MMoE, MMoEParams, "MMoE: shared experts, one softmax gate and tower per task"),
    "ple": ModelEntry(PLE, PLEParams, "PLE: CGC levels of task-specific and shared experts"),
    "dmt": ModelEntry(DMT, DMTParams, "DMT (CIKM 2020): a Transformer per behavior sequence, MMoE, bias network"),
    "stan": ModelEntry(STAN, STANParams,
                       "STAN (RecSys 2023): PLE + user preference pseudo-labels + Beta stage weights"),
}


def get_model(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise BadValue(f"unknown model {name!r}; among choices: {', '.join(sorted(MODELS))}") from None


def build_model(name: str, params: Any, meta: GraphMeta) -> Recommender:
    entry = get_model(name)
    if not isinstance(params, entry.params):
        raise TypeError(f"model {name!r} takes {entry.params.__name__}, got {type(params).__name__}")
    return entry.cls(params, meta)


__all__ = ["MODELS", "ModelEntry", "get_model", "build_model", "Batch", "GraphMeta", "Recommender"]

"""The recall stage's model registry: name -> (model class, params dataclass). The ranking stage
has its own (graphrec.ranking.registry); get_model looks a name up in either."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphrec.errors import BadValue
from graphrec.models.base import Batch, GraphMeta, Recommender
from graphrec.models.ehcf import EHCF, EHCFParams
from graphrec.models.ghcf import GHCF, GHCFParams
from graphrec.models.histgcn import HistGCN, HistGCNParams
from graphrec.models.hpmr import HPMR, HPMRParams
from graphrec.models.lightgcn import LightGCN, LightGCNParams
from graphrec.models.lightgcn_m import LightGCNM, LightGCNMParams
from graphrec.models.mule import MuLe, MuLeParams
from graphrec.models.nmtr import NMTR, NMTRParams


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
    "mule": ModelEntry(MuLe, MuLeParams, "MuLe (CIKM 2024): unified, behavior-specific, target-intersected and "
                       "target-complemented graphs with denoising attention, BPR"),
    "histgcn": ModelEntry(HistGCN, HistGCNParams, "graphrec's own: LightGCN over every behavior's pairs plus the "
                          "user's own upstream items as score terms, BPR with history negatives"),
    "nmtr": ModelEntry(NMTR, NMTRParams, "NMTR (ICDE 2019): NCF units per behavior, cascaded logits, sampled BCE"),
}


def all_models() -> dict[str, ModelEntry]:
    """Both stages' registries: the recall models, then the ranking models."""
    from graphrec.ranking.registry import RANKERS  # imported on use: recall models never load the ranking stage

    return {**MODELS, **RANKERS}


def get_model(name: str) -> ModelEntry:
    models = all_models() if name not in MODELS else MODELS
    try:
        return models[name]
    except KeyError:
        raise BadValue(f"unknown model {name!r}; among choices: {', '.join(sorted(models))}") from None


def build_model(name: str, params: Any, meta: GraphMeta) -> Recommender:
    entry = get_model(name)
    if not isinstance(params, entry.params):
        raise TypeError(f"model {name!r} takes {entry.params.__name__}, got {type(params).__name__}")
    return entry.cls(params, meta)


__all__ = ["MODELS", "ModelEntry", "all_models", "get_model", "build_model", "Batch", "GraphMeta", "Recommender"]

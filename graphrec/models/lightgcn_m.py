"""LightGCN_M: multi-behavior LightGCN with the whole-data loss (the HPMR paper's baseline).

MODELS.md names the baseline but not its equations. graphrec defines it as HPMR's own backbone with
its ``lightgcn`` encoder (MODELS.md §1.3) and no transfer network: per behavior k a weight-free
propagation of the shared ego embeddings, E^{l+1} = (Â_k E^l) ⊙ r_k^l with r_k^{l+1} = r_k^l W_rel^l,
the layer means e_k and r̄_k, scores ŷ_k(u, i) = Σ_d e_k,ud e_k,id r̄_k,d, the loss Σ_k λ_k NS_k plus
decay · (l2(target users of the batch) + l2(all target items)), and the target score at test time.
This is exactly HPMR without PTN (Table 4's "w/o PTN", published 0.1808 on Beibei, next to
LightGCN_M's 0.1788) with the LightGCN encoder in place of GCCF's LeakyReLU.

A first definition, one stream summed over behaviors (E^{l+1} = Σ_k λ_k Â_k E^l) with a learned
prediction vector per behavior, collapsed to zero on Beibei within five epochs: nothing in it
could scale the tiny Xavier embeddings up against decay 10, and HR@10 stayed at chance. The
relation chain r_k^l W_rel^l is what lets this form (and GHCF, HPMR) grow its scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphrec.errors import BadValue
from graphrec.models.base import GraphMeta
from graphrec.models.hpmr import HPMR, HPMRParams


@dataclass(frozen=True)
class LightGCNMParams:
    dim: int = 64
    layers: int = 3
    coefficient: tuple[float, ...] | None = None      # λ per behavior, cascade order; None: default_coefficient
    neg_weight: tuple[float, ...] | None = None       # c0 per behavior; None: 0.1 each
    decay: float = 10.0
    mess_dropout: float = 0.2                         # drop rate
    node_dropout: float = 0.1                         # drop rate of adjacency nonzeros

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise BadValue("layers must be >= 1")


class LightGCNM(HPMR):
    config_key = "lightgcn_m"

    @classmethod
    def label_relations(cls, meta: GraphMeta) -> tuple[str, ...]:
        return meta.behaviors   # no unique (i_not_j) supervision

    def __init__(self, params: LightGCNMParams, meta: GraphMeta):
        # HPMR's transfer loss with every PTN part off is the main loss on e_k, regularized on the
        # target users and all target items as GHCF does (HPMR's main-loss weight regularizes users only).
        super().__init__(HPMRParams(dim=params.dim, encoder="lightgcn", layers=params.layers, transfer_layers=1,
                                    alpha=(0.0, 1.0, 0.0), coefficient=params.coefficient,
                                    neg_weight=params.neg_weight, decay=params.decay,
                                    mess_dropout=params.mess_dropout, node_dropout=params.node_dropout,
                                    use_sit=False, use_urr=False, use_urs=False), meta)
        del self.w_rel_noise   # feeds only the unique-relation scores, which this model has none of

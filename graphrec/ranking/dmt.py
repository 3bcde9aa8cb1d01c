"""DMT, Deep Multifaceted Transformers (Gu et al., CIKM 2020), after the reference code
(MODELS.md §5.2, model_type ``mmoe_transformer_unbias``) adapted to our data.

* Item token = the item id embedding of width ``dim`` (d_model); one table for target items and
  sequences (``FeatureEncoder``). The reference concatenates sku/category/brand/shop embeddings;
  we have item ids only.
* One Transformer per sequence behavior, separate weights. Encoder: sequence embeddings × sqrt(d)
  + learned absolute positions, dropout, one block of multi-head self-attention (Q/K/V dense with
  bias, no output projection, key-padding fill −2^32+1, attention dropout, residual + LayerNorm
  eps 1e-8) and FFN (4d ReLU → d, residual + LayerNorm). Decoder: the target item's embedding
  × sqrt(d) as the single query (no position), dropout, cross-attention to the encoder outputs and
  the same FFN block. The encoder and the decoder's key/value projections run once per *user*;
  only the query side runs per row, on the user's keys gathered by ``batch.row_user``.
  A user with an empty sequence has no keys: that behavior's decoder output is defined as zeros
  (as the pooled embedding of an empty sequence is).
* MMoE over concat[FeatureEncoder.flat, decoder output of every behavior]: ``n_experts`` expert
  MLPs, one softmax gate and tower (32 ReLU → 1) per task. Experts are narrower than the
  reference's 512-256-128 and dense layers keep PyTorch's init (reference: truncated normal 0.1,
  bias 0.1).
* Bias network: the reference feeds category embeddings of the item and its neighbours; our bias
  input is the embedding of the recall position bucket ``batch.position`` (last bucket: appended,
  not retrieved) → 32 ReLU → dropout 0.5 → 16 ReLU → dropout 0.5 → one logit shared by the tasks.
* Loss (``ctr_rel``): per task and row BCE(σ(z_k + z_bias)) + BCE(σ(z_k)), positives weighted by
  ``pos_weights``, mean over rows, weighted by ``task_weights``. Serving logits are z_k: the bias
  network is training-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphrec.errors import BadValue
from graphrec.layers import dropout as drop
from graphrec.layers import xavier
from graphrec.ranking.base import RankBatch, Ranker, RankMeta
from graphrec.ranking.features import FeatureEncoder
from graphrec.ranking.mtl import MLPTower, MMoEHead, check_rates, check_sizes, check_widths

MASK_FILL = -(2.0**32) + 1  # the reference's key-padding fill; finite, so a fully masked row gives no NaN
LN_EPS = 1e-8


@dataclass(frozen=True)
class DMTParams:
    dim: int = 32                           # d_model: item embedding and Transformer width
    heads: int = 4
    dropout: float = 0.1                    # Transformer input, query and attention dropout
    n_experts: int = 4
    expert: tuple[int, ...] = (128, 64)     # reference 512-256-128
    tower: tuple[int, ...] = (32,)
    mlp_dropout: float = 0.0                # reference: dense-layer dropout off
    bias_dim: int = 8                       # position-bucket embedding of the bias network
    bias_hidden: tuple[int, ...] = (32, 16)
    bias_dropout: float = 0.5
    pos_weights: tuple[float, ...] | None = None  # per task weight of positive rows; None: all 1
    task_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_sizes(dim=self.dim, heads=self.heads, n_experts=self.n_experts, expert=self.expert,
                    bias_dim=self.bias_dim)
        check_widths(tower=self.tower, bias_hidden=self.bias_hidden)
        check_rates(dropout=self.dropout, mlp_dropout=self.mlp_dropout, bias_dropout=self.bias_dropout)
        if self.dim % self.heads:
            raise BadValue(f"dim {self.dim} must be a multiple of heads {self.heads}")
        if self.pos_weights is not None and any(w <= 0 for w in self.pos_weights):
            raise BadValue(f"pos_weights must be positive; got {list(self.pos_weights)}")


class Attention(nn.Module):
    """Multi-head attention as in the reference: Q/K/V dense with bias, no output projection,
    attention dropout, residual onto the queries + LayerNorm. ``project`` (K and V) is separate so
    that it runs once per user while the queries run per row."""

    def __init__(self, d: int, heads: int, rate: float):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.heads, self.rate = heads, rate

    def project(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        return self.k(memory), self.v(memory)

    def forward(self, query: Tensor, k: Tensor, v: Tensor, pad: Tensor) -> Tensor:
        """query ``N × Lq × d``; k, v ``N × L × d``; pad ``N × L`` (True at padding)."""
        n, lq, d = query.shape
        h = self.heads

        def split(x: Tensor) -> Tensor:
            return x.view(n, x.shape[1], h, d // h).transpose(1, 2)

        scores = split(self.q(query)) @ split(k).transpose(-1, -2) / math.sqrt(d // h)
        w = torch.softmax(scores.masked_fill(pad[:, None, None, :], MASK_FILL), dim=-1)
        w = drop(w, self.rate, self.training)
        out = (w @ split(v)).transpose(1, 2).reshape(n, lq, d)
        return self.norm(out + query)


class FeedForward(nn.Module):
    """d → 4d ReLU → d, residual + LayerNorm."""

    def __init__(self, d: int):
        super().__init__()
        self.inner, self.outer = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.norm = nn.LayerNorm(d, eps=LN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.outer(torch.relu(self.inner(x))))


class BehaviorTransformer(nn.Module):
    """One behavior's one-block encoder and one-block decoder (no decoder self-attention)."""

    def __init__(self, d: int, heads: int, max_len: int, rate: float):
        super().__init__()
        self.pos = xavier(max_len, d)
        self.enc_attn, self.enc_ffn = Attention(d, heads, rate), FeedForward(d)
        self.dec_attn, self.dec_ffn = Attention(d, heads, rate), FeedForward(d)
        self.scale, self.rate = math.sqrt(d), rate

    def memory(self, seq_emb: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder over ``U × L × d`` sequence embeddings, then the decoder's keys and values."""
        length = seq_emb.shape[1]
        if length > self.pos.shape[0]:
            raise ValueError(f"sequence of length {length} exceeds the {self.pos.shape[0]} learned positions")
        x = drop(seq_emb * self.scale + self.pos[:length], self.rate, self.training)
        x = self.enc_ffn(self.enc_attn(x, *self.enc_attn.project(x), pad))
        return self.dec_attn.project(x)

    def decode(self, target_emb: Tensor, k: Tensor, v: Tensor, pad: Tensor) -> Tensor:
        """``R × d`` target embeddings against their users' keys/values (``R × L × d``) → ``R × d``."""
        q = drop(target_emb * self.scale, self.rate, self.training).unsqueeze(1)
        return self.dec_ffn(self.dec_attn(q, k, v, pad)).squeeze(1)


class DMT(Ranker):
    def __init__(self, params: DMTParams, meta: RankMeta):
        super().__init__(meta, params.task_weights)
        n_tasks, d = len(meta.tasks), params.dim
        pw = params.pos_weights if params.pos_weights is not None else (1.0,) * n_tasks
        if len(pw) != n_tasks:
            raise BadValue(f"pos_weights has {len(pw)} values for {n_tasks} tasks {meta.tasks}")
        self.register_buffer("pos_weights", torch.tensor(pw, dtype=torch.float32), persistent=False)
        self.params = params
        self.features = FeatureEncoder(meta, d)
        self.transformers = nn.ModuleList(BehaviorTransformer(d, params.heads, length, params.dropout)
                                          for length in meta.seq_lengths)
        self.head = MMoEHead(self.features.in_dim + d * len(meta.seq_behaviors), n_tasks, params.n_experts,
                             params.expert, params.tower, params.mlp_dropout)
        self.position = xavier(meta.n_positions, params.bias_dim)
        self.bias = MLPTower(params.bias_dim, params.bias_hidden, params.bias_dropout, out=1)

    def sequence_features(self, batch: RankBatch) -> Tensor:
        """Decoder outputs of every sequence behavior, per row: ``R × (n_seq · dim)``."""
        target = self.features.item_emb(batch.items)
        ru = batch.row_user
        outs = []
        for b, tr in enumerate(self.transformers):
            emb, pad = self.features.seq_emb(b, batch)
            k, v = tr.memory(emb, pad)
            out = tr.decode(target, k.index_select(0, ru), v.index_select(0, ru), pad.index_select(0, ru))
            has = (batch.seq_lens[b] > 0).index_select(0, ru).unsqueeze(1)
            outs.append(torch.where(has, out, torch.zeros_like(out)))
        return torch.cat(outs, dim=1)

    def logits(self, batch: RankBatch) -> Tensor:
        return self.head(torch.cat([self.features.flat(batch), self.sequence_features(batch)], dim=1))

    def bias_logit(self, batch: RankBatch) -> Tensor:
        """``R × 1`` position-bias logit (training only)."""
        return self.bias(self.position[batch.position])

    def loss(self, batch: RankBatch) -> tuple[Tensor, dict[str, float]]:
        assert batch.labels is not None
        z = self.logits(batch)
        y = batch.labels.to(z.dtype)
        biased = F.binary_cross_entropy_with_logits(z + self.bias_logit(batch), y, pos_weight=self.pos_weights,
                                                    reduction="none").mean(0)
        unbiased = F.binary_cross_entropy_with_logits(z, y, pos_weight=self.pos_weights, reduction="none").mean(0)
        total = ((biased + unbiased) * self.task_weights).sum()
        parts = {f"bce_{t}": float(v) for t, v in zip(self.meta.tasks, unbiased.detach())}
        parts.update({f"bce_biased_{t}": float(v) for t, v in zip(self.meta.tasks, biased.detach())})
        return total, parts

"""The input layer every ranking model shares: id embeddings, pooled behavior sequences and dense
features, computed once per user and gathered per row.

One item table of ``n_items + 1`` rows serves target items and sequences alike (DMT shares its tables
the same way, MODELS.md §5.2); row ``meta.pad`` is the sequences' padding. It starts at zero, gets no
gradient (``padding_idx``) and is masked out of every pooling, so its value never reaches an output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphrec.errors import BadValue
from graphrec.layers import xavier
from graphrec.ranking.base import RankBatch, RankMeta


def valid_mask(lens: Tensor, length: int) -> Tensor:
    """``U × length`` booleans, True at the first ``lens[u]`` positions (the valid entries)."""
    return torch.arange(length, device=lens.device) < lens.unsqueeze(1)


class FeatureEncoder(nn.Module):
    """Embeddings and features of a :class:`RankBatch`.

    ``flat(batch)`` (``R × in_dim``) is concat[user emb, item emb, mean-pooled sequence emb per
    sequence behavior, user dense, item dense]; ``user_tokens(batch)`` (``U × (1 + n_seq) × dim``)
    the user id embedding stacked with the pooled sequences (STAN's user feature matrix).
    """

    def __init__(self, meta: RankMeta, dim: int):
        super().__init__()
        if dim < 1:
            raise BadValue(f"dim must be >= 1; got {dim}")
        if len(meta.seq_lengths) != len(meta.seq_behaviors):
            raise BadValue(f"seq_lengths has {len(meta.seq_lengths)} values for {len(meta.seq_behaviors)} "
                             f"sequence behaviors {meta.seq_behaviors}")
        self.meta, self.dim = meta, dim
        self.n_seq = len(meta.seq_behaviors)
        self.user = xavier(meta.n_users, dim)
        self.item = xavier(meta.n_items + 1, dim)
        with torch.no_grad():
            self.item[meta.pad].zero_()
        self.in_dim = dim * (2 + self.n_seq) + meta.n_user_dense + meta.n_item_dense

    def item_emb(self, items: Tensor) -> Tensor:
        """Embeddings of item ids (any shape; the padding id gives the zero row)."""
        return F.embedding(items, self.item, padding_idx=self.meta.pad)

    def seq_emb(self, b: int, batch: RankBatch) -> tuple[Tensor, Tensor]:
        """Sequence behavior ``b``: its item embeddings ``U × L × dim`` and the key-padding mask
        ``U × L`` (True at padding, PyTorch's convention), from ``batch.seq_lens``."""
        seq = batch.seqs[b]
        return self.item_emb(seq), ~valid_mask(batch.seq_lens[b], seq.shape[1])

    def pooled(self, batch: RankBatch) -> list[Tensor]:
        """Mean over the valid entries of each sequence behavior (``U × dim`` each; empty → zeros)."""
        out = []
        for b in range(self.n_seq):
            emb, pad = self.seq_emb(b, batch)
            keep = (~pad).unsqueeze(-1).to(emb.dtype)
            n = batch.seq_lens[b].clamp(min=1).unsqueeze(-1).to(emb.dtype)
            out.append((emb * keep).sum(1) / n)
        return out

    def user_tokens(self, batch: RankBatch) -> Tensor:
        """``U × (1 + n_seq) × dim``: user id embedding, then one pooled sequence per behavior."""
        return torch.stack([self.user[batch.users], *self.pooled(batch)], dim=1)

    def flat(self, batch: RankBatch, tokens: Tensor | None = None) -> Tensor:
        """``R × in_dim`` model input. ``tokens`` (``user_tokens(batch)``) saves pooling twice when
        the caller needs both."""
        if tokens is None:
            tokens = self.user_tokens(batch)
        per_user = torch.cat([tokens.flatten(1), batch.user_dense.to(tokens.dtype)], dim=1)
        rows = per_user.index_select(0, batch.row_user)
        return torch.cat([rows[:, :self.dim], self.item_emb(batch.items), rows[:, self.dim:],
                          batch.item_dense.to(tokens.dtype)], dim=1)

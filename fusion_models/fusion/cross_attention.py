"""Bidirectional cross-attention fusion: every modality's tokens attend to the tokens of the
other present modalities."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.attention import MaskedAttention
from fusion_models.fusion import FUSIONS

__all__ = ["CrossAttentionFusion"]


class _CrossBlock(nn.Module):
    """Post-norm block: cross-attention + residual + LayerNorm, feed-forward + residual + LayerNorm."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = MaskedAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attention(x, x, allowed)
        x = self.norm1(x + attended)
        return self.norm2(x + self.feed_forward(x)), weights


@FUSIONS.register("cross_attention")
class CrossAttentionFusion(nn.Module):
    """Cross-attention fusion (after Jiang et al., 2021's CAF): each modality guides the
    others' attention, in both directions at once.

    An encoder gives one vector per modality, and attention over a single key is trivially
    1, so each modality's features are first projected to ``tokens`` tokens (a learned
    tokeniser, as in FT-Transformer) plus a learned modality embedding. In every block the
    tokens of modality i attend to the tokens of the *other* present modalities (with two
    modalities: image -> tabular and tabular -> image); missing modalities are masked out as
    keys. A sample with only one present modality attends to its own tokens instead (no
    cross term exists), so no softmax row is ever empty. The output is an MLP on the mean
    of the present modalities' tokens.

    ``last_explanations["attention"]`` is [B, M, M] from the last block (rows = querying
    modality, columns = attended modality; mean over heads and query tokens, sum over key
    tokens): each present modality's row sums to 1 over present modalities, missing columns
    are exactly 0, and a missing modality's row is all zeros.

    Opacus: ``hooks`` and ``functorch`` grad-sample modes work (Linear, LayerNorm and
    Embedding layers only, no ``nn.MultiheadAttention``); ``ew`` (ExpandedWeights) handles every layer here, but Opacus' ``ew`` wrapper reads
    ``x.shape[0]`` of the first forward argument, so it cannot wrap
    :class:`~fusion_models.model.MultimodalModel` (whose input is a dict) without an
    adapter that passes tensors.

    Args:
        modalities: modality names, in the order of the presence mask.
        feature_dim: d, the width of each modality's features.
        out_dim: task output width.
        dim: token width inside the attention blocks.
        tokens: tokens per modality.
        heads: attention heads; must divide ``dim``.
        layers: number of cross-attention blocks.
        hidden: hidden width of the output MLP.
        dropout: dropout in the attention and feed-forward layers and before the output.

    References:
        Jiang C., Chen Y., Chang J., Feng M., Wang R., Yao J. (2021). "Fusion of medical
        imaging and electronic health records with attention and multi-head mechanisms."
        arXiv:2112.11710
        Gorishniy Y., Rubachev I., Khrulkov V., Babenko A. (2021). "Revisiting Deep Learning
        Models for Tabular Data." NeurIPS. arXiv:2106.11959 (feature tokeniser)
    """

    def __init__(
        self,
        modalities: list[str],
        feature_dim: int,
        out_dim: int,
        dim: int = 32,
        tokens: int = 4,
        heads: int = 2,
        layers: int = 1,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if tokens < 1 or layers < 1:
            raise ValueError(f"cross_attention: tokens ({tokens}) and layers ({layers}) must be >= 1")
        self.modalities = list(modalities)
        self.dim = dim
        self.tokens = tokens
        self.tokenise = nn.ModuleDict({m: nn.Linear(feature_dim, tokens * dim) for m in self.modalities})
        self.modality_embedding = nn.Embedding(len(self.modalities), dim)
        self.blocks = nn.ModuleList(_CrossBlock(dim, heads, dropout) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
        self.last_explanations: dict[str, torch.Tensor] = {}

    def _allowed(self, present: torch.Tensor) -> torch.Tensor:
        """Modality-level mask [B, M, M] (query, key): the other present modalities, or the
        query itself when none of the others is present."""
        count = present.shape[1]
        eye = torch.eye(count, dtype=torch.bool, device=present.device)
        keys = present.unsqueeze(1).expand(-1, count, -1)  # [B, M(query), M(key)]
        cross = keys & ~eye
        alone = ~cross.any(dim=2, keepdim=True)  # [B, M, 1]: no other modality to attend to
        return torch.where(alone, keys & eye, cross)

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Map features {modality: [B, d]} and ``present`` bool [B, M] to outputs [B, out_dim]."""
        present = present.bool()
        b, count = present.shape
        t = self.tokens
        index = torch.arange(count, device=present.device).expand(b, count)
        kinds = self.modality_embedding(index)  # [B, M, dim]
        x = torch.stack(
            [self.tokenise[m](features[m]).reshape(b, t, self.dim) for m in self.modalities], dim=1
        )  # [B, M, T, dim]
        # A missing modality's tokens are zeroed before they are read; they are never keys, so
        # whatever its own (unused) query rows compute cannot reach another token.
        x = torch.where(present[:, :, None, None], x, torch.zeros_like(x)) + kinds.unsqueeze(2)
        x = x.reshape(b, count * t, self.dim)  # [B, M * T, dim], modality-major
        modality_mask = self._allowed(present)
        allowed = modality_mask.repeat_interleave(t, dim=1).repeat_interleave(t, dim=2)  # [B, M*T, M*T]
        for block in self.blocks:
            x, weights = block(x, allowed)
        # [B, h, M*T, M*T] -> mean over heads -> [B, M, T, M, T] -> mean over query tokens, sum over key tokens
        per_modality = weights.mean(dim=1).reshape(b, count, t, count, t).mean(dim=2).sum(dim=-1)
        self.last_explanations = {"attention": (per_modality * present.unsqueeze(2).to(x.dtype)).detach()}
        pool = present.repeat_interleave(t, dim=1).to(x.dtype).unsqueeze(-1)  # [B, M*T, 1]
        pooled = (x * pool).sum(dim=1) / pool.sum(dim=1).clamp(min=1.0)  # [B, dim]
        return self.head(pooled)

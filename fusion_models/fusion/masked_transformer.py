"""Masked-attention transformer over modality tokens with a [CLS] token and a learned token
for each missing modality (MARIA-style)."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.attention import MaskedAttention
from fusion_models.fusion import FUSIONS

__all__ = ["MaskedTransformerFusion"]


class _PreNormBlock(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + FF(LN(x))."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = MaskedAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.norm1(x)
        attended, weights = self.attention(normed, normed, allowed)
        x = x + attended
        return x + self.feed_forward(self.norm2(x)), weights


@FUSIONS.register("masked_transformer")
class MaskedTransformerFusion(nn.Module):
    """Transformer over one token per modality plus [CLS], with missing modalities masked
    out of attention (after MARIA, Caruso et al., 2024).

    Each present modality's features are projected to a token; a missing modality's slot
    holds a learned token of its own instead (the encoder's output on zero-filled input
    never enters), and every token gets a learned modality embedding. In every block the
    missing slots are masked out as keys, so nothing attends to them and the prediction
    depends only on what is present. [CLS] attends to the modality tokens only (its own
    state is carried by the residual), so its attention row is a distribution over the
    present modalities. Because a slot that is never attended could not learn, [CLS]
    starts as its own embedding plus the learned tokens of the sample's missing modalities:
    this is how the model knows which inputs were absent (as the presence bits do for
    ``concat``) and the only path by which those tokens are trained. The output is a linear
    layer on the final [CLS] state.

    ``last_explanations["cls_attention"]`` is [B, M]: the last block's [CLS] attention over
    the modality tokens, mean over heads; it sums to 1 over the present modalities and is
    exactly 0 on missing ones.

    Opacus: ``hooks`` and ``functorch`` grad-sample modes work (Linear, LayerNorm and
    Embedding layers only; the [CLS] and missing tokens are ``nn.Embedding`` rows looked up
    per sample so that hooks mode has a per-sample rule for them); ``ew`` (ExpandedWeights) handles every layer here, but Opacus' ``ew`` wrapper reads
    ``x.shape[0]`` of the first forward argument, so it cannot wrap
    :class:`~fusion_models.model.MultimodalModel` (whose input is a dict) without an
    adapter that passes tensors.

    Args:
        modalities: modality names, in the order of the presence mask.
        feature_dim: d, the width of each modality's features.
        out_dim: task output width.
        dim: token width.
        heads: attention heads; must divide ``dim``.
        layers: number of pre-norm transformer blocks.
        dropout: dropout in the attention and feed-forward layers.

    References:
        Caruso C. M., Soda P., Guarrasi V. (2024). "MARIA: a Multimodal Transformer Model for
        Incomplete Healthcare Data." arXiv:2412.14810
        Xiong R. et al. (2020). "On Layer Normalization in the Transformer Architecture."
        ICML. arXiv:2002.04745 (pre-norm blocks)
    """

    def __init__(
        self,
        modalities: list[str],
        feature_dim: int,
        out_dim: int,
        dim: int = 32,
        heads: int = 2,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"masked_transformer: layers ({layers}) must be >= 1")
        self.modalities = list(modalities)
        count = len(self.modalities)
        self.project = nn.ModuleDict({m: nn.Linear(feature_dim, dim) for m in self.modalities})
        self.modality_embedding = nn.Embedding(count, dim)
        self.missing_token = nn.Embedding(count, dim)
        self.cls_token = nn.Embedding(1, dim)
        self.blocks = nn.ModuleList(_PreNormBlock(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)
        self.last_explanations: dict[str, torch.Tensor] = {}

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Map features {modality: [B, d]} and ``present`` bool [B, M] to outputs [B, out_dim]."""
        present = present.bool()
        b, count = present.shape
        index = torch.arange(count, device=present.device).expand(b, count)
        observed = torch.stack([self.project[m](features[m]) for m in self.modalities], dim=1)  # [B, M, dim]
        missing = self.missing_token(index)  # [B, M, dim]
        tokens = torch.where(present.unsqueeze(-1), observed, missing) + self.modality_embedding(index)
        absent = (~present).unsqueeze(-1).to(tokens.dtype)  # [B, M, 1]
        cls = self.cls_token(torch.zeros(b, 1, dtype=torch.long, device=present.device))  # [B, 1, dim]
        cls = cls + (missing * absent).sum(dim=1, keepdim=True)
        x = torch.cat([cls, tokens], dim=1)  # [B, 1 + M, dim]
        # Keys: [CLS] and the present modalities, for every query; [CLS] does not attend to itself.
        keys = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=present.device), present], dim=1)
        allowed = keys.unsqueeze(1).expand(b, count + 1, count + 1).clone()  # [B, 1+M (query), 1+M (key)]
        allowed[:, 0, 0] = False
        for block in self.blocks:
            x, weights = block(x, allowed)
        self.last_explanations = {"cls_attention": weights[:, :, 0, 1:].mean(dim=1).detach()}  # [B, M]
        return self.head(self.norm(x[:, 0]))

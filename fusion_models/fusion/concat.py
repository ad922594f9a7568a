"""Intermediate fusion by concatenation of modality features and the presence mask."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.fusion import FUSIONS

__all__ = ["ConcatFusion"]


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate the features of every modality (zeros where missing) with the presence
    mask, so the head always knows which inputs were absent, then an MLP.

    Args:
        modalities: modality names, in the order of the presence mask.
        feature_dim: d, the width of each modality's features.
        out_dim: task output width.
        hidden: hidden width of the head.
        dropout: dropout before the output layer.
    """

    def __init__(
        self, modalities: list[str], feature_dim: int, out_dim: int, hidden: int = 64, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        width = len(self.modalities) * (feature_dim + 1)
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        parts = []
        for i, modality in enumerate(self.modalities):
            mask = present[:, i : i + 1].to(features[modality].dtype)  # [B, 1]
            parts.append(features[modality] * mask)
            parts.append(mask)
        return self.head(torch.cat(parts, dim=1))  # [B, M * (d + 1)] -> [B, out_dim]

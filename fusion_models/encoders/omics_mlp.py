"""MLP encoder for high-dimensional omics vectors (e.g. gene expression)."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.encoders import ENCODERS

__all__ = ["OmicsMLP"]


@ENCODERS.register("omics_mlp")
class OmicsMLP(nn.Module):
    """MLP with strong input dropout, which regularises wide, small-sample expression data.

    Args:
        in_features: number of omics features (genes).
        out_dim: size d of the output features.
        hidden: hidden width.
        dropout: dropout on the input and after the hidden layer.
    """

    def __init__(self, in_features: int, out_dim: int = 64, hidden: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

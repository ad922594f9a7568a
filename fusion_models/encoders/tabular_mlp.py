"""MLP encoder for encoded tabular/EHR features (standardised numerics, missing indicators,
one-hot categories)."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.encoders import ENCODERS

__all__ = ["TabularMLP"]


@ENCODERS.register("mlp")
class TabularMLP(nn.Module):
    """Two-layer MLP.

    Args:
        in_features: width of the encoded tabular vector.
        out_dim: size d of the output features.
        hidden: hidden width.
        dropout: dropout after the hidden layer.
    """

    def __init__(self, in_features: int, out_dim: int = 64, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

"""1D-convolution encoder for fixed-length multichannel time series, shaped [B, C, T]."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.encoders import ENCODERS

__all__ = ["SeriesConv1d"]


@ENCODERS.register("conv1d")
class SeriesConv1d(nn.Module):
    """Two dilated Conv1d blocks with GroupNorm, then average pooling over time.

    Args:
        in_channels: number of series channels C.
        out_dim: size d of the output features.
        width: convolution channels.
        num_groups: GroupNorm groups (must divide ``width``).
    """

    def __init__(self, in_channels: int, out_dim: int = 64, width: int = 32, num_groups: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, width, kernel_size=5, padding=2),
            nn.GroupNorm(num_groups, width),
            nn.ReLU(),
            nn.Conv1d(width, width, kernel_size=5, padding=4, dilation=2),
            nn.GroupNorm(num_groups, width),
            nn.ReLU(),
        )
        self.project = nn.Linear(width, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x).mean(dim=-1)  # [B, width]
        return self.project(h)

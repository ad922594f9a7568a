"""A small strided CNN on MONAI convolution blocks, for CPU-sized images (2D or 3D)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

from fusion_models.encoders import ENCODERS

__all__ = ["SmallCNN"]


@ENCODERS.register("cnn_small")
class SmallCNN(nn.Module):
    """Strided conv blocks with GroupNorm, global average pooling and a linear projection.

    GroupNorm instead of BatchNorm: BatchNorm mixes samples, which breaks Opacus'
    per-sample gradients and leaks batch statistics. ReLU is not in place, since an in-place
    activation breaks every per-sample-gradient mode.

    Args:
        in_channels: image channels (3 for RGB).
        out_dim: size d of the output features.
        spatial_dims: 2 for images, 3 for volumes.
        channels: output channels of each block; each block halves the resolution.
        num_groups: GroupNorm groups per block (must divide every entry of ``channels``).
        dropout: dropout before the projection.
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int = 64,
        spatial_dims: int = 2,
        channels: Sequence[int] = (16, 32, 64),
        num_groups: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            blocks.append(
                Convolution(
                    spatial_dims,
                    previous,
                    width,
                    strides=2,
                    kernel_size=3,
                    act=("relu", {"inplace": False}),
                    norm=("group", {"num_groups": num_groups}),
                )
            )
            previous = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(previous, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.features(x)).flatten(1)  # [B, channels[-1]]
        return self.project(self.dropout(h))

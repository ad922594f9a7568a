"""MONAI DenseNet-121 image encoder (2D or 3D) with GroupNorm, ready for DP-SGD."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DenseNet121
from torch import nn

from fusion_models.encoders import ENCODERS

__all__ = ["DenseNetEncoder"]


def _norm_widths(init_features: int, growth_rate: int, block_config: Sequence[int], bn_size: int) -> list[int]:
    """Channel counts of every norm layer of a MONAI DenseNet, to check ``num_groups`` early."""
    widths = [init_features, bn_size * growth_rate]
    channels = init_features
    for i, layers in enumerate(block_config):
        # Each dense layer normalises its growing input: channels, channels + k, ...
        widths += [channels + j * growth_rate for j in range(layers)]
        channels += layers * growth_rate
        widths.append(channels)  # the transition's (or the final) norm
        if i < len(block_config) - 1:
            channels //= 2
    return widths


@ENCODERS.register("densenet121")
class DenseNetEncoder(nn.Module):
    """MONAI DenseNet-121 whose classification layer is the projection to ``out_dim``.

    Randomly initialised (no weight download). Norm layers are GroupNorm and the ReLU is out
    of place: MONAI's default in-place ReLU breaks every per-sample-gradient mode, and
    BatchNorm mixes samples. ``init_features``, ``growth_rate`` and ``block_config`` default
    to DenseNet-121; smaller values give a tiny network for CPU tests.

    Opacus grad-sample modes (opacus 1.6, measured on tiny 2D and 3D variants): ``hooks`` and
    ``functorch`` work; ``ew`` (expanded weights) fails inside the network ("view size is not
    compatible with input tensor's size and stride").

    Args:
        in_channels: image channels (3 for RGB, 1 for CT/MRI).
        out_dim: size d of the output features.
        spatial_dims: 2 for images, 3 for volumes.
        num_groups: GroupNorm groups; must divide every norm layer's channel count.
        init_features: channels of the stem convolution.
        growth_rate: channels each dense layer adds (k in the paper).
        block_config: dense layers per block ((6, 12, 24, 16) is DenseNet-121).
        bn_size: bottleneck width multiplier (bn_size * k channels in the 1x1 convolution).
        dropout: dropout after each dense layer.

    References:
        Huang, Liu, van der Maaten, Weinberger. Densely Connected Convolutional Networks.
        CVPR 2017. https://arxiv.org/abs/1608.06993
        Wu, He. Group Normalization. ECCV 2018. https://arxiv.org/abs/1803.08494
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int = 64,
        spatial_dims: int = 2,
        num_groups: int = 8,
        init_features: int = 64,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        bn_size: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"densenet121 spatial_dims must be 2 or 3, got {spatial_dims}")
        widths = _norm_widths(init_features, growth_rate, tuple(block_config), bn_size)
        bad = sorted({w for w in widths if w % num_groups})
        if bad:
            raise ValueError(
                f"densenet121 num_groups={num_groups} does not divide the channel counts {bad} "
                f"(init_features={init_features}, growth_rate={growth_rate}, bn_size={bn_size}); "
                "choose num_groups dividing init_features and growth_rate"
            )
        self.net = DenseNet121(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_dim,
            init_features=init_features,
            growth_rate=growth_rate,
            block_config=tuple(block_config),
            bn_size=bn_size,
            dropout_prob=dropout,
            act=("relu", {"inplace": False}),
            norm=("group", {"num_groups": num_groups}),
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, out_dim]

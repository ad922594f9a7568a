"""MONAI ResNet-10/18/34 image encoder (2D or 3D) with GroupNorm, ready for DP-SGD."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets.resnet import ResNet, ResNetBlock, get_inplanes
from torch import nn

from fusion_models.encoders import ENCODERS

__all__ = ["ResNetEncoder"]

# depth -> residual blocks per stage (basic blocks, as in He et al. 2016 and MONAI's resnetN).
_LAYERS = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


class _ResidualBlock(ResNetBlock):
    """MONAI's basic residual block with a non-in-place ReLU and residual addition.

    MONAI's block adds the shortcut in place (``out += residual``) on the norm layer's
    output, which Opacus' backward hooks refuse ("Output 0 of BackwardHookFunction is a view
    and is being modified inplace"), and ``ResNet`` never passes ``act`` to its blocks, so
    they get an in-place ReLU.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["act"] = ("relu", {"inplace": False})
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.act(out + residual)


class _GroupNormResNet(ResNet):
    """MONAI's ResNet whose residual stages honour ``norm``.

    MONAI 1.6 passes ``norm`` only to the stem: ``ResNet._make_layer`` is called without it,
    so the stages would get BatchNorm. This subclass passes ``stage_norm`` as the stages are
    built, so no BatchNorm is ever created.

    Args:
        stage_norm: the norm layer (name, kwargs) of every residual stage.
        kwargs: arguments of :class:`monai.networks.nets.ResNet`.
    """

    def __init__(self, *, stage_norm: tuple[str, dict[str, Any]], **kwargs: Any) -> None:
        # Set before ResNet.__init__, which calls _make_layer; a plain attribute is allowed
        # on an nn.Module before Module.__init__ runs.
        self._stage_norm = stage_norm
        super().__init__(**kwargs)

    def _make_layer(  # type: ignore[override]
        self,
        block: type[ResNetBlock],
        planes: int,
        blocks: int,
        spatial_dims: int,
        shortcut_type: str,
        stride: int = 1,
        norm: str | tuple = "batch",
    ) -> nn.Sequential:
        return super()._make_layer(block, planes, blocks, spatial_dims, shortcut_type, stride, norm=self._stage_norm)


@ENCODERS.register("resnet")
class ResNetEncoder(nn.Module):
    """MONAI ResNet backbone (basic blocks), global average pooling and a linear projection.

    Randomly initialised (no weight download). Every norm layer is GroupNorm and every ReLU
    is out of place, so Opacus' ``ModuleValidator`` accepts it as built. Residual shortcuts
    are 1x1 convolutions (MONAI type "B"): type "A" pads with ``.data`` and would cut the
    gradient.

    Opacus grad-sample modes (opacus 1.6, measured on tiny 2D and 3D variants): ``hooks``,
    ``functorch`` and ``ew`` (expanded weights) all work on the encoder alone. They need the
    out-of-place residual addition of ``_ResidualBlock``: MONAI's in-place ``out +=
    residual`` fails every mode.

    Args:
        in_channels: image channels (3 for RGB, 1 for CT/MRI).
        out_dim: size d of the output features.
        spatial_dims: 2 for images, 3 for volumes.
        depth: 10, 18 or 34 layers.
        num_groups: GroupNorm groups; must divide every stage width
            (``[64, 128, 256, 512] * widen_factor``).
        widen_factor: multiplies every stage width (0.125 gives a tiny CPU network).
        conv1_stride: stride of the 7x7 stem convolution (2 as in the paper; 1 keeps more
            resolution on very small images at 4x the cost).
        no_max_pool: skip the stem's max pooling.
        dropout: dropout before the projection.

    References:
        He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016.
        https://arxiv.org/abs/1512.03385
        Hara, Kataoka, Satoh. Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and
        ImageNet? CVPR 2018. https://arxiv.org/abs/1711.09577
        Wu, He. Group Normalization. ECCV 2018. https://arxiv.org/abs/1803.08494
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int = 64,
        spatial_dims: int = 2,
        depth: int = 18,
        num_groups: int = 8,
        widen_factor: float = 1.0,
        conv1_stride: int = 2,
        no_max_pool: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth not in _LAYERS:
            raise ValueError(f"resnet depth {depth} is not supported; choose one of {sorted(_LAYERS)}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"resnet spatial_dims must be 2 or 3, got {spatial_dims}")
        widths = [int(w * widen_factor) for w in get_inplanes()]
        bad = [w for w in widths if w < 1 or w % num_groups]
        if bad:
            raise ValueError(
                f"resnet num_groups={num_groups} must divide every stage width {widths} "
                f"(widen_factor={widen_factor}); change num_groups or widen_factor"
            )
        norm = ("group", {"num_groups": num_groups})
        self.backbone = _GroupNormResNet(
            block=_ResidualBlock,
            layers=_LAYERS[depth],
            block_inplanes=get_inplanes(),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_stride=conv1_stride,
            no_max_pool=no_max_pool,
            shortcut_type="B",
            widen_factor=widen_factor,
            feed_forward=False,
            act=("relu", {"inplace": False}),
            norm=norm,
            stage_norm=norm,
        )
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(widths[-1], out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone(x)  # [B, widths[-1]] after global average pooling
        return self.project(self.dropout(h))

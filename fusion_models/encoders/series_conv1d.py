"""Dilated 1D-convolution encoder for irregularly sampled series with observation masks.

Input layout (``client/data.py::read_file_array``): ``[B, 2C + 1, T]`` = C value channels
(0 where not measured), C observation masks (1 = measured) and one time channel (hours / 48;
0 on padded steps). A step is *observed* when any of its C masks is set; padded steps and a
missing series (all zeros) are never pooled.

References:
    Bai S., Kolter J. Z., Koltun V. An empirical evaluation of generic convolutional and
    recurrent networks for sequence modeling. arXiv:1803.01271 (2018).
    Che Z. et al. Recurrent neural networks for multivariate time series with missing values.
    Scientific Reports 8, 6085 (2018) (values + masks + time as inputs).
"""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.encoders import ENCODERS

__all__ = ["SeriesConv1d", "series_channels", "split_series", "symlog"]


def series_channels(in_channels: int) -> int:
    """Variables C of a ``[2C + 1, T]`` series input; raises if ``in_channels`` is not 2C + 1."""
    if in_channels < 3 or in_channels % 2 != 1:
        raise ValueError(
            f"a series input has 2C + 1 channels (C values, C observation masks, 1 time channel), "
            f"got in_channels={in_channels}; read series files with client.data.read_file_array"
        )
    return (in_channels - 1) // 2


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(1 + |x|): raw bedside values (mmHg, mL, %) to a scale of a few units,
    with no statistics to share between sites."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def split_series(x: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ``[B, 2C + 1, T]`` into (values [B, C, T] symlog-scaled and zero where unobserved,
    masks [B, C, T] in {0, 1}, time [B, 1, T], observed step [B, T] in {0, 1})."""
    if x.dim() != 3 or x.shape[1] != 2 * channels + 1:
        raise ValueError(f"expected a series batch [B, {2 * channels + 1}, T], got {list(x.shape)}")
    masks = (x[:, channels : 2 * channels] > 0.5).to(x.dtype)
    values = symlog(x[:, :channels]) * masks
    time = x[:, 2 * channels :]
    observed = masks.amax(dim=1)
    return values, masks, time, observed


class _Block(nn.Module):
    """Conv1d -> GroupNorm -> ReLU with a residual connection (same length: 'same' padding)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, num_groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            channels, channels, kernel_size, padding=dilation * (kernel_size - 1) // 2, dilation=dilation
        )
        self.norm = nn.GroupNorm(num_groups, channels)
        self.act = nn.ReLU(inplace=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.act(self.norm(self.conv(h)))


@ENCODERS.register("conv1d")
class SeriesConv1d(nn.Module):
    """Dilated residual Conv1d blocks over the observation steps, masked mean pooling.

    The convolution runs over the observation rows (irregular in time; the time channel
    tells it how far apart they are). The features of the observed steps are averaged;
    padded steps get weight 0, and a series with no observed step pools to zeros.

    ``last_explanations = {"step_weight": [B, T]}``: the pooling weight of each step (sums
    to 1 over the observed steps, 0 elsewhere; all 0 when nothing is observed).

    Opacus: ``hooks``, ``functorch`` and ``ew`` grad-sample modes all work (tested).

    Args:
        in_channels: 2C + 1 (values, masks, time), from ``server/model_setup.py::_inputs``.
        out_dim: size d of the output features.
        width: convolution channels.
        num_groups: GroupNorm groups (must divide ``width``).
        blocks: residual blocks; block i has dilation 2**i.
        kernel_size: odd convolution kernel size.
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int = 64,
        width: int = 32,
        num_groups: int = 4,
        blocks: int = 3,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        self.channels = series_channels(in_channels)
        if width % num_groups != 0:
            raise ValueError(f"width {width} must be a multiple of num_groups {num_groups}")
        if kernel_size % 2 != 1 or blocks < 1:
            raise ValueError(f"kernel_size must be odd and blocks >= 1, got {kernel_size} and {blocks}")
        self.stem = nn.Conv1d(in_channels, width, kernel_size=1)
        self.blocks = nn.Sequential(*[_Block(width, kernel_size, 2**i, num_groups) for i in range(blocks)])
        self.project = nn.Linear(width, out_dim)
        self.out_dim = out_dim
        self.last_explanations: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, masks, time, observed = split_series(x, self.channels)
        # Zero every input of a padded step so a missing series (zeros, present=False) and
        # padding look alike whatever the tensor held.
        inputs = torch.cat([values, masks, time * observed.unsqueeze(1)], dim=1)  # [B, 2C+1, T]
        h = self.blocks(self.stem(inputs))  # [B, width, T]
        weight = observed / observed.sum(dim=1, keepdim=True).clamp_min(1.0)  # [B, T]
        pooled = torch.einsum("bwt,bt->bw", h, weight)
        self.last_explanations = {"step_weight": weight.detach()}
        return self.project(pooled)

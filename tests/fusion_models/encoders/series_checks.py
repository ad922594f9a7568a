"""Shared inputs for the series-encoder tests: masked irregular series [B, 2C+1, T]."""

import torch

from fusion_models.encoders import ENCODERS

C, T = 3, 16


def series_batch(b: int = 4, *, observed: list[int] | None = None, seed: int = 0) -> torch.Tensor:
    """[b, 2C+1, T] with raw-scale values, random masks, increasing times; row i has
    ``observed[i]`` steps, then padding (all zero)."""
    g = torch.Generator().manual_seed(seed)
    observed = observed if observed is not None else [T] * b
    b = len(observed)
    x = torch.zeros(b, 2 * C + 1, T)
    for i, n in enumerate(observed):
        masks = (torch.rand(C, n, generator=g) < 0.6).float()
        masks[0] = 1.0  # every kept row has at least one measurement
        x[i, :C, :n] = (torch.randn(C, n, generator=g) * 20 + 90) * masks
        x[i, C : 2 * C, :n] = masks
        x[i, 2 * C, :n] = torch.sort(torch.rand(n, generator=g)).values
    return x


SMALL = {"conv1d": {"width": 8, "num_groups": 2}, "gru": {"hidden": 8}}


def make_encoder(name: str, **kwargs):
    """A small seeded encoder of the registered name (kwargs override the small sizes)."""
    torch.manual_seed(0)
    return ENCODERS.get(name)(in_channels=2 * C + 1, out_dim=8, **{**SMALL[name], **kwargs})

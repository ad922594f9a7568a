"""Early fusion by feature-wise linear modulation (FiLM): the small CNN of
:mod:`fusion_models.encoders.image_cnn`, conditioned on the tabular record."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fusion_models.encoders import ENCODERS
from fusion_models.encoders.image_cnn import SmallCNN

__all__ = ["FiLMCNN", "condition_mask"]


def condition_mask(
    condition: torch.Tensor | None,
    condition_present: torch.Tensor | None,
    *,
    batch: int,
    features: int,
    like: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The conditioning input and a float mask [B] of the samples that have one.

    ``MultimodalModel`` passes only ``batch[conditioned_on]``. A missing modality's rows are
    zeros (the batch contract), so without an explicit ``condition_present`` an all-zero row
    is read as "no condition": the network then runs unconditioned for that sample instead
    of treating the zeros as a measured record.

    Args:
        condition: [B, F] conditioning input, or None (no sample has one).
        condition_present: bool [B] presence of the condition, or None to infer it.
        batch: B, the batch size of the conditioned input.
        features: F, the width the encoder was built for.
        like: a tensor whose device and dtype the results take.

    Returns:
        ``(condition [B, F], mask [B])``; the condition is zeros where it is missing.
    """
    if condition is None:
        zeros = like.new_zeros(batch, features)
        return zeros, like.new_zeros(batch)
    if condition.ndim != 2 or condition.shape != (batch, features):
        raise ValueError(
            f"conditioning input must have shape [B={batch}, F={features}] (the encoder's "
            f"condition_features); got {tuple(condition.shape)}"
        )
    if condition_present is None:
        present = condition.ne(0).any(dim=1)
    else:
        if condition_present.shape != (batch,):
            raise ValueError(f"condition_present must have shape [{batch}]; got {tuple(condition_present.shape)}")
        present = condition_present.bool()
    mask = present.to(like.dtype)
    condition = condition.to(like.dtype) * mask[:, None]  # never read a missing row's values
    return condition, mask


@ENCODERS.register("cnn_film")
class FiLMCNN(SmallCNN):
    """The small CNN whose first block's output is modulated per channel by the tabular input.

    A generator MLP maps the tabular vector ``t`` to ``(dgamma, beta)`` and the first block's
    activations become ``(1 + dgamma(t)) * h + beta(t)`` per channel, so the image features
    depend on the clinical record from the first layer on (early fusion). Writing gamma as
    ``1 + dgamma`` keeps a sample without a record (or a zero generator) at the identity,
    i.e. the plain CNN. With ``as_channels`` the tabular vector, broadcast over the image, is
    instead appended as extra input channels (plus one channel saying whether it is present),
    the simplest early fusion the survey describes.

    The modulation sits after the first block's GroupNorm and ReLU, since the block is reused
    as it is; the FiLM paper modulates before the activation, which here would mean splitting
    MONAI's block.

    Opacus: passes ``ModuleValidator``; per-sample gradients work in ``hooks``,
    ``functorch`` and ``ew`` modes (tested). The generator is plain ``nn.Linear``.

    ``last_explanations`` (FiLM mode): ``film_gamma`` and ``film_beta``, each [B, C1], the
    per-sample channel scales and shifts (1 and 0 where the condition is missing).

    Args:
        in_channels: image channels (3 for RGB).
        out_dim: size d of the output features.
        spatial_dims: 2 for images, 3 for volumes.
        channels: output channels of each block; each block halves the resolution.
        num_groups: GroupNorm groups per block (must divide every entry of ``channels``).
        dropout: dropout before the projection.
        condition_features: F, the width of the tabular vector (set by ``server/model_setup``).
        conditioned_on: the modality whose raw input conditions the image network.
        film_hidden: hidden width of the generator MLP.
        as_channels: append the tabular vector as constant input channels instead of FiLM.

    References:
        Perez, Strub, de Vries, Dumoulin, Courville. "FiLM: Visual Reasoning with a General
        Conditioning Layer." AAAI 2018. https://arxiv.org/abs/1709.07871

        Early fusion of imaging and EHR data, in: /work/shared/seeds/survey-imaging-ehr-fusion.md
        (section 1.2).
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int = 64,
        spatial_dims: int = 2,
        channels: Sequence[int] = (16, 32, 64),
        num_groups: int = 8,
        dropout: float = 0.0,
        *,
        condition_features: int,
        conditioned_on: str = "tabular",
        film_hidden: int = 32,
        as_channels: bool = False,
    ) -> None:
        if condition_features < 1:
            raise ValueError(f"cnn_film needs condition_features >= 1, got {condition_features}")
        if not channels:
            raise ValueError("cnn_film needs at least one conv block in channels")
        # As channels: the tabular vector plus one presence channel join the image channels.
        extra = condition_features + 1 if as_channels else 0
        super().__init__(in_channels + extra, out_dim, spatial_dims, channels, num_groups, dropout)
        self.conditioned_on = conditioned_on
        self.condition_features = condition_features
        self.as_channels = as_channels
        self.spatial_dims = spatial_dims
        self.film: nn.Module | None = None
        if not as_channels:
            self.film = nn.Sequential(
                nn.Linear(condition_features, film_hidden), nn.ReLU(), nn.Linear(film_hidden, 2 * channels[0])
            )
        self.last_explanations: dict[str, torch.Tensor] = {}

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor | None = None, condition_present: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Map images [B, C, *spatial] and their tabular records [B, F] to features [B, d].

        Args:
            x: images [B, C, H, W] (or [B, C, D, H, W]).
            condition: tabular records [B, F]; None runs the plain CNN.
            condition_present: bool [B], which samples have a record; inferred from all-zero
                rows when None (see :func:`condition_mask`).
        """
        b = x.shape[0]
        condition, mask = condition_mask(
            condition, condition_present, batch=b, features=self.condition_features, like=x
        )
        spatial = (1,) * self.spatial_dims
        if self.as_channels:
            extra = torch.cat([condition, mask[:, None]], dim=1)  # [B, F + 1]
            extra = extra.view(b, -1, *spatial).expand(b, extra.shape[1], *x.shape[2:])
            h = self.features(torch.cat([x, extra], dim=1))
            self.last_explanations = {}
        else:
            blocks = list(self.features)
            h = blocks[0](x)  # [B, C1, *spatial / 2]
            # Zero generator output for a sample without a record: identity modulation.
            dgamma, beta = (self.film(condition) * mask[:, None]).chunk(2, dim=1)  # [B, C1] each
            gamma = 1 + dgamma
            h = h * gamma.view(b, -1, *spatial) + beta.view(b, -1, *spatial)
            for block in blocks[1:]:
                h = block(h)
            self.last_explanations = {"film_gamma": gamma.detach(), "film_beta": beta.detach()}
        h = self.pool(h).flatten(1)  # [B, channels[-1]]
        return self.project(self.dropout(h))

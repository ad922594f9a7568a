"""HyperFusion: a hypernetwork on the tabular record generates per-sample weights of chosen
layers of the small CNN of :mod:`fusion_models.encoders.image_cnn`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.encoders import ENCODERS
from fusion_models.encoders.image_cnn import SmallCNN
from fusion_models.encoders.image_film import condition_mask

__all__ = ["HYPER_LAYERS", "HyperCNN"]

#: Layers whose weights the hypernetwork can generate: the final linear projection and the
#: convolution of the last conv block.
HYPER_LAYERS = ("project", "last_conv")


class _WeightGenerator(nn.Module):
    """Per-sample weight (and bias) offsets of one target layer from the hypernetwork embedding.

    The generators have no bias: the constant part of the generated weights is the target
    layer's own (base) weights, so every parameter lives in an ``nn.Linear``/``nn.Conv``
    that Opacus' hooks support, and a zero embedding (no tabular record) gives exactly the
    base layer.

    Args:
        embed: width of the hypernetwork embedding.
        out_features: output units (channels) of the target layer.
        in_flat: inputs per output unit (``in_channels * prod(kernel)`` for a convolution).
        rank: None generates the full matrix (as the paper does); an int r generates
            rank-r factors ``U [out, r] @ V [r, in_flat]`` instead (fewer parameters).
        bias: also generate a bias offset.
        scale: initial standard deviation of the generated weight entries.
    """

    def __init__(
        self, embed: int, out_features: int, in_flat: int, *, rank: int | None, bias: bool, scale: float
    ) -> None:
        super().__init__()
        if rank is not None and rank < 1:
            raise ValueError(f"hyper rank must be >= 1 or null (full weights), got {rank}")
        self.out_features, self.in_flat, self.rank = out_features, in_flat, rank
        size = out_features * in_flat if rank is None else rank * (out_features + in_flat)
        self.weight = nn.Linear(embed, size, bias=False)
        self.bias = nn.Linear(embed, out_features, bias=False) if bias else None
        # A rank-r product of two factors with entries of std s has entries of std ~ sqrt(r) s^2.
        entry = scale if rank is None else math.sqrt(scale / math.sqrt(rank))
        nn.init.normal_(self.weight.weight, std=entry / math.sqrt(embed))
        if self.bias is not None:
            nn.init.normal_(self.bias.weight, std=scale / math.sqrt(embed))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embedding [B, E] -> (weight offsets [B, out, in_flat], bias offsets [B, out] or None)."""
        b = z.shape[0]
        flat = self.weight(z)
        if self.rank is None:
            delta = flat.view(b, self.out_features, self.in_flat)
        else:
            u, v = flat.split([self.out_features * self.rank, self.in_flat * self.rank], dim=1)
            # (B, out, r) @ (B, r, in_flat) -> (B, out, in_flat)
            delta = torch.bmm(u.view(b, self.out_features, self.rank), v.view(b, self.rank, self.in_flat))
        return delta, (self.bias(z) if self.bias is not None else None)


def _per_sample_conv(h: torch.Tensor, weight: torch.Tensor, conv: nn.Module, spatial_dims: int) -> torch.Tensor:
    """Convolve each sample with its own kernel: one grouped convolution over the batch.

    Args:
        h: inputs [B, C_in, *S].
        weight: per-sample kernels [B, C_out, C_in, *k].
        conv: the base convolution whose stride, padding and dilation are used.
        spatial_dims: 2 or 3.
    """
    b, c_in = h.shape[:2]
    conv_fn = F.conv2d if spatial_dims == 2 else F.conv3d
    # (1, B * C_in, *S) with B groups: group i sees only sample i's channels and kernels.
    out = conv_fn(
        h.reshape(1, b * c_in, *h.shape[2:]),
        weight.reshape(b * weight.shape[1], *weight.shape[2:]),
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=b,
    )
    return out.view(b, weight.shape[1], *out.shape[2:])  # (B, C_out, *S')


@ENCODERS.register("cnn_hyper")
class HyperCNN(SmallCNN):
    """The small CNN with tabular-conditioned weights in chosen layers (HyperFusion).

    A hypernetwork (an MLP on the tabular vector ``t``) outputs, for each chosen layer, the
    per-sample offset ``dW(t)`` of its weights (and bias); the layer then applies
    ``W + dW(t)``. The base weights ``W`` play the role the paper gives to the hypernetwork's
    output bias (initialised from a trained image network): the generated weights are
    "base + hypernetwork(t)". Since the layers are linear in their weights, the layer computes
    ``layer_W(h) + layer_dW(t)(h)``: the base layer stays an ``nn.Linear``/``nn.Conv`` and
    the per-sample part is a batched ``einsum`` (projection) or one grouped convolution (last
    conv block) with no parameters of its own, so all parameters sit in layers Opacus'
    hooks support. The offsets start small (``init_scale`` times the base weights' scale), so
    training starts near the image-only network, and are zero for a sample without a record.

    ``hyper_layers`` chooses the layers: ``project`` (the final linear projection, as in the
    paper's brain-age model) and/or ``last_conv`` (the convolution of the last block, as in
    its Alzheimer's model, which conditions a conv layer of the last residual block).

    Opacus: passes ``ModuleValidator``; per-sample gradients work in ``hooks``, ``functorch``
    and ``ew`` modes (tested).

    ``last_explanations``: ``hyper_weight_norm.<layer>`` [B], the Frobenius norm of the
    sample's generated weight offset ``dW(t)`` (0 where the record is missing).

    Args:
        in_channels: image channels (3 for RGB).
        out_dim: size d of the output features.
        spatial_dims: 2 for images, 3 for volumes.
        channels: output channels of each block; each block halves the resolution.
        num_groups: GroupNorm groups per block (must divide every entry of ``channels``).
        dropout: dropout before the projection.
        condition_features: F, the width of the tabular vector (set by ``server/model_setup``).
        conditioned_on: the modality whose raw input drives the hypernetwork.
        hyper_layers: layers whose weights are generated, from :data:`HYPER_LAYERS`.
        hyper_hidden: width of the hypernetwork's embedding of the tabular vector.
        rank: None for full generated matrices (the paper); an int for rank-r offsets.
        generate_bias: also generate the layers' bias offsets.
        init_scale: initial size of the offsets relative to the base weights' std.

    References:
        Duenias, Nichyporuk, Arbel, Riklin Raviv. "HyperFusion: A Hypernetwork Approach to
        Multimodal Integration of Tabular and Medical Imaging Data for Predictive Modeling."
        arXiv:2403.13319, 2024. https://arxiv.org/abs/2403.13319

        Ha, Dai, Le. "HyperNetworks." ICLR 2017. https://arxiv.org/abs/1609.09106
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
        hyper_layers: Sequence[str] = ("project",),
        hyper_hidden: int = 16,
        rank: int | None = None,
        generate_bias: bool = True,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__(in_channels, out_dim, spatial_dims, channels, num_groups, dropout)
        if condition_features < 1:
            raise ValueError(f"cnn_hyper needs condition_features >= 1, got {condition_features}")
        layers = list(hyper_layers)
        unknown = [name for name in layers if name not in HYPER_LAYERS]
        if not layers or unknown or len(set(layers)) != len(layers):
            raise ValueError(
                f"cnn_hyper: hyper_layers must be a non-empty list without repeats of {list(HYPER_LAYERS)}; "
                f"got {layers}"
            )
        self.conditioned_on = conditioned_on
        self.condition_features = condition_features
        self.spatial_dims = spatial_dims
        self.hyper_layers = layers
        self.hypernet = nn.Sequential(nn.Linear(condition_features, hyper_hidden), nn.ReLU())
        self.generators = nn.ModuleDict()
        for name in layers:
            target = self._target(name)
            in_flat = target.weight[0].numel()  # C_in * prod(kernel) for a conv, C_in for a linear
            scale = init_scale * float(target.weight.detach().std())
            self.generators[name] = _WeightGenerator(
                hyper_hidden, target.weight.shape[0], in_flat, rank=rank, bias=generate_bias, scale=scale
            )
        self.last_explanations: dict[str, torch.Tensor] = {}

    def _target(self, name: str) -> nn.Module:
        if name == "project":
            return self.project
        conv = getattr(self.features[-1], "conv", None)
        if not isinstance(conv, (nn.Conv2d, nn.Conv3d)) or not hasattr(self.features[-1], "adn"):
            raise TypeError("cnn_hyper: the last block is not a MONAI Convolution with conv and adn parts")
        return conv

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor | None = None, condition_present: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Map images [B, C, *spatial] and their tabular records [B, F] to features [B, d].

        Args:
            x: images [B, C, H, W] (or [B, C, D, H, W]).
            condition: tabular records [B, F]; None runs the base network.
            condition_present: bool [B], which samples have a record; inferred from all-zero
                rows when None (see :func:`fusion_models.encoders.image_film.condition_mask`).
        """
        b = x.shape[0]
        condition, mask = condition_mask(
            condition, condition_present, batch=b, features=self.condition_features, like=x
        )
        z = self.hypernet(condition) * mask[:, None]  # [B, E]; zero -> offsets exactly zero
        offsets = {name: gen(z) for name, gen in self.generators.items()}
        # Absolute norms: Opacus' ew mode cannot read the base weights outside their layer.
        explanations = {f"hyper_weight_norm.{n}": d.detach().flatten(1).norm(dim=1) for n, (d, _) in offsets.items()}

        blocks = list(self.features)
        h = x
        for block in blocks[:-1]:
            h = block(h)
        last = blocks[-1]
        if "last_conv" in offsets:
            delta, bias = offsets["last_conv"]
            kernels = delta.view(b, *last.conv.weight.shape)  # [B, C_out, C_in, *k]
            y = last.conv(h) + _per_sample_conv(h, kernels, last.conv, self.spatial_dims)
            if bias is not None:
                y = y + bias.view(b, -1, *(1,) * self.spatial_dims)
            h = last.adn(y)
        else:
            h = last(h)
        h = self.dropout(self.pool(h).flatten(1))  # [B, channels[-1]]
        out = self.project(h)
        if "project" in offsets:
            delta, bias = offsets["project"]
            out = out + torch.einsum("bi,boi->bo", h, delta)  # per-sample W(t) h
            if bias is not None:
                out = out + bias
        self.last_explanations = explanations
        return out

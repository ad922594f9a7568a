"""MultimodalModel: one encoder per modality and one fusion head, with modality dropout and a
per-sample presence mask."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from fusion_models.encoders import ENCODERS
from fusion_models.fusion import FUSIONS
from fusion_models.module_keys import module_of

__all__ = ["ModelSpec", "MultimodalModel", "build_model", "module_groups"]

_SPEC_VERSION = 1


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model identically at the server and at every site.

    Args:
        modalities: modality -> input facts, in presence-mask order (``{"image": {"in_channels": 3,
            "spatial_dims": 2}, "tabular": {"in_features": 40}}``).
        encoders: modality -> {"name": registered encoder, "frozen": [submodule, ...], **kwargs};
            ``frozen`` names submodules of the encoder that keep their initial weights (e.g.
            ``["features"]``: random convolutional features, only the projection trains).
        fusion: {"name": registered fusion head, **kwargs}.
        feature_dim: width d of every encoder's output.
        out_dim: task output width.
        modality_dropout: probability of hiding a present modality of a training sample
            (never all of them).
    """

    modalities: dict[str, dict[str, Any]]
    encoders: dict[str, dict[str, Any]]
    fusion: dict[str, Any]
    feature_dim: int
    out_dim: int
    modality_dropout: float = 0.0
    spec_version: int = field(default=_SPEC_VERSION)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        missing = [k for k in ("modalities", "encoders", "fusion", "feature_dim", "out_dim") if k not in data]
        if missing:
            raise ValueError(f"model spec is missing keys {missing}")
        if data.get("spec_version", _SPEC_VERSION) != _SPEC_VERSION:
            raise ValueError(f"model spec version {data['spec_version']} is not {_SPEC_VERSION}")
        return cls(**data)


class MultimodalModel(nn.Module):
    """Encoders by modality plus one fusion head.

    Parameters are grouped by module (``encoders.<modality>.*``, ``fusion.*``) so that the
    server can aggregate each module over the sites that trained it.

    Args:
        spec: the model's :class:`ModelSpec`.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.modalities = list(spec.modalities)
        self.encoders = nn.ModuleDict()
        for modality, inputs in spec.modalities.items():
            options = dict(spec.encoders[modality])
            name = options.pop("name")
            frozen = options.pop("frozen", None) or []
            self.encoders[modality] = ENCODERS.get(name)(**inputs, out_dim=spec.feature_dim, **options)
            _freeze(self.encoders[modality], frozen, f"encoder.{modality}.frozen")
        options = dict(spec.fusion)
        name = options.pop("name")
        self.fusion = FUSIONS.get(name)(
            modalities=self.modalities, feature_dim=spec.feature_dim, out_dim=spec.out_dim, **options
        )
        self.modality_dropout = spec.modality_dropout
        # A head may use a subset (single-modality baselines): the other encoders are frozen
        # and skipped, so they neither train nor cost time.
        used = getattr(self.fusion, "used_modalities", None)
        self.used_modalities = list(used) if used is not None else list(self.modalities)
        for modality in self.modalities:
            if modality not in self.used_modalities:
                self.encoders[modality].requires_grad_(False)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Map a batch ``{"image": T, ..., "present": bool[B, M]}`` to outputs [B, out_dim]."""
        present = batch["present"].bool()
        if self.training and self.modality_dropout > 0:
            present = self._drop_modalities(present)
        features = {}
        for modality in self.used_modalities:
            encoder = self.encoders[modality]
            # Early fusion (FiLM, hypernetworks): an encoder may be conditioned on another
            # modality's raw input, e.g. the image network on the tabular record.
            condition = getattr(encoder, "conditioned_on", None)
            if condition is not None:
                # The mask after modality dropout: a hidden record must not condition the image.
                condition_present = present[:, self.modalities.index(condition)]
                features[modality] = encoder(batch[modality], condition=batch[condition], condition_present=condition_present)
            else:
                features[modality] = encoder(batch[modality])
        return self.fusion(features, present)

    def auxiliary_modules(self) -> list[nn.Module]:
        """The submodules that add a training loss of their own (an ``auxiliary_loss``)."""
        return [module for module in self.modules() if module is not self and hasattr(module, "auxiliary_loss")]

    def auxiliary_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum of the extra training losses of submodules (sparsity, modularity, confidence
        regression) from the last forward pass; 0 when no module has one."""
        total = outputs.new_zeros(())
        for module in self.auxiliary_modules():
            total = total + module.auxiliary_loss(outputs, target)
        return total

    def explanations(self) -> dict[str, torch.Tensor]:
        """Per-sample explanations of the last forward pass (attention weights, gates,
        modality weights ...), keyed ``<module>.<name>``; each tensor starts with [B]."""
        found: dict[str, torch.Tensor] = {}
        for name, module in self.named_modules():
            for key, value in (getattr(module, "last_explanations", None) or {}).items():
                found[f"{name}.{key}" if name else key] = value
        return found

    def _drop_modalities(self, present: torch.Tensor) -> torch.Tensor:
        used = torch.tensor([m in self.used_modalities for m in self.modalities], device=present.device)
        dropped = present & used & (torch.rand(present.shape, device=present.device) < self.modality_dropout)
        kept = present & ~dropped
        # A sample left with none of the head's modalities keeps what it had: hiding every
        # input teaches nothing.
        empty = ~(kept & used).any(dim=1, keepdim=True)
        return torch.where(empty, present, kept)


def _freeze(encoder: nn.Module, names: list[str], key: str) -> None:
    """Keep the submodules ``names`` of ``encoder`` at their initial weights (no gradient, so
    neither the optimiser nor DP-SGD's clipping and noise touch them)."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{key}: expected a list of submodule names, got {names!r}")
    children = dict(encoder.named_modules())
    unknown = [n for n in names if not n or n not in children]
    if unknown:
        top = [n for n, _ in encoder.named_children()]
        raise ValueError(f"{key}: {type(encoder).__name__} has no submodule {unknown}; its submodules are {top}")
    for name in names:
        children[name].requires_grad_(False)


def build_model(spec: ModelSpec, *, seed: int | None = None) -> MultimodalModel:
    """Build a model from its spec; with ``seed`` the initial weights are reproducible."""
    if seed is None:
        return MultimodalModel(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultimodalModel(spec)


def module_groups(model: MultimodalModel) -> dict[str, list[str]]:
    """Group state-dict keys by aggregation module: ``encoders.<modality>`` and ``fusion``."""
    groups: dict[str, list[str]] = {}
    for key in model.state_dict():
        groups.setdefault(module_of(key), []).append(key)
    return groups

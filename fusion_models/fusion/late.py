"""Late (decision-level) fusion: one prediction head per modality, combined by learned
modality weights renormalised over the modalities each sample has."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.attention import masked_softmax
from fusion_models.fusion import FUSIONS

__all__ = ["LateFusion"]


@FUSIONS.register("late")
class LateFusion(nn.Module):
    """Per-modality MLP heads whose outputs are averaged with learned weights.

    The weights are a softmax over one learned logit per modality, taken over the modalities
    present in each sample (a missing modality gets weight exactly 0, and the others are
    renormalised), so a sample with one modality is predicted by that modality's head alone.
    ``last_explanations["modality_weight"]`` is the [B, M] weight actually used per sample.

    With a single modality the weight is 1 by construction and no logits are created (they
    would never receive a gradient).

    Opacus: ``hooks`` and ``functorch`` grad-sample modes work (the logits live in an
    ``nn.Embedding`` looked up once per sample, so they get per-sample gradients);
    ``ew`` (ExpandedWeights) handles every layer here, but Opacus' ``ew`` wrapper reads
    ``x.shape[0]`` of the first forward argument, so it cannot wrap
    :class:`~fusion_models.model.MultimodalModel` (whose input is a dict) without an
    adapter that passes tensors.

    Args:
        modalities: modality names, in the order of the presence mask.
        feature_dim: d, the width of each modality's features.
        out_dim: task output width.
        hidden: hidden width of each per-modality head.
        dropout: dropout before each head's output layer.

    References:
        Huang S.-C., Pareek A., Seyyedi S., Banerjee I., Lungren M. P. (2020). "Fusion of
        medical imaging and electronic health records using deep learning: a systematic
        review and implementation guidelines." npj Digital Medicine 3:136.
        Mohsen F., Ali H., El Hajj N., Shah Z. (2022). "Artificial Intelligence-Based Methods
        for Fusion of Electronic Health Records and Imaging Data." arXiv:2210.13462
    """

    def __init__(
        self, modalities: list[str], feature_dim: int, out_dim: int, hidden: int = 64, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.heads = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
                )
                for m in self.modalities
            }
        )
        # One row of M logits, zero-initialised (equal weights at the start); an Embedding so
        # that Opacus' hooks mode computes its per-sample gradient.
        self.logits: nn.Embedding | None = None
        if len(self.modalities) > 1:
            self.logits = nn.Embedding(1, len(self.modalities))
            nn.init.zeros_(self.logits.weight)
        self.last_explanations: dict[str, torch.Tensor] = {}

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Map features {modality: [B, d]} and ``present`` bool [B, M] to outputs [B, out_dim]."""
        present = present.bool()
        # A missing modality's head still runs (on its encoder's output for zero input), but
        # its weight is exactly 0 and torch.where keeps even a non-finite value out.
        outputs = torch.stack([self.heads[m](features[m]) for m in self.modalities], dim=1)  # [B, M, k]
        if self.logits is None:
            weights = present.to(outputs.dtype)  # [B, 1]
        else:
            # [B, 1] indices, not [B]: ExpandedWeights needs a batch dimension on the lookup.
            index = torch.zeros(present.shape[0], 1, dtype=torch.long, device=present.device)
            logits = self.logits(index).squeeze(1)  # [B, M]
            weights = masked_softmax(logits, present)
        self.last_explanations = {"modality_weight": weights.detach()}
        outputs = torch.where(present.unsqueeze(-1), outputs, torch.zeros_like(outputs))
        return (weights.unsqueeze(-1) * outputs).sum(dim=1)

"""Single-modality baseline: a head on one modality's features, the others ignored."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.fusion import FUSIONS

__all__ = ["SingleModality"]


@FUSIONS.register("single")
class SingleModality(nn.Module):
    """An MLP on one modality's features: the floor every fusion method must beat.

    Only ``modality`` is used (``used_modalities``), so the model freezes and skips the other
    encoders. A sample that lacks the modality still gets an output: its features are
    replaced by a learned "absent" embedding (the encoder's output on zero-filled input never
    reaches the head), so the prediction for such a sample is a learned prior; which
    samples had it is kept in ``last_explanations["present"]`` so that evaluation can report
    them apart. Run one per modality (``fusion=single fusion.modality=tabular``).

    Opacus: ``hooks`` and ``functorch`` grad-sample modes work (Linear and Embedding layers
    only); ``ew`` (ExpandedWeights) handles every layer here, but Opacus' ``ew`` wrapper reads
    ``x.shape[0]`` of the first forward argument, so it cannot wrap
    :class:`~fusion_models.model.MultimodalModel` (whose input is a dict) without an
    adapter that passes tensors.

    Args:
        modalities: modality names, in the order of the presence mask.
        feature_dim: d, the width of each modality's features.
        out_dim: task output width.
        modality: the one modality to use; must be one of ``modalities``.
        hidden: hidden width of the head.
        dropout: dropout before the output layer.

    References:
        Mohsen F. et al. (2022). "Artificial Intelligence-Based Methods for Fusion of
        Electronic Health Records and Imaging Data." arXiv:2210.13462 (single-modality
        baselines as the reference for every fusion gain).
    """

    def __init__(
        self,
        modalities: list[str],
        feature_dim: int,
        out_dim: int,
        modality: str = "image",
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if modality not in modalities:
            raise ValueError(
                f"single-modality head: modality {modality!r} is not in this data's modalities "
                f"{list(modalities)}; set fusion.modality to one of them"
            )
        self.modalities = list(modalities)
        self.modality = modality
        self.index = self.modalities.index(modality)
        self.used_modalities = [modality]
        # An Embedding, not a bare Parameter, so that Opacus' hooks mode has a per-sample rule.
        self.absent = nn.Embedding(1, feature_dim)
        self.head = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )
        self.last_explanations: dict[str, torch.Tensor] = {}

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Map ``features[modality]`` [B, d] and ``present`` bool [B, M] to outputs [B, out_dim]."""
        x = features[self.modality]
        has = present[:, self.index].bool()  # [B]
        # [B, 1] indices, not [B]: ExpandedWeights needs a batch dimension on the lookup.
        absent = self.absent(torch.zeros_like(has, dtype=torch.long).unsqueeze(1)).squeeze(1)  # [B, d]
        x = torch.where(has.unsqueeze(1), x, absent)
        self.last_explanations = {"present": has.detach()}
        return self.head(x)

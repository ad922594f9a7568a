"""Multi-head Gated Multimodal Unit: per-head gates, computed from all modalities, mix
per-modality tanh representations."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.attention import masked_softmax
from fusion_models.fusion import FUSIONS

__all__ = ["GatedMultimodalUnit"]


@FUSIONS.register("gmu")
class GatedMultimodalUnit(nn.Module):
    """Gated Multimodal Unit (Arevalo et al., 2017) with several gate heads (Jiang et al., 2021).

    For each modality m and head k, ``h_mk = tanh(W_mk x_m)``. The gate logits of every head
    come from the concatenated features of all modalities plus the presence mask (missing
    features zeroed, so the gate knows what is absent without seeing the zero-input
    encoding); ``z_k = softmax_m(logits_k)`` over the present modalities only (a missing
    modality gets gate exactly 0). ``fused_k = sum_m z_mk h_mk``; the heads are concatenated
    and an MLP maps them to the output. With two modalities a softmax over two logits is the
    original sigmoid gate ``z h_1 + (1 - z) h_2``. ``last_explanations["gate"]`` is
    [B, heads, M], each row summing to 1 over the present modalities.

    With a single modality the gate is 1 by construction and no gate layer is created (it
    would never receive a gradient).

    Opacus: ``hooks`` and ``functorch`` grad-sample modes work (Linear layers only);
    ``ew`` (ExpandedWeights) handles every layer here, but Opacus' ``ew`` wrapper reads
    ``x.shape[0]`` of the first forward argument, so it cannot wrap
    :class:`~fusion_models.model.MultimodalModel` (whose input is a dict) without an
    adapter that passes tensors.

    Args:
        modalities: modality names, in the order of the presence mask.
        feature_dim: d, the width of each modality's features.
        out_dim: task output width.
        heads: number of gate heads (parallel subspaces).
        head_dim: width of each head's gated representation.
        hidden: hidden width of the output MLP.
        dropout: dropout before the output layer.

    References:
        Arevalo J., Solorio T., Montes-y-Gomez M., Gonzalez F. A. (2017). "Gated Multimodal
        Units for Information Fusion." ICLR workshop. arXiv:1702.01992
        Jiang C., Chen Y., Chang J., Feng M., Wang R., Yao J. (2021). "Fusion of medical
        imaging and electronic health records with attention and multi-head mechanisms."
        arXiv:2112.11710
    """

    def __init__(
        self,
        modalities: list[str],
        feature_dim: int,
        out_dim: int,
        heads: int = 4,
        head_dim: int = 16,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if heads < 1 or head_dim < 1:
            raise ValueError(f"gmu: heads ({heads}) and head_dim ({head_dim}) must be >= 1")
        self.modalities = list(modalities)
        self.heads = heads
        self.head_dim = head_dim
        self.project = nn.ModuleDict({m: nn.Linear(feature_dim, heads * head_dim) for m in self.modalities})
        count = len(self.modalities)
        self.gate: nn.Linear | None = nn.Linear(count * (feature_dim + 1), heads * count) if count > 1 else None
        self.head = nn.Sequential(
            nn.Linear(heads * head_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )
        self.last_explanations: dict[str, torch.Tensor] = {}

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Map features {modality: [B, d]} and ``present`` bool [B, M] to outputs [B, out_dim]."""
        present = present.bool()
        b, count = present.shape
        # A missing modality's features are replaced by zeros before anything reads them.
        masked = [
            torch.where(present[:, i : i + 1], features[m], torch.zeros_like(features[m]))
            for i, m in enumerate(self.modalities)
        ]
        hidden = torch.stack(
            [
                torch.tanh(self.project[m](x)).reshape(b, self.heads, self.head_dim)
                for m, x in zip(self.modalities, masked)
            ],
            dim=2,
        )  # [B, heads, M, head_dim]
        allowed = present.unsqueeze(1)  # [B, 1, M]: the same modalities for every head
        if self.gate is None:
            gate = allowed.to(hidden.dtype).expand(b, self.heads, count)
        else:
            inputs = torch.cat(masked + [present.to(hidden.dtype)], dim=1)  # [B, M * d + M]
            logits = self.gate(inputs).reshape(b, self.heads, count)
            gate = masked_softmax(logits, allowed)  # [B, heads, M]
        self.last_explanations = {"gate": gate.detach()}
        fused = (gate.unsqueeze(-1) * hidden).sum(dim=2)  # [B, heads, head_dim]
        return self.head(fused.reshape(b, self.heads * self.head_dim))

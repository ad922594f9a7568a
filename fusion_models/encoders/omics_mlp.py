"""MLP encoder for high-dimensional omics vectors (e.g. gene expression)."""

from __future__ import annotations

from fusion_models.encoders import ENCODERS
from fusion_models.encoders.omics_gated_mlp import OmicsGatedMLP

__all__ = ["OmicsMLP"]


@ENCODERS.register("omics_mlp")
class OmicsMLP(OmicsGatedMLP):
    """The gated omics MLP without its gate: an MLP with strong input dropout, which
    regularises wide, small-sample expression data.

    Args:
        in_features: number of omics features (genes).
        out_dim: size d of the output features.
        hidden: hidden width.
        dropout: dropout on the input and after the hidden layer.
    """

    def __init__(self, in_features: int, out_dim: int = 64, hidden: int = 128, dropout: float = 0.3) -> None:
        super().__init__(in_features, out_dim=out_dim, hidden=hidden, dropout=dropout, gating=False)

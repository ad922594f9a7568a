"""Omics MLP with optional per-sample sparse feature gating (which genes a sample's
representation reads), trained with an L1 penalty on the gates."""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.encoders import ENCODERS

__all__ = ["OmicsGatedMLP"]


@ENCODERS.register("omics_gated_mlp")
class OmicsGatedMLP(nn.Module):
    """MLP with dropout on high-dimensional omics vectors, optionally behind a feature gate.

    With ``gating`` a per-sample gate ``g = sigmoid(W_g x + b)`` in [0, 1]^G multiplies the
    input before the MLP, and :meth:`auxiliary_loss` adds ``l1 * mean_b mean_j |g_bj|``, a
    mean of per-sample terms, so Opacus' per-sample clipping keeps it.
    ``last_explanations["feature_gate"]`` holds ``g`` [B, G] (detached). ``W_g`` is G x G;
    for wide inputs ``gate_hidden`` makes it low rank (G -> gate_hidden -> G, ReLU between).
    With ``gating`` off this is the plain omics MLP (``omics_mlp``) and has no auxiliary
    loss or explanation.

    The encoder does not see the presence mask: a sample without omics (all zeros) still
    gets a gate, ``sigmoid(b)``, and its L1 term; that only pulls the gate biases down, and
    the fusion head masks the sample's features.

    Opacus grad-sample modes (opacus 1.6): ``hooks``, ``functorch`` and ``ew`` work on the
    encoder alone (only Linear layers).

    Args:
        in_features: number of omics features (genes) G.
        out_dim: size d of the output features.
        hidden: hidden width of the MLP.
        dropout: dropout on the (gated) input and after the hidden layer.
        gating: gate the input features per sample.
        l1: weight of the L1 sparsity penalty on the gates.
        gate_hidden: rank of the gate network; None is a full G x G linear gate.

    References:
        Yamada, Lindenbaum, Negahban, Kluger. Feature Selection using Stochastic Gates.
        ICML 2020. https://arxiv.org/abs/1810.04247
        Yang, Lindenbaum, Kluger. Locally Sparse Neural Networks for Tabular Biomedical Data
        (LSPIN: per-sample gates). ICML 2022.
    """

    def __init__(
        self,
        in_features: int,
        out_dim: int = 64,
        hidden: int = 128,
        dropout: float = 0.3,
        gating: bool = True,
        l1: float = 0.01,
        gate_hidden: int | None = None,
    ) -> None:
        super().__init__()
        if l1 < 0:
            raise ValueError(f"omics_gated_mlp l1 must be >= 0, got {l1}")
        self.gating = gating
        self.l1 = l1
        self.gate: nn.Module | None = None
        if gating:
            if gate_hidden:
                self.gate = nn.Sequential(
                    nn.Linear(in_features, gate_hidden), nn.ReLU(), nn.Linear(gate_hidden, in_features)
                )
            else:
                self.gate = nn.Linear(in_features, in_features)
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )
        self.out_dim = out_dim
        self.last_explanations: dict[str, torch.Tensor] = {}
        self._gate_values: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return self.net(x)
        g = torch.sigmoid(self.gate(x))  # [B, G]
        self._gate_values = g
        self.last_explanations = {"feature_gate": g.detach()}
        return self.net(x * g)

    def auxiliary_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L1 penalty on the last forward pass's gates: ``l1 * mean_b mean_j g_bj`` (0 without
        gating or before any forward).

        Args:
            outputs: the model's outputs (unused; part of the auxiliary-loss contract).
            target: the batch's targets (unused).
        """
        if self._gate_values is None or self.l1 == 0:
            return outputs.new_zeros(())
        return self.l1 * self._gate_values.abs().mean(dim=1).mean()

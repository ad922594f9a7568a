"""Masked GRU encoder for irregularly sampled series with observation masks.

Input layout (``client/data.py::read_file_array``): ``[B, 2C + 1, T]`` = C value channels,
C observation masks and one time channel (hours / 48). Each step feeds the GRU with
[values, masks, time since the previous observed step]; a step with no observation
(padding, or a missing series) leaves the hidden state unchanged.

References:
    Cho K. et al. Learning phrase representations using RNN encoder-decoder for statistical
    machine translation. EMNLP (2014) (the GRU).
    Che Z. et al. Recurrent neural networks for multivariate time series with missing values.
    Scientific Reports 8, 6085 (2018) (GRU-D: masks and time gaps as inputs).
"""

from __future__ import annotations

import torch
from torch import nn

from fusion_models.encoders import ENCODERS
from fusion_models.encoders.series_conv1d import series_channels, split_series

__all__ = ["SeriesGRU"]


@ENCODERS.register("gru")
class SeriesGRU(nn.Module):
    """GRU over the observation steps, built from ``nn.Linear`` so Opacus computes
    per-sample gradients; the final hidden state is projected to ``out_dim``.

    With m_t = 1 when step t has any observation: h_t = m_t * GRU(x_t, h_{t-1}) + (1 - m_t)
    * h_{t-1}, so padded steps and a missing series never change the state (h_0 = 0; a
    series with no observation encodes to ``project(0)``). The input projection runs once
    over all steps; only the hidden projection runs per step.

    ``last_explanations = {"step_weight": [B, T]}``: the mean update-gate opening (1 - z_t)
    of each observed step, in [0, 1]; 0 on unobserved steps.

    Opacus: ``hooks``, ``functorch`` and ``ew`` grad-sample modes all work (tested); the
    hidden ``nn.Linear`` is reused T times per forward and Opacus sums its per-sample
    gradients over the calls.

    Args:
        in_channels: 2C + 1 (values, masks, time), from ``server/model_setup.py::_inputs``.
        out_dim: size d of the output features.
        hidden: GRU hidden size.
        dropout: dropout on the final hidden state.
    """

    def __init__(self, in_channels: int, out_dim: int = 64, hidden: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        self.channels = series_channels(in_channels)
        self.hidden = hidden
        # Gates in the order reset, update, candidate: [B, T, 3H] from the step inputs.
        self.input_gates = nn.Linear(in_channels, 3 * hidden)
        self.hidden_gates = nn.Linear(hidden, 3 * hidden)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden, out_dim)
        self.out_dim = out_dim
        self.last_explanations: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, masks, time, observed = split_series(x, self.channels)
        delta = _time_gaps(time.squeeze(1), observed)  # [B, T]
        steps = torch.cat([values, masks, delta.unsqueeze(1)], dim=1).transpose(1, 2)  # [B, T, 2C+1]
        gates_x = self.input_gates(steps)  # [B, T, 3H]
        h = x.new_zeros(x.shape[0], self.hidden)
        openings = []
        for t in range(x.shape[-1]):
            r_x, z_x, n_x = gates_x[:, t].chunk(3, dim=-1)
            r_h, z_h, n_h = self.hidden_gates(h).chunk(3, dim=-1)
            reset = torch.sigmoid(r_x + r_h)
            update = torch.sigmoid(z_x + z_h)
            candidate = torch.tanh(n_x + reset * n_h)
            m = observed[:, t : t + 1]  # [B, 1]
            h_new = (1 - update) * candidate + update * h
            h = m * h_new + (1 - m) * h
            openings.append((1 - update).mean(dim=-1) * m.squeeze(1))
        self.last_explanations = {"step_weight": torch.stack(openings, dim=1).detach()}
        return self.project(self.dropout(h))


def _time_gaps(time: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Time since the previous observed step, [B, T] (0 at the first observed step and on
    unobserved steps). Observed steps are in time order and come before the padding."""
    previous = torch.cat([time[:, :1], time[:, :-1]], dim=1)
    return (time - previous).clamp_min(0.0) * observed

"""FT-Transformer encoder for tabular/EHR records: one token per column, a [CLS] token and
pre-norm Transformer blocks, with the [CLS] token's attention over columns as explanation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fusion_models.attention import MaskedAttention
from fusion_models.encoders import ENCODERS
from fusion_models.encoders.tabular_mlp import check_layout

__all__ = ["FTTransformer"]


class _Block(nn.Module):
    """Pre-norm Transformer block: attention and a ReGLU feed-forward, each residual.

    Args:
        dim: token width d.
        heads: attention heads.
        ffn_factor: feed-forward hidden width as a multiple of ``dim``.
        attention_dropout: dropout on the attention output.
        ffn_dropout: dropout inside the feed-forward.
        residual_dropout: dropout on each branch before it is added back.
        first: the first block skips its first LayerNorm (the tokens are not yet mixed).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_factor: float,
        attention_dropout: float,
        ffn_dropout: float,
        residual_dropout: float,
        first: bool,
    ) -> None:
        super().__init__()
        hidden = max(1, int(dim * ffn_factor))
        self.norm1 = nn.Identity() if first else nn.LayerNorm(dim)
        self.attention = MaskedAttention(dim, heads, attention_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn_in = nn.Linear(dim, 2 * hidden)
        self.ffn_dropout = nn.Dropout(ffn_dropout)
        self.ffn_out = nn.Linear(hidden, dim)
        self.residual_dropout = nn.Dropout(residual_dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm1(x)
        every = torch.ones(h.shape[0], h.shape[1], h.shape[1], dtype=torch.bool, device=h.device)
        mixed, weights = self.attention(h, h, every)
        x = x + self.residual_dropout(mixed)
        value, gate = self.ffn_in(self.norm2(x)).chunk(2, dim=-1)  # ReGLU: value * relu(gate)
        x = x + self.residual_dropout(self.ffn_out(self.ffn_dropout(value * torch.relu(gate))))
        return x, weights


@ENCODERS.register("ft_transformer")
class FTTransformer(nn.Module):
    """Feature Tokenizer + Transformer: every tabular column becomes a token.

    A numeric column with its missing flag becomes ``value * w_j + flag * m_j + b_j`` (the
    flag is a learned offset of that column's token); a categorical column's one-hot block
    becomes its embedding plus a column bias. Every tokenizer is its own ``nn.Linear``, and
    the [CLS] token is a bias-free ``nn.Linear`` applied to a constant 1, so that Opacus
    computes per-sample gradients for all of them. After ``n_layers`` pre-norm blocks the
    [CLS] token goes through LayerNorm, ReLU and a projection to ``out_dim``.

    Without ``layout`` every entry of the encoded vector is its own numeric token.

    ``last_explanations["feature_attention"]`` ([B, n_columns], rows sum to 1): the [CLS]
    token's attention over the column tokens in the last block, averaged over heads and
    renormalised without the [CLS] token's attention to itself.

    Opacus grad-sample modes (opacus 1.6): ``hooks``, ``functorch`` and ``ew`` work on the
    encoder alone (only Linear and LayerNorm layers).

    Args:
        in_features: width of the encoded tabular vector.
        out_dim: size d of the output features.
        layout: ``[name, kind, width]`` per column of the encoded vector (see
            :mod:`fusion_models.encoders.tabular_mlp`); None treats each entry as a column.
        d_token: token width.
        n_layers: Transformer blocks.
        n_heads: attention heads (must divide ``d_token``).
        ffn_factor: feed-forward hidden width as a multiple of ``d_token`` (4/3 in the paper).
        attention_dropout: dropout on the attention output.
        ffn_dropout: dropout inside the feed-forward.
        residual_dropout: dropout on each residual branch.

    References:
        Gorishniy, Rubachev, Khrulkov, Babenko. Revisiting Deep Learning Models for Tabular
        Data. NeurIPS 2021. https://arxiv.org/abs/2106.11959
        Shazeer. GLU Variants Improve Transformer. 2020. https://arxiv.org/abs/2002.05202
    """

    def __init__(
        self,
        in_features: int,
        out_dim: int = 64,
        layout: Sequence[Sequence[Any]] | None = None,
        d_token: int = 32,
        n_layers: int = 2,
        n_heads: int = 4,
        ffn_factor: float = 4 / 3,
        attention_dropout: float = 0.1,
        ffn_dropout: float = 0.05,
        residual_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if layout is None:
            layout = [[f"x{i}", "numeric", 1] for i in range(in_features)]
        columns = check_layout(layout, in_features, encoder="ft_transformer")
        if not columns:
            raise ValueError("ft_transformer needs at least one tabular column (in_features is 0)")
        if n_layers < 1:
            raise ValueError(f"ft_transformer n_layers must be >= 1, got {n_layers}")
        if n_heads < 1 or d_token % n_heads:
            raise ValueError(f"ft_transformer n_heads={n_heads} must divide d_token={d_token}")
        self.columns = [name for name, _, _ in columns]
        self._slices: list[tuple[int, int]] = []
        self.tokenizers = nn.ModuleList()
        start = 0
        for _, _, width in columns:
            self._slices.append((start, start + width))
            self.tokenizers.append(nn.Linear(width, d_token))
            start += width
        self.cls = nn.Linear(1, d_token, bias=False)
        # The paper's tokenizer initialisation, independent of each column's width.
        bound = 1 / math.sqrt(d_token)
        for layer in [*self.tokenizers, self.cls]:
            nn.init.uniform_(layer.weight, -bound, bound)
            if layer.bias is not None:
                nn.init.uniform_(layer.bias, -bound, bound)
        self.blocks = nn.ModuleList(
            _Block(d_token, n_heads, ffn_factor, attention_dropout, ffn_dropout, residual_dropout, first=i == 0)
            for i in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_token)
        self.project = nn.Linear(d_token, out_dim)
        self.out_dim = out_dim
        self.last_explanations: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = [self.cls(x.new_ones(x.shape[0], 1))]
        tokens += [tokenize(x[:, start:stop]) for tokenize, (start, stop) in zip(self.tokenizers, self._slices)]
        h = torch.stack(tokens, dim=1)  # [B, 1 + n_columns, d_token], [CLS] first
        for block in self.blocks:
            h, weights = block(h)
        attention = weights[:, :, 0, 1:].mean(dim=1)  # [CLS] row over the columns: [B, n_columns]
        self.last_explanations = {
            "feature_attention": (attention / attention.sum(dim=1, keepdim=True).clamp_min(1e-12)).detach()
        }
        return self.project(torch.relu(self.norm(h[:, 0])))

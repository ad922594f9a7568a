"""MLP encoder for encoded tabular/EHR features (standardised numerics, missing indicators,
one-hot categories), with optional learned embeddings of the categorical columns.

Also home of the tabular *layout* that every tabular encoder accepts: the encoded vector
(``client/features.py::encode_tabular``) is, in order, ``[value, missing_flag]`` per numeric
column, then one one-hot block of ``len(vocabulary) + 1`` per categorical column (the last
slot means missing or unseen). ``server/model_setup.py`` passes it as
``layout=[[name, "numeric", 2], ..., [name, "categorical", width], ...]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fusion_models.encoders import ENCODERS

__all__ = ["TabularMLP", "check_layout"]

_KINDS = ("numeric", "categorical")


def check_layout(layout: Sequence[Sequence[Any]], in_features: int, *, encoder: str) -> list[tuple[str, str, int]]:
    """Validate a tabular layout against the encoded width; returns ``(name, kind, width)`` rows.

    Args:
        layout: ``[name, kind, width]`` per column, in the encoded vector's order; ``kind`` is
            "numeric" (width 1: value, or 2: value and missing flag) or "categorical" (width =
            vocabulary size + 1).
        in_features: width of the encoded tabular vector.
        encoder: name of the calling encoder, for error messages.

    Raises:
        ValueError: naming every malformed row, or the width mismatch.
    """
    rows: list[tuple[str, str, int]] = []
    problems: list[str] = []
    for i, row in enumerate(layout):
        if len(row) != 3:
            problems.append(f"row {i} {list(row)!r} is not [name, kind, width]")
            continue
        name, kind, width = str(row[0]), str(row[1]), row[2]
        if kind not in _KINDS:
            problems.append(f"column {name!r} has kind {kind!r}; expected one of {_KINDS}")
        elif not isinstance(width, int) or width < 1 or (kind == "numeric" and width > 2):
            problems.append(f"column {name!r} ({kind}) has width {width!r}; numeric is 1 or 2, categorical >= 1")
        else:
            rows.append((name, kind, width))
    total = sum(row[2] for row in rows)
    if not problems and total != in_features:
        problems.append(f"the layout's widths sum to {total}, but in_features is {in_features}")
    if problems:
        raise ValueError(f"{encoder}: bad tabular layout: " + "; ".join(problems))
    return rows


@ENCODERS.register("mlp")
class TabularMLP(nn.Module):
    """Two-layer MLP, after learned embeddings of the categorical columns when it has a layout.

    With ``layout`` and ``embedding_dim > 0`` each categorical one-hot block goes through its
    own bias-free ``nn.Linear`` (on a one-hot vector that is an embedding lookup, and Opacus
    computes its per-sample gradients like any Linear); numeric values and missing flags pass
    through unchanged. Without ``layout``, or with ``embedding_dim`` 0 or None, the layout is
    ignored and the MLP reads the encoded vector as it is.

    Opacus grad-sample modes (opacus 1.6): ``hooks``, ``functorch`` and ``ew`` work on the
    encoder alone (only Linear layers).

    Args:
        in_features: width of the encoded tabular vector.
        out_dim: size d of the output features.
        hidden: hidden width.
        dropout: dropout after the hidden layer.
        layout: ``[name, kind, width]`` per column of the encoded vector (see the module
            docstring and :func:`check_layout`).
        embedding_dim: width of each categorical column's embedding; 0 or None ignores the
            layout.

    References:
        Guo, Berkhahn. Entity Embeddings of Categorical Variables. 2016.
        https://arxiv.org/abs/1604.06737
    """

    def __init__(
        self,
        in_features: int,
        out_dim: int = 64,
        hidden: int = 64,
        dropout: float = 0.1,
        layout: Sequence[Sequence[Any]] | None = None,
        embedding_dim: int | None = 8,
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList()
        # (start, stop, index into self.embeddings or -1 to pass through) per column.
        self._slices: list[tuple[int, int, int]] = []
        width = in_features
        if layout is not None and embedding_dim:
            width = 0
            start = 0
            for _, kind, size in check_layout(layout, in_features, encoder="mlp"):
                if kind == "categorical":
                    self._slices.append((start, start + size, len(self.embeddings)))
                    self.embeddings.append(nn.Linear(size, embedding_dim, bias=False))
                    width += embedding_dim
                else:
                    self._slices.append((start, start + size, -1))
                    width += size
                start += size
            if not self.embeddings:
                # Numerics only: nothing to embed, read the vector as it is.
                self._slices, width = [], in_features
        self.net = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._slices:
            parts = [
                x[:, start:stop] if index < 0 else self.embeddings[index](x[:, start:stop])
                for start, stop, index in self._slices
            ]
            x = torch.cat(parts, dim=1)  # [B, numerics * 2 + categoricals * embedding_dim]
        return self.net(x)

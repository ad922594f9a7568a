"""Multi-head attention from ``nn.Linear`` with an explicit boolean mask of allowed
query -> key pairs, shared by the attention-based fusion heads and encoders.

``nn.MultiheadAttention`` has no per-sample-gradient rule in Opacus' hooks mode; four
``nn.Linear`` layers and plain tensor algebra do, so every grad-sample mode sees only
modules it knows. Rows with no allowed key come out as zeros instead of NaN (a plain
softmax over an all ``-inf`` row is NaN), which is what a sample whose modalities are all
masked for some query needs.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MaskedAttention", "masked_softmax"]


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension restricted to ``allowed`` entries.

    Disallowed entries get exactly 0; a row with no allowed entry is all zeros (never NaN),
    so its gradient is zero too.

    Args:
        scores: attention logits [..., K].
        allowed: bool tensor broadcastable to ``scores``; True where a key may be attended.

    Returns:
        Weights of the shape of ``scores``; each row sums to 1 over its allowed entries, or to
        0 when it has none.
    """
    # A finite fill instead of -inf keeps fully-masked rows finite (uniform before the
    # product below, zero after it).
    filled = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * allowed.to(scores.dtype)


class MaskedAttention(nn.Module):
    """Scaled dot-product multi-head attention (Vaswani et al., 2017) built from ``nn.Linear``.

    Args:
        dim: token width (queries, keys and values alike).
        heads: number of attention heads; must divide ``dim``.
        dropout: dropout on the attention output (the returned weights are pre-dropout, so
            explanations do not depend on the training mode).

    References:
        Vaswani A. et al. (2017). "Attention Is All You Need." NeurIPS. arXiv:1706.03762
    """

    def __init__(self, dim: int, heads: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"attention heads ({heads}) must be >= 1 and divide the token width ({dim})")
        self.heads = heads
        self.head_dim = dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, h, T, hd]

    def forward(
        self, query: torch.Tensor, context: torch.Tensor, allowed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``query`` tokens to ``context`` tokens.

        Args:
            query: [B, Tq, dim] query tokens.
            context: [B, Tk, dim] key/value tokens.
            allowed: bool [B, Tq, Tk]; True where query token i may attend to key token j.

        Returns:
            ``(output [B, Tq, dim], weights [B, heads, Tq, Tk])``; a query with no allowed
            key gets zero weights (and its output is the output layer's bias alone).
        """
        if allowed.shape != (query.shape[0], query.shape[1], context.shape[1]):
            raise ValueError(
                f"attention mask has shape {tuple(allowed.shape)}, expected "
                f"{(query.shape[0], query.shape[1], context.shape[1])} (batch, queries, keys)"
            )
        q = self._split(self.query(query))
        k = self._split(self.key(context))
        v = self._split(self.value(context))
        scores = q @ k.transpose(-2, -1) / self.head_dim**0.5  # [B, h, Tq, Tk]
        weights = masked_softmax(scores, allowed.unsqueeze(1))
        mixed = (weights @ v).transpose(1, 2).reshape(query.shape)  # [B, h, Tq, hd] -> [B, Tq, dim]
        return self.dropout(self.out(mixed)), weights

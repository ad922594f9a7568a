"""Prototype cross-attention with register tokens and a modularity loss (UMEML, 2024), for any
set of modalities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.attention import MaskedAttention
from fusion_models.fusion import FUSIONS

__all__ = ["PrototypeFusion", "modularity"]


def modularity(assignment: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """Soft modularity of each sample's instance graph under a soft prototype assignment.

    ``Q = (Tr(C^T A C) - ||C^T d||^2 / 2m) / 2m`` with degrees ``d = A 1`` and ``2m = 1^T d``
    (Newman's modularity with soft communities, as in DMoN). Q is 0 when every instance
    goes to one prototype and grows when prototypes gather densely connected instances.

    Args:
        assignment: C [B, N, P], rows sum to 1 over prototypes (0 for masked instances).
        affinity: A [B, N, N], symmetric, non-negative, 0 on the diagonal and masked rows.

    Returns:
        Q [B]; 0 for a sample whose graph has no edges.
    """
    degree = affinity.sum(dim=-1)  # [B, N]
    two_m = degree.sum(dim=-1)  # [B]
    within = torch.einsum("bnk,bnm,bmk->b", assignment, affinity, assignment)  # Tr(C^T A C)
    expected = torch.einsum("bnk,bn->bk", assignment, degree).pow(2).sum(dim=-1)  # ||C^T d||^2
    safe = two_m.clamp_min(1e-6)
    return torch.where(two_m > 1e-6, (within - expected / safe) / safe, torch.zeros_like(two_m))


@FUSIONS.register("prototype")
class PrototypeFusion(nn.Module):
    """Learned prototypes gather every modality's instance tokens by cross-attention;
    register tokens absorb stray attention; the pooled prototypes give the prediction.

    Each modality's features [B, d] are projected into ``tokens`` instance tokens (a
    many-feature modality such as omics becomes several tokens, like the paper's patch
    instances and gene groups). ``prototypes`` learned query tokens cross-attend over the
    instance tokens of the present modalities plus ``registers`` learned register tokens; a
    missing modality's tokens are masked out, and the registers (always present) give a
    prototype somewhere to put attention that no instance deserves, which keeps outliers and
    cross-modal mismatches out of the prototypes. A self-attention layer over
    [prototypes; registers] (the unified decoder) follows; the prototype tokens are
    mean-pooled (registers are discarded, as in ViT registers) and, with the presence mask,
    fed to an MLP.

    The modularity loss (:meth:`auxiliary_loss`) aligns the prototypes with the instances:
    instances are softly assigned to prototypes by cosine similarity
    (``softmax(cos / temperature)``), the instances' affinity graph is their non-negative
    cosine similarity, and the loss is ``-modularity_weight * Q`` averaged over samples, so
    each prototype gathers a densely connected group of instances across modalities.

    Prototypes and registers are ``nn.Embedding`` rows looked up per sample, so Opacus'
    hooks see them as per-sample inputs; attention is :class:`MaskedAttention` (``nn.Linear``).
    Opacus: passes ``ModuleValidator``; ``hooks``, ``functorch`` and ``ew`` modes work (tested).

    ``last_explanations``: ``prototype_attention`` [B, P, M], each prototype's cross-attention
    mass on each modality's tokens (heads averaged; 0 on missing modalities), and
    ``register_attention`` [B, P], the mass the registers absorbed (the two sum to 1 per
    prototype).

    Args:
        modalities: modality names, in the order of the presence mask.
        feature_dim: d, the width of each modality's features.
        out_dim: task output width.
        tokens: instance tokens per modality.
        prototypes: P, the number of learned prototypes.
        registers: the number of learned register tokens (>= 1).
        dim: token width.
        heads: attention heads (must divide ``dim``).
        hidden: hidden width of the output MLP.
        dropout: dropout in attention outputs and before the output layer.
        modularity_weight: weight of the modularity loss (0 disables it).
        temperature: temperature of the cosine-similarity assignment softmax.

    References:
        "Unified Modeling Enhanced Multimodal Learning for Precision Neuro-Oncology" (UMEML).
        arXiv:2406.07078, 2024. https://arxiv.org/abs/2406.07078

        Darcet, Oquab, Mairal, Bojanowski. "Vision Transformers Need Registers." ICLR 2024.

        Tsitsulin, Palowitch, Perozzi, Müller. "Graph Clustering with Graph Neural Networks"
        (DMoN). JMLR 2023.
    """

    def __init__(
        self,
        modalities: list[str],
        feature_dim: int,
        out_dim: int,
        tokens: int = 4,
        prototypes: int = 8,
        registers: int = 2,
        dim: int = 32,
        heads: int = 4,
        hidden: int = 64,
        dropout: float = 0.1,
        modularity_weight: float = 0.1,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if tokens < 1 or prototypes < 1 or registers < 1:
            raise ValueError(
                f"prototype fusion needs tokens, prototypes and registers >= 1; got {tokens}, {prototypes}, {registers}"
            )
        if temperature <= 0:
            raise ValueError(f"prototype fusion temperature must be > 0, got {temperature}")
        self.modalities = list(modalities)
        self.tokens, self.num_prototypes, self.num_registers, self.dim = tokens, prototypes, registers, dim
        self.modularity_weight, self.temperature = modularity_weight, temperature
        self.tokenize = nn.ModuleDict({m: nn.Linear(feature_dim, tokens * dim) for m in self.modalities})
        self.token_norm = nn.LayerNorm(dim)
        self.prototypes = nn.Embedding(prototypes, dim)
        self.registers = nn.Embedding(registers, dim)
        self.cross = MaskedAttention(dim, heads, dropout)
        self.cross_norm = nn.LayerNorm(dim)
        self.decoder = MaskedAttention(dim, heads, dropout)
        self.decoder_norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(
            nn.Linear(dim + len(self.modalities), hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )
        self.last_explanations: dict[str, torch.Tensor] = {}
        self._kept: dict[str, torch.Tensor] = {}

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Fuse features {modality: [B, d]} given the presence mask bool [B, M]; returns [B, out_dim]."""
        b, n_mod, t, p, r = present.shape[0], len(self.modalities), self.tokens, self.num_prototypes, self.num_registers
        dtype = next(iter(features.values())).dtype
        mask = present.to(dtype)  # [B, M]
        instances = torch.cat(
            [
                self.tokenize[m](features[m] * mask[:, i : i + 1]).view(b, t, self.dim)
                for i, m in enumerate(self.modalities)
            ],
            dim=1,
        )  # [B, M * T, dim], modality-major
        instances = self.token_norm(instances)
        valid = present.bool().repeat_interleave(t, dim=1)  # [B, M * T]

        device = present.device
        protos = self.prototypes(torch.arange(p, device=device).expand(b, p))  # [B, P, dim]
        regs = self.registers(torch.arange(r, device=device).expand(b, r))  # [B, R, dim]
        context = torch.cat([instances, regs], dim=1)  # [B, M * T + R, dim]
        allowed = torch.cat([valid, valid.new_ones(b, r)], dim=1)[:, None, :].expand(b, p, context.shape[1])
        mixed, weights = self.cross(protos, context, allowed)  # weights [B, heads, P, M * T + R]
        z = self.cross_norm(protos + mixed)  # [B, P, dim]

        tokens = torch.cat([z, regs], dim=1)  # [B, P + R, dim]: the unified decoder's tokens
        everything = torch.ones(b, p + r, p + r, dtype=torch.bool, device=device)
        decoded, _ = self.decoder(tokens, tokens, everything)
        tokens = self.decoder_norm(tokens + decoded)
        pooled = tokens[:, :p].mean(dim=1)  # [B, dim]; registers are discarded
        out = self.head(torch.cat([pooled, mask], dim=1))

        attention = weights.detach().mean(dim=1)  # [B, P, M * T + R]
        self.last_explanations = {
            "prototype_attention": attention[..., : n_mod * t].reshape(b, p, n_mod, t).sum(dim=-1),  # [B, P, M]
            "register_attention": attention[..., n_mod * t :].sum(dim=-1),  # [B, P]
        }
        self._kept = {"instances": instances, "valid": valid, "prototypes": protos}
        return out

    def auxiliary_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``-modularity_weight * Q``, the per-sample modularity of the last forward's
        instance graph under the soft prototype assignment, averaged over the batch.

        Args:
            outputs: the model's outputs of the last forward pass (for device and dtype).
            target: the batch's labels (unused: the loss is unsupervised).
        """
        if not self._kept or self.modularity_weight == 0:
            return outputs.new_zeros(())
        x = F.normalize(self._kept["instances"], dim=-1)  # [B, N, dim]
        protos = F.normalize(self._kept["prototypes"], dim=-1)  # [B, P, dim]
        valid = self._kept["valid"].to(x.dtype)  # [B, N]
        assignment = torch.softmax(x @ protos.transpose(1, 2) / self.temperature, dim=-1) * valid[..., None]
        pair = valid[:, :, None] * valid[:, None, :]  # [B, N, N]
        off_diagonal = 1 - torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        affinity = torch.relu(x @ x.transpose(1, 2)) * pair * off_diagonal
        return -self.modularity_weight * modularity(assignment, affinity).mean()

"""Multimodal dynamics: feature- and modality-informativeness weighting before late
concatenation (Han et al., 2022), each switchable."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusion_models.fusion import FUSIONS

__all__ = ["MMDynamicsFusion"]

_NO_TCP_TASKS = ("regression", "survival")


@FUSIONS.register("mm_dynamics")
class MMDynamicsFusion(nn.Module):
    """Per-sample feature gates and per-modality confidences, then concatenation.

    For each modality m with features x_m [B, d]:

    - feature informativeness: gates ``w_m = sigmoid(E_m(x_m))`` in [0, 1]^d and
      ``x_m <- x_m * w_m``; an L1 penalty (the gates' mean) in :meth:`auxiliary_loss` makes
      them sparse;
    - a per-modality layer ``h_m = dropout(relu(f_m(x_m)))``;
    - modality informativeness: a classifier on ``h_m`` gives the true-class probability
      ``TCP_m = p_m(y | x_m)``, and a regressor ``g_m(h_m)`` in [0, 1] learns to predict it
      (mean squared error against the detached TCP, plus the classifier's own loss, both in
      :meth:`auxiliary_loss`); ``h_m <- h_m * g_m(h_m)``, so a modality the model is unsure of
      counts less, per sample.

    A missing modality has its features zeroed, its gates and confidence set to 0, and no
    loss terms. The weighted ``h_m`` and the presence mask are concatenated and a linear layer
    gives the output, as in the paper's code. Modality informativeness needs a class label:
    binary (sigmoid TCP) and multiclass (softmax TCP) work; a regression or survival target
    raises. The reproduction study found it can hurt (poorly predicted TCP), hence
    ``modality_informativeness: false``; feature informativeness alone works for any task.

    Departures from the original code: the confidence regressor ends in a sigmoid (a
    probability is regressed), and the TCP target is detached (the classifier is not pulled
    towards the regressor, as in TCP confidence learning). Loss terms are per sample, so
    Opacus' per-sample clipping sees them.

    Opacus: ``nn.Linear`` only; ``hooks``, ``functorch`` and ``ew`` modes work (tested).

    ``last_explanations``: ``feature_gate.<modality>`` [B, d] (gates, 0 where missing) when
    feature informativeness is on; ``modality_confidence`` [B, M] (predicted TCP, 0 where
    missing) when modality informativeness is on.

    Args:
        modalities: modality names, in the order of the presence mask.
        feature_dim: d, the width of each modality's features.
        out_dim: task output width (1 for binary, K for multiclass).
        hidden: width of each modality's layer h_m.
        dropout: dropout after each modality's layer.
        feature_informativeness: use the sparse feature gates.
        modality_informativeness: weight modalities by their predicted TCP.
        sparsity_weight: weight of the gates' L1 penalty (the paper's code uses 1).
        confidence_weight: weight of the classifier + TCP-regression terms (1 in the paper).
        task: the task name when known; a regression or survival task with modality
            informativeness is refused at construction instead of at the first loss.

    References:
        Han et al. "Multimodal Dynamics: Dynamical Fusion for Trustworthy
        Multimodal Classification." CVPR 2022. https://github.com/TencentAILabHealthcare/mmdynamics

        "Exploring Multi-Modality Dynamics: Insights and Challenges in Multimodal Fusion for
        Biomedical Tasks." arXiv:2411.00725, 2024. https://arxiv.org/abs/2411.00725
    """

    def __init__(
        self,
        modalities: list[str],
        feature_dim: int,
        out_dim: int,
        hidden: int = 64,
        dropout: float = 0.1,
        feature_informativeness: bool = True,
        modality_informativeness: bool = True,
        sparsity_weight: float = 1.0,
        confidence_weight: float = 1.0,
        task: str | None = None,
    ) -> None:
        super().__init__()
        if modality_informativeness and task in _NO_TCP_TASKS:
            raise ValueError(
                f"mm_dynamics: modality_informativeness needs a class label to compute the true-class "
                f"probability; the {task} task has none. Set modality_informativeness: false."
            )
        self.modalities = list(modalities)
        self.out_dim = out_dim
        self.feature_informativeness = feature_informativeness
        self.modality_informativeness = modality_informativeness
        self.sparsity_weight = sparsity_weight
        self.confidence_weight = confidence_weight
        self.encode = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Dropout(dropout)) for m in self.modalities}
        )
        if feature_informativeness:
            self.gate = nn.ModuleDict({m: nn.Linear(feature_dim, feature_dim) for m in self.modalities})
        if modality_informativeness:
            self.classifier = nn.ModuleDict({m: nn.Linear(hidden, out_dim) for m in self.modalities})
            self.confidence = nn.ModuleDict({m: nn.Linear(hidden, 1) for m in self.modalities})
        self.head = nn.Linear(len(self.modalities) * (hidden + 1), out_dim)
        self.last_explanations: dict[str, torch.Tensor] = {}
        self._kept: dict[str, torch.Tensor] = {}

    def forward(self, features: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Fuse features {modality: [B, d]} given the presence mask bool [B, M]; returns [B, out_dim]."""
        mask = present.to(next(iter(features.values())).dtype)  # [B, M]
        parts, gates, logits, confidences = [], [], [], []
        for i, modality in enumerate(self.modalities):
            m = mask[:, i : i + 1]  # [B, 1]
            x = features[modality] * m  # a missing modality's features are never read
            if self.feature_informativeness:
                w = torch.sigmoid(self.gate[modality](x)) * m  # [B, d]
                x = x * w
                gates.append(w)
            h = self.encode[modality](x)  # [B, hidden]
            if self.modality_informativeness:
                logits.append(self.classifier[modality](h))  # [B, out_dim]
                c = torch.sigmoid(self.confidence[modality](h)) * m  # [B, 1]; 0 where missing
                confidences.append(c)
                h = h * c
            else:
                h = h * m
            parts.extend([h, m])
        out = self.head(torch.cat(parts, dim=1))  # [B, M * (hidden + 1)] -> [B, out_dim]

        self._kept = {"mask": mask}
        explanations = {}
        if gates:
            self._kept["gates"] = torch.stack([g.mean(dim=1) for g in gates], dim=1)  # [B, M]
            explanations.update({f"feature_gate.{m}": g.detach() for m, g in zip(self.modalities, gates)})
        if confidences:
            self._kept["logits"] = torch.stack(logits, dim=1)  # [B, M, out_dim]
            self._kept["confidence"] = torch.cat(confidences, dim=1)  # [B, M]
            explanations["modality_confidence"] = self._kept["confidence"].detach()
        self.last_explanations = explanations
        return out

    def auxiliary_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Gate sparsity plus, per present modality, its classifier's loss and the squared
        error of its predicted TCP; a per-sample sum, averaged over the batch.

        Args:
            outputs: the model's outputs of the last forward pass [B, out_dim] (unused but for
                its batch size and device).
            target: the batch's labels (binary float [B] or multiclass long [B]).
        """
        if not self._kept:
            return outputs.new_zeros(())
        mask = self._kept["mask"]  # [B, M]
        per_sample = outputs.new_zeros(mask.shape[0])
        if "gates" in self._kept:
            # Gates are non-negative, so their mean is the (scaled) L1 norm.
            per_sample = per_sample + self.sparsity_weight * (self._kept["gates"] * mask).sum(dim=1)
        if "logits" in self._kept:
            logits = self._kept["logits"]  # [B, M, out_dim]
            tcp, nll = self._true_class(logits, target)  # [B, M] each
            squared = (self._kept["confidence"] - tcp.detach()) ** 2
            per_sample = per_sample + self.confidence_weight * ((nll + squared) * mask).sum(dim=1)
        return per_sample.mean()

    def _true_class(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(TCP [B, M], negative log-likelihood [B, M]) of every modality's classifier."""
        b, m, k = logits.shape
        if target.shape[0] != b:
            raise ValueError(f"mm_dynamics: target has batch size {target.shape[0]}, the last forward had {b}")
        if k == 1:
            if target.ndim != 1 or not target.is_floating_point():
                raise ValueError(
                    "mm_dynamics: modality_informativeness needs a class label; this target "
                    f"(shape {tuple(target.shape)}) looks like a survival task (time, event). "
                    "Set modality_informativeness: false."
                )
            if not ((target == 0) | (target == 1)).all():
                raise ValueError(
                    "mm_dynamics: modality_informativeness needs a class label; this target has values "
                    "other than 0/1, i.e. a regression task. Set modality_informativeness: false."
                )
            y = target[:, None].expand(b, m).to(logits.dtype)
            p = torch.sigmoid(logits[..., 0])  # [B, M]
            tcp = y * p + (1 - y) * (1 - p)
            nll = F.binary_cross_entropy_with_logits(logits[..., 0], y, reduction="none")
            return tcp, nll
        if target.ndim != 1 or target.is_floating_point():
            raise ValueError(
                f"mm_dynamics: a multiclass head ({k} outputs) needs integer class labels [B]; "
                f"got {target.dtype} of shape {tuple(target.shape)}"
            )
        log_p = torch.log_softmax(logits, dim=-1)  # [B, M, K]
        index = target.long()[:, None, None].expand(b, m, 1)
        log_tcp = log_p.gather(-1, index)[..., 0]  # [B, M]
        return log_tcp.exp(), -log_tcp

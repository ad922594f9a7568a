"""Label-skew-aware training from a site's own label counts.

``logit_adjust`` trains on ``logits + log(prior_site)`` (Menon et al. 2021), so the shared
logits estimate the class-balanced posterior: a site with 0.7 % positives no longer pulls the
global bias toward its own base rate every round. The offset is used in the training loss
only; predictions use the raw logits.

References:
    Menon et al., "Long-tail learning via logit adjustment", ICLR 2021.
    https://arxiv.org/abs/2007.07314
"""

from __future__ import annotations

import torch

from client.settings import check_label_skew
from fusion_models.task import Task

__all__ = ["label_offsets"]

_CLASSIFICATION = ("binary", "multiclass")


def label_offsets(mode: str, task: Task, target: torch.Tensor) -> torch.Tensor | None:
    """The logit offset of ``mode`` for a site whose training labels are ``target``.

    Returns ``[1]`` (binary: the log-odds of a positive) or ``[K]`` (multiclass: log prior),
    or None for ``none`` and for tasks without classes (regression, survival), which have no
    label prior to adjust. Counts get one pseudo-sample per class (Laplace), so a class a site
    never saw gets a finite offset.
    """
    check_label_skew(mode)
    if mode == "none" or task.name not in _CLASSIFICATION or len(target) == 0:
        return None
    counts = torch.bincount(target.long().reshape(-1), minlength=task.num_classes).double() + 1.0
    log_prior = torch.log(counts / counts.sum())
    if task.name == "binary":
        return (log_prior[1] - log_prior[0]).reshape(1).float()
    return log_prior.float()

"""``privacy.grad_sample_mode=auto``: Opacus' ``ew`` (expanded weights) mode on a model whose
``ew`` per-sample gradients are checked right at the site, ``hooks`` on any other, and ghost
clipping where the per-sample gradients of the expected batch would pass
``privacy.ghost_above_mib`` and ghost clipping's per-row norms are checked on the model.

``ew`` is the faster mode on the small models (``benchmarks/results/dp_step_time``) but runs
through torch's expanded-weights kernels, which fail on some layers (MONAI's DenseNet) and
are not checked by Opacus against a reference. So before a model's first DP round the site
computes, on two of its training rows, the per-sample gradients of ``ew`` and those of one
backward pass per row, and takes ``ew`` only where every trainable parameter's agree. The
check runs once per model layout in a process, on a copy of the model in eval mode (no
dropout noise), with a loss that sums each row's own terms (its outputs and auxiliary
losses), so each row's gradient is its own and every parameter training reaches is reached.

Ghost clipping never holds per-sample gradients (one per row of the batch, each the size of
the trained parameters: 7.2 GB for MONAI's DenseNet121 at a batch of 256) and is the faster
mode there (``benchmarks/results/dp_step_time``), but slower than the best mode on nearly
every small model, whose per-sample gradients are cheap. Its check compares the per-row gradient norms of its first
backward pass with those of the per-row passes; its second pass is an ordinary backward.
"""

from __future__ import annotations

import copy
import math
from logging import INFO

import torch
from flwr.common.logger import log
from torch import nn

__all__ = ["AUTO", "CHECK_ROWS", "check_rows", "choose_grad_sample_mode", "ew_disagreement", "ghost_disagreement",
           "ghost_refusal", "per_sample_gradient_bytes"]

AUTO = "auto"
#: Rows of the site's training split the check runs on.
CHECK_ROWS = 2
_RTOL, _ATOL = 1e-4, 1e-6
_CHOSEN: dict[tuple, tuple[str, str]] = {}


def _layout(model: nn.Module) -> tuple:
    return (type(model).__name__, tuple((name, tuple(p.shape)) for name, p in model.named_parameters()))


def _loss(model: nn.Module, outputs: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
    """A sum over rows of each row's own terms: its outputs and, where the model has them, its
    auxiliary losses (batch means of per-row terms, so times the rows)."""
    loss = outputs.sum()
    if label is not None and hasattr(model, "auxiliary_loss"):
        loss = loss + len(label) * model.auxiliary_loss(outputs, label)
    return loss


def _per_row_gradients(model: nn.Module, batch: dict[str, torch.Tensor],
                       label: torch.Tensor | None) -> list[list[torch.Tensor | None]]:  # fmt: skip
    """Per row of ``batch``, every parameter's gradient from a backward pass of that row alone."""
    reference = copy.deepcopy(model).eval()
    loop: list[list[torch.Tensor | None]] = []
    for i in range(len(batch["present"])):
        reference.zero_grad(set_to_none=True)
        one = {k: v[i : i + 1] for k, v in batch.items()}
        _loss(reference, reference(one), None if label is None else label[i : i + 1]).backward()
        loop.append([None if p.grad is None else p.grad.detach().clone() for p in reference.parameters()])
    return loop


def per_sample_gradient_bytes(model: nn.Module, batch_size: float) -> float:
    """Bytes of the per-sample gradients of a batch of ``batch_size`` rows (one per row of every trained parameter)."""
    return batch_size * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def ew_disagreement(model: nn.Module, batch: dict[str, torch.Tensor], label: torch.Tensor | None = None) -> str | None:
    """Why ``ew``'s per-sample gradients cannot be used on ``model`` (``None``: for every
    trainable parameter they equal one backward pass per row of ``batch``, to rtol 1e-4).

    ``batch`` holds the model's inputs (its modalities and ``present``); ``label``, the rows'
    labels, brings in the model's auxiliary losses. A trainable parameter no row's pass
    reaches is not checked, and then neither is ``ew``.
    """
    from opacus.grad_sample import wrap_model

    from client.privacy import TensorArguments

    loop = _per_row_gradients(model, batch, label)
    checked = copy.deepcopy(model).eval()
    try:
        wrapped = wrap_model(TensorArguments(checked), grad_sample_mode="ew", batch_first=True, loss_reduction="sum")
        _loss(checked, wrapped(batch["present"], *(batch[m] for m in checked.modalities)), label).backward()
    except Exception as error:  # noqa: BLE001 - any failure of ew means hooks
        return f"ew failed on this model: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    for k, (name, p) in enumerate(checked.named_parameters()):
        if not p.requires_grad:
            continue
        expected = [row[k] for row in loop]
        if all(e is None for e in expected):
            return f"no row of the check reaches {name}, so ew's gradient of it cannot be checked"
        truth = torch.stack([torch.zeros_like(p) if e is None else e for e in expected])
        sample = getattr(p, "grad_sample", None)
        if sample is None or sample.shape != truth.shape:
            return f"ew gives no per-sample gradient of shape {tuple(truth.shape)} for {name}"
        if not torch.allclose(sample, truth, rtol=_RTOL, atol=_ATOL):
            worst = float((sample - truth).abs().max())
            return f"ew's per-sample gradient of {name} is off by up to {worst:.3g}"
    return None


def ghost_refusal(model: nn.Module) -> str | None:
    """Why ghost clipping cannot clip ``model`` at all (``None``: no module adds a batch-mean auxiliary loss)."""
    auxiliary = sorted({type(m).__name__ for m in getattr(model, "auxiliary_modules", list)()})
    if auxiliary:
        return f"{', '.join(auxiliary)} adds an auxiliary loss over the batch, which ghost clipping cannot clip row by row"
    return None


def ghost_disagreement(model: nn.Module, batch: dict[str, torch.Tensor]) -> str | None:
    """Why ghost clipping cannot be used on ``model`` (``None``: the per-row gradient norms of
    its first backward pass equal those of one backward pass per row of ``batch``, to rtol 1e-4)."""
    refusal = ghost_refusal(model)
    if refusal:
        return refusal
    from opacus.grad_sample import GradSampleModuleFastGradientClipping

    loop = _per_row_gradients(model, batch, None)
    checked = copy.deepcopy(model).eval()
    for m in checked.modules():
        # Opacus' hooks skip layers in eval mode; a parametrised layer here (linear, conv,
        # norm) computes the same in both modes, and dropout stays off as in the per-row passes
        if next(m.parameters(recurse=False), None) is not None:
            m.training = True
    trained = [(k, name) for k, (name, p) in enumerate(checked.named_parameters()) if p.requires_grad]
    for k, name in trained:
        if all(row[k] is None for row in loop):
            return f"no row of the check reaches {name}, so ghost clipping's norm of it cannot be checked"
    truth = torch.stack([torch.stack([row[k].pow(2).sum() for k, _ in trained if row[k] is not None]).sum().sqrt()
                         for row in loop])  # fmt: skip
    try:
        wrapped = GradSampleModuleFastGradientClipping(checked, batch_first=True, loss_reduction="sum",
                                                       max_grad_norm=1.0, use_ghost_clipping=True)  # fmt: skip
        _loss(checked, wrapped(batch), None).backward()
        norms = wrapped.get_norm_sample().detach()
    except Exception as error:  # noqa: BLE001 - any failure of ghost clipping means another mode
        return f"ghost clipping failed on this model: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if not torch.allclose(norms, truth, rtol=_RTOL, atol=_ATOL):
        return f"ghost clipping's per-row gradient norms are off by up to {float((norms - truth).abs().max()):.3g}"
    return None


def choose_grad_sample_mode(model: nn.Module, batch: dict[str, torch.Tensor], label: torch.Tensor | None = None, *,
                            batch_size: float = 0.0, ghost_above_bytes: float = math.inf) -> tuple[str, str]:  # fmt: skip
    """(mode, why) for ``model`` at an expected batch of ``batch_size`` rows: ``ghost`` where
    its per-sample gradients would take more than ``ghost_above_bytes`` and
    :func:`ghost_disagreement` finds none on ``batch``, else ``ew`` where
    :func:`ew_disagreement` finds none (the rows the caller picked, :data:`CHECK_ROWS` of
    them), else ``hooks``; remembered per model layout, side of the size bound and process."""
    size = per_sample_gradient_bytes(model, batch_size)
    large = size > ghost_above_bytes
    key = (_layout(model), large)
    if key not in _CHOSEN:
        rows = len(batch["present"])
        held = f"per-sample gradients of {batch_size:.0f} rows would take {size / 2**30:.2f} GiB"
        not_ghost = ghost_disagreement(model, batch) if large else None
        if large and not_ghost is None:
            _CHOSEN[key] = ("ghost", f"{held}, over privacy.ghost_above_mib {ghost_above_bytes / 2**20:g} MiB; ghost "
                                     f"clipping's per-row gradient norms equal a per-row backward pass on {rows} rows")  # fmt: skip
        else:
            problem = ew_disagreement(model, batch, label)
            mode, why = ("hooks", problem) if problem else (
                "ew", f"ew's per-sample gradients equal a per-row backward pass on {rows} rows")
            _CHOSEN[key] = (mode, f"{why}; not ghost clipping: {held}, but {not_ghost}" if large else why)
        log(INFO, "grad_sample_mode=auto: %s (%s)", *_CHOSEN[key])
    return _CHOSEN[key]


def check_rows(present: torch.Tensor, *, scan: int = 64) -> list[int]:
    """The :data:`CHECK_ROWS` rows, of the first ``scan``, with the most modalities present,
    so that the check reaches as many encoders as the site's data can."""
    counts = present[:scan].sum(dim=1)
    order = sorted(range(len(counts)), key=lambda i: (-int(counts[i]), i))
    return order[:CHECK_ROWS]

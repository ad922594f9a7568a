"""Local training and evaluation loops: plain functions that never see a Flower Message."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from client.settings import TrainSettings
from fusion_models.task import Task

if TYPE_CHECKING:
    from client.privacy import DPRound

__all__ = ["resolve_device", "make_loader", "make_optimizer", "proximal_penalty", "batch_loss", "train_local", "predict", "evaluate"]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """A DataLoader with a seeded shuffle, so a run is reproducible."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=False)


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """The site optimiser ``settings.optimizer`` names, over every parameter of ``model``."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay)  # fmt: skip
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def proximal_penalty(params, anchor: list[torch.Tensor], *, mu: float) -> torch.Tensor:
    """``mu / 2 * sum ||w - w_anchor||^2`` (FedProx, Li et al. 2020; Ditto's pull to the global model).

    Its gradient is ``mu * (w - w_anchor)`` for every parameter.
    """
    return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))


def batch_loss(model: nn.Module, task: Task, outputs: torch.Tensor, target: torch.Tensor, *,
               offset: torch.Tensor | None = None, dp: DPRound | None = None):  # fmt: skip
    """One batch's training loss: the task's loss of ``outputs`` (plus ``offset``, the label
    offset, inside the loss only) and the model's auxiliary losses. Under ghost clipping it is
    :meth:`client.privacy.DPRound.ghost_loss` of the per-row task losses (no auxiliary loss:
    DPRound refuses ghost on such models)."""
    logits = outputs if offset is None else outputs + offset
    if dp is not None and dp.ghost:
        return dp.ghost_loss(task.per_sample_loss(logits, target))
    loss = task.loss(logits, target)
    return loss + model.auxiliary_loss(outputs, target) if hasattr(model, "auxiliary_loss") else loss


def train_local(
    model: nn.Module,
    dataset: Dataset,
    task: Task,
    settings: TrainSettings,
    *,
    seed: int,
    device: torch.device,
    label_offset: torch.Tensor | None = None,
    anchor: list[torch.Tensor] | None = None,
    dp: DPRound | None = None,
    after_pass: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` in place for ``settings.epochs`` passes over ``dataset`` with a fresh optimiser.

    Returns ``loss`` (mean training loss), ``steps`` and ``samples`` (sample passes made).
    With ``proximal_mu > 0`` the proximal term ``mu / 2 * ||w - anchor||^2`` pulls the weights
    towards ``anchor`` (FedProx: the weights at the start; Ditto: the global weights).
    ``label_offset`` (``[output_dim]``) is added to the outputs inside the task loss only.
    With ``dp`` the round is DP-SGD (:class:`client.privacy.DPRound`): Poisson-sampled
    batches, clipped per-sample gradients plus noise, the proximal pull added after the noise.
    ``after_pass(steps_done)`` is called after every full pass over the loader and after the
    last step (model selection scores snapshots there); it must not change the weights, and
    training goes on in training mode after it.
    """
    if len(dataset) == 0:
        return {"loss": float("nan"), "steps": 0.0, "samples": 0.0}
    torch.manual_seed(seed)
    model.to(device).train()
    optimizer = make_optimizer(model, settings)
    offset = None if label_offset is None else label_offset.to(device)
    if settings.proximal_mu > 0:
        anchor = [a.detach().to(device) for a in anchor] if anchor is not None else [p.detach().clone() for p in model.parameters()]
    else:
        anchor = None
    loader = make_loader(dataset, batch_size=settings.batch_size, shuffle=True, seed=seed)
    steps = max(1, math.ceil(settings.epochs * len(loader)))
    forward = model
    if dp is not None:
        forward, optimizer, loader = dp.attach(model, optimizer, loader, anchor=anchor, mu=settings.proximal_mu)
        anchor = None  # DPRound adds the proximal gradient after the noise
    done, samples, total = 0, 0, 0.0
    try:
        while done < steps:
            for batch in loader:
                batch = _to(batch, device)
                optimizer.zero_grad(set_to_none=True)
                loss = batch_loss(model, task, forward(batch), batch["label"], offset=offset, dp=dp)
                if anchor is not None:
                    loss = loss + proximal_penalty(model.parameters(), anchor, mu=settings.proximal_mu)
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                samples += len(batch["label"])
                done += 1
                if after_pass is not None and (done % len(loader) == 0 or done == steps):
                    after_pass(done)
                    model.train()  # scoring puts the model in eval mode
                if done >= steps:
                    break
    finally:
        if dp is not None:
            dp.close()
    return {"loss": total / done, "steps": float(done), "samples": float(samples)}


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, task: Task, *, device: torch.device, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, float]:
    """Scores of every sample: (target, scores, mean loss)."""
    model.to(device).eval()
    targets, outputs = [], []
    for batch in make_loader(dataset, batch_size=batch_size, shuffle=False, seed=0):
        batch = _to(batch, device)
        outputs.append(model(batch).cpu())
        targets.append(batch["label"].cpu())
    if not outputs:
        return np.zeros(0), np.zeros(0), float("nan")
    out, target = torch.cat(outputs), torch.cat(targets)
    return target.numpy(), task.scores(out), float(task.loss(out, target))


def evaluate(model: nn.Module, dataset: Dataset, task: Task, *, device: torch.device) -> dict[str, float]:
    """Task metrics of ``model`` on ``dataset`` plus its mean ``loss``."""
    target, scores, loss = predict(model, dataset, task, device=device)
    metrics = task.metrics(target, scores) if len(target) else {}
    return {**metrics, "loss": loss}

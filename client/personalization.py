"""Personalisation at a site: a model of its own beside the global one.

- ``finetune``: local epochs on the site's training split, starting from the final global
  model; with ``select=best_val`` the site keeps the pass (the global model included) that
  scores best on its validation split (:mod:`client.model_selection`). The rule that decides
  where it applies is fixed in the config before results are seen: a site with fewer than
  ``min_train_positives`` training positives (binary) or events (survival) keeps the global
  model as its personalised model, and says so.
- ``fedper`` (Arivazhagan et al. 2019): the modules in ``keep_modules`` stay at the site.
  Every round the site puts its own copy into the global model, trains, keeps the new copy
  and sends only the other modules; its personalised model is the global one with its own
  modules in.
- ``ditto`` (Li et al. 2021): beside each round's global update the site trains a personal
  model on ``loss + lambda / 2 * ||w - w_global||^2``; that model is its personalised one.

Personal state is the site's own: written atomically (fsync, rename) to its state folder,
read back by the next round's process, and never sent.

References:
    Arivazhagan et al., "Federated Learning with Personalization Layers", 2019. https://arxiv.org/abs/1912.00818
    Li et al., "Ditto: Fair and Robust Federated Learning Through Personalization", ICML 2021.
    https://arxiv.org/abs/2012.04221
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from client.atomic_io import atomic_open
from client.data import SiteDataset
from client.model_selection import BestSnapshot, validation_metrics
from client.privacy import BudgetExceeded, PrivacyRefused, SitePrivacy
from client.round import RoundResult, train_round
from client.settings import PersonalizationSettings, TrainSettings, dp_refusals
from fusion_models.model import MultimodalModel
from fusion_models.module_keys import module_of
from fusion_models.task import Task

__all__ = [
    "PERSONAL_FILE",
    "personalize",
    "personal_round",
    "personal_model",
    "save_personal_model",
    "load_personal_model",
]

PERSONAL_FILE = "personal.pt"
_FORMAT_VERSION = 1


def _minority_count(task: Task, target: torch.Tensor) -> int | None:
    if task.name == "binary":
        return int((target.reshape(-1) == 1).sum())
    if task.name == "survival":
        return int(target[:, 1].sum()) if len(target) else 0
    return None


def _kept(model: MultimodalModel, settings: PersonalizationSettings) -> frozenset[str]:
    modules = {module_of(k) for k in model.state_dict()}
    unknown = sorted(set(settings.keep_modules) - modules)
    if unknown:
        raise ValueError(f"personalization.keep_modules: {unknown} are not modules of this model; it has {sorted(modules)}")
    return frozenset(settings.keep_modules)


def personal_round(
    model: MultimodalModel,
    train_set: SiteDataset,
    task: Task,
    train: TrainSettings,
    settings: PersonalizationSettings,
    *,
    state_dir: Path,
    seed: int,
    device: torch.device,
    server_round: int,
    privacy: SitePrivacy | None = None,
) -> RoundResult:
    """One round of local training under ``settings``; returns what the site sends.

    ``none`` and ``finetune`` train the global model as every site does; ``fedper`` and
    ``ditto`` also read and write the site's personal state in ``state_dir``. ``privacy``
    goes to :func:`client.round.train_round` (FedPer's kept modules train under DP too).
    """
    if privacy is not None and privacy.settings.enabled:
        problems = dp_refusals(task=task.name, train=train, personalization=settings)
        if problems:
            raise PrivacyRefused("privacy=dp: " + "; ".join(problems))
    path = state_dir / PERSONAL_FILE
    if settings.name == "fedper":
        keep = _kept(model, settings)
        if path.is_file():
            model.load_state_dict(load_personal_model(path)["state_dict"], strict=False)
        result = train_round(model, train_set, task, train, seed=seed, device=device, keep=keep, privacy=privacy)
        own = {k: v for k, v in model.state_dict().items() if module_of(k) in keep}
        save_personal_model(path, own, meta={"personalization": "fedper", "round": server_round, "modules": sorted(keep)})
        return result
    if settings.name == "ditto":
        anchor = [p.detach().clone() for p in model.parameters()]
        personal = copy.deepcopy(model)
        if path.is_file():
            personal.load_state_dict(load_personal_model(path)["state_dict"])
        own = train_round(personal, train_set, task, replace(train, proximal_mu=settings.ditto_lambda), seed=seed + 1,
                          device=device, anchor=anchor)  # fmt: skip
        save_personal_model(path, personal.state_dict(), meta={"personalization": "ditto", "round": server_round,
                                                               "steps": own.steps})  # fmt: skip
    return train_round(model, train_set, task, train, seed=seed, device=device, privacy=privacy)


def personal_model(
    global_model: MultimodalModel,
    train_set: SiteDataset,
    task: Task,
    train: TrainSettings,
    settings: PersonalizationSettings,
    *,
    state_dir: Path,
    seed: int,
    device: torch.device,
    privacy: SitePrivacy | None = None,
    val_set: SiteDataset | None = None,
) -> tuple[MultimodalModel, int, str]:
    """The site's personalised model for the final evaluation, the local steps it took
    (``finetune`` only), and a note when a rule kept the global model or chose a pass. Under
    ``privacy`` the fine-tuning is a DP round of its own, in the ledger as release ``finetune``;
    ``val_set`` is what ``select=best_val`` scores."""
    model = copy.deepcopy(global_model)
    path = state_dir / PERSONAL_FILE
    if settings.name in ("fedper", "ditto"):
        if not path.is_file():
            return model, 0, "no personal state (the site trained in no round): the global model"
        model.load_state_dict(load_personal_model(path)["state_dict"], strict=settings.name == "ditto")
        return model, 0, ""
    if settings.name != "finetune":
        raise ValueError(f"personal_model() called with personalization.name {settings.name!r}")
    model, steps, note = personalize(model, train_set, task, train, settings, seed=seed, device=device, privacy=privacy,
                                     val_set=val_set)  # fmt: skip
    save_personal_model(path, model.state_dict(), meta={"personalization": "finetune", "steps": steps, "note": note})
    return model, steps, note


def personalize(
    global_model: MultimodalModel,
    train_set: SiteDataset,
    task: Task,
    train: TrainSettings,
    settings: PersonalizationSettings,
    *,
    seed: int,
    device: torch.device,
    privacy: SitePrivacy | None = None,
    val_set: SiteDataset | None = None,
) -> tuple[MultimodalModel, int, str]:
    """``finetune``: the fine-tuned copy, its local steps, and a note when the rule (or the
    site's privacy budget) kept the global model, or which pass ``select=best_val`` kept
    (scored on ``val_set``, which it then needs)."""
    model = copy.deepcopy(global_model)
    count = _minority_count(task, train_set.target)
    if count is not None and count < settings.min_train_positives:
        what = "events" if task.name == "survival" else "positives"
        what = what if count != 1 else what[:-1]
        return model, 0, f"kept the global model: {count} training {what}, fewer than {settings.min_train_positives}"
    if privacy is not None:
        privacy = replace(privacy, release="finetune", round_epochs=train.epochs)
    best, after_pass = None, None
    if settings.select == "best_val":
        if val_set is None:
            raise ValueError("personalization.select=best_val needs the site's validation split")
        best = BestSnapshot(task)

        def after_pass(steps_done: int) -> None:
            best.offer(model, validation_metrics(model, {"val": val_set}, task, device=device), steps_done)

        after_pass(0)  # the global model is a candidate too
    try:
        result = train_round(model, train_set, task, replace(train, epochs=settings.epochs, proximal_mu=0.0), seed=seed,
                             device=device, privacy=privacy, after_pass=after_pass)  # fmt: skip
    except BudgetExceeded as refusal:
        return copy.deepcopy(global_model), 0, f"kept the global model: {refusal}"
    if best is None:
        return model, result.steps, ""
    kept = best.restore(model)
    if kept is None:
        return model, result.steps, "select=best_val: no pass could be scored on the validation split; kept the last"
    what = "the global model" if kept == 0 else f"the weights after {kept} of {result.steps} steps"
    return model, result.steps, f"select=best_val: kept {what} (validation {best.headline} {best.score:.3f})"


def save_personal_model(path: Path, state_dict: dict[str, torch.Tensor], *, meta: dict[str, Any]) -> Path:
    """Write personal weights and what made them to ``path`` atomically (fsync, rename)."""
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save({"state_dict": state, "meta": meta, "format_version": _FORMAT_VERSION}, f)
    return Path(path)


def load_personal_model(path: Path) -> dict[str, Any]:
    """Read what :func:`save_personal_model` wrote; refuses anything else, naming the file."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file: say which and stop
        raise ValueError(f"{path}: cannot read the site's personal state ({type(error).__name__}: {error})") from error
    if not isinstance(data, dict) or data.get("format_version") != _FORMAT_VERSION or "state_dict" not in data:
        raise ValueError(f"{path}: not a fedfusion personal state (format {_FORMAT_VERSION} expected)")
    return data

"""Checks every fusion head must pass, shared by the per-head test files (one head per file,
as in the source tree); each test file calls them with its head's name and kwargs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from opacus import GradSampleModule
from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
from opacus.validators import ModuleValidator
from torch import nn

from client.privacy import TensorArguments
from fusion_models.model import ModelSpec, MultimodalModel, build_model

__all__ = [
    "MODALITY_SETS",
    "PATTERNS",
    "check_determinism",
    "check_gradients_reach_parameters",
    "check_mask_matters",
    "check_missing_inputs_do_not_leak",
    "check_nothing_present_is_finite",
    "check_output_shape",
    "check_per_sample_gradients",
    "check_validator",
    "make_batch",
    "make_model",
    "presence",
    "single_thread",
]

# modality -> (input facts, input shape, encoder config); the encoders are kept tiny, the heads are under test.
INPUTS: dict[str, tuple[dict[str, int], tuple[int, ...], dict[str, Any]]] = {
    "image": (
        {"in_channels": 3, "spatial_dims": 2},
        (3, 8, 8),
        {"name": "cnn_small", "channels": [4], "num_groups": 2},
    ),
    "tabular": ({"in_features": 7}, (7,), {"name": "mlp", "hidden": 16}),
    "omics": ({"in_features": 10}, (10,), {"name": "omics_mlp", "hidden": 16}),
}
MODALITY_SETS = {1: ["tabular"], 2: ["image", "tabular"], 3: ["image", "tabular", "omics"]}
PATTERNS = ("complete", "partly_missing", "all_but_one_missing")
B = 4


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread while a test runs: on these tiny tensors, waking more threads costs
    more than the work (5-20x slower on a busy 2-core machine). Import it into a test module
    to apply it there."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def presence(pattern: str, count: int, b: int = B) -> torch.Tensor:
    """Presence mask [b, count]: everything; row 0 complete and row i > 0 missing modality
    (i - 1) mod count (never the only one); or one modality per row (cycling)."""
    if pattern == "complete" or (pattern == "partly_missing" and count == 1):
        return torch.ones(b, count, dtype=torch.bool)
    if pattern == "partly_missing":
        hidden = (torch.arange(b)[:, None] - 1) % count == torch.arange(count)[None, :]
        hidden[0] = False
        return ~hidden
    if pattern == "all_but_one_missing":
        return torch.arange(count)[None, :] == (torch.arange(b)[:, None] % count)
    raise ValueError(f"unknown presence pattern {pattern!r}; expected one of {PATTERNS}")


def make_model(name: str, modalities: list[str], *, out_dim: int = 1, seed: int = 0, **kwargs: Any) -> MultimodalModel:
    """A tiny model (feature width 8) with ``name`` as its fusion head, in eval mode so that
    dropout does not blur comparisons."""
    spec = ModelSpec(
        modalities={m: INPUTS[m][0] for m in modalities},
        encoders={m: dict(INPUTS[m][2]) for m in modalities},
        fusion={"name": name, **kwargs}, feature_dim=8, out_dim=out_dim,
    )  # fmt: skip
    return build_model(spec, seed=seed).eval()


def make_batch(modalities: list[str], present: torch.Tensor, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs with zeros where a modality is missing (as client/data.py delivers them)."""
    generator = torch.Generator().manual_seed(seed)
    b = present.shape[0]
    batch: dict[str, torch.Tensor] = {}
    for i, m in enumerate(modalities):
        x = torch.randn(b, *INPUTS[m][1], generator=generator)
        keep = present[:, i].reshape(b, *([1] * (x.dim() - 1)))
        batch[m] = torch.where(keep, x, torch.zeros_like(x))
    batch["present"] = present
    return batch


def check_output_shape(name: str, modalities: list[str], pattern: str, out_dim: int, **kwargs: Any) -> dict:
    """Outputs are [B, out_dim] and finite; returns the model's explanations for that batch."""
    model = make_model(name, modalities, out_dim=out_dim, **kwargs)
    out = model(make_batch(modalities, presence(pattern, len(modalities))))
    assert out.shape == (B, out_dim)
    assert torch.isfinite(out).all()
    explanations = model.explanations()
    for key, value in explanations.items():
        assert value.shape[0] == B, key
        assert not value.requires_grad, f"{key} must be detached"
    return explanations


def check_missing_inputs_do_not_leak(name: str, modalities: list[str], pattern: str, **kwargs: Any) -> None:
    """Replacing a missing modality's (zero) input by large random values changes nothing,
    neither the outputs nor the explanations."""
    model = make_model(name, modalities, **kwargs)
    present = presence(pattern, len(modalities))
    batch = make_batch(modalities, present)
    noisy = dict(batch)
    for i, m in enumerate(modalities):
        gone = ~present[:, i].reshape(B, *([1] * (batch[m].dim() - 1)))
        noisy[m] = torch.where(gone, 100 * torch.randn_like(batch[m]), batch[m])
    with torch.no_grad():
        reference, explained = model(batch), model.explanations()
        torch.testing.assert_close(model(noisy), reference)
        for key, value in model.explanations().items():
            torch.testing.assert_close(value, explained[key])


def check_mask_matters(name: str, modalities: list[str], **kwargs: Any) -> None:
    """Hiding every modality but the last changes the outputs of every sample."""
    model = make_model(name, modalities, **kwargs)
    batch = make_batch(modalities, presence("complete", len(modalities)))
    hidden = presence("complete", len(modalities))
    hidden[:, :-1] = False
    with torch.no_grad():
        full, partial = model(batch), model(dict(batch, present=hidden))
    assert not torch.isclose(full, partial).all(dim=1).any()


def check_nothing_present_is_finite(name: str, modalities: list[str], **kwargs: Any) -> None:
    """A row with no modality at all (the model never makes one, data might) stays finite."""
    model = make_model(name, modalities, **kwargs)
    present = presence("complete", len(modalities))
    present[0] = False
    out = model(make_batch(modalities, present))
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(v.float()).all() for v in model.explanations().values())


def check_determinism(name: str, modalities: list[str], **kwargs: Any) -> None:
    """The same seed gives the same weights and outputs; another seed different weights."""
    a, b = make_model(name, modalities, seed=3, **kwargs), make_model(name, modalities, seed=3, **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(a.fusion.state_dict().values(), b.fusion.state_dict().values()))
    batch = make_batch(modalities, presence("partly_missing", len(modalities)))
    torch.testing.assert_close(a(batch), b(batch))
    c = make_model(name, modalities, seed=4, **kwargs)
    assert not all(torch.equal(x, y) for x, y in zip(a.fusion.state_dict().values(), c.fusion.state_dict().values()))


def check_validator(name: str, modalities: list[str], **kwargs: Any) -> None:
    # The validator refuses a model in eval mode, so validate it as training would see it.
    assert ModuleValidator.validate(make_model(name, modalities, **kwargs).train(), strict=False) == []


def _train_without_dropout(name: str, modalities: list[str], **kwargs: Any) -> MultimodalModel:
    """Training mode (Opacus' hooks record activations only then) with dropout off, so that
    the batch and the one-sample passes compute the same function."""
    model = make_model(name, modalities, **kwargs).train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    return model


def check_per_sample_gradients(name: str, modalities: list[str], mode: str, **kwargs: Any) -> None:
    """One DP step's per-sample gradients: every trainable parameter gets a ``grad_sample``
    [B, ...] equal to the gradient of that sample's loss alone."""
    present = presence("partly_missing", len(modalities))
    batch = make_batch(modalities, present)
    target = torch.randn(B, 1)
    model, reference = (
        _train_without_dropout(name, modalities, **kwargs),
        _train_without_dropout(name, modalities, **kwargs),
    )
    if mode == "ew":
        wrapped: nn.Module = GradSampleModuleExpandedWeights(TensorArguments(model), loss_reduction="sum")
        out = wrapped(present, *(batch[m] for m in modalities))
    else:
        wrapped = GradSampleModule(model, loss_reduction="sum", force_functorch=mode == "functorch")
        out = wrapped(batch)
    ((out - target) ** 2).sum().backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    for n, p in trainable.items():
        assert p.grad_sample is not None and p.grad_sample.shape == (B, *p.shape), n
    for i in range(B):
        reference.zero_grad()
        one = {k: v[i : i + 1] for k, v in batch.items()}
        ((reference(one) - target[i : i + 1]) ** 2).sum().backward()
        for n, p in reference.named_parameters():
            if n in trainable:
                expected = p.grad if p.grad is not None else torch.zeros_like(p)
                torch.testing.assert_close(trainable[n].grad_sample[i], expected, atol=1e-5, rtol=1e-4, msg=n)


def check_gradients_reach_parameters(
    name: str,
    modalities: list[str],
    *,
    learns_from_missing: tuple[str, ...] = (),
    inert: tuple[str, ...] = (),
    **kwargs: Any,
) -> None:
    """Every trainable parameter gets a non-zero gradient from a complete batch, except
    those named in ``learns_from_missing`` (prefixes under ``fusion.``), which must get one
    from a batch with missing modalities instead, and those in ``inert`` (prefixes under
    ``fusion.``: no gradient by construction, which the caller explains)."""

    def grads(pattern: str) -> dict[str, torch.Tensor | None]:
        model = make_model(name, modalities, **kwargs)
        out = model(make_batch(modalities, presence(pattern, len(modalities))))
        ((out - torch.randn_like(out)) ** 2).mean().backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    def zero(g: torch.Tensor | None) -> bool:
        return g is None or not bool(g.abs().sum() > 0)

    def exempt(n: str) -> bool:
        return any(n.startswith(f"fusion.{prefix}") for prefix in learns_from_missing)

    complete = grads("complete")
    dead = [
        n for n, g in complete.items()
        if not exempt(n) and not any(n.startswith(f"fusion.{prefix}") for prefix in inert) and zero(g)
    ]  # fmt: skip
    assert not dead, f"no gradient from a complete batch: {dead}"
    if learns_from_missing and len(modalities) > 1:
        partial = grads("partly_missing")
        dead = [n for n, g in partial.items() if exempt(n) and zero(g)]
        assert not dead, f"no gradient from a batch with missing modalities: {dead}"

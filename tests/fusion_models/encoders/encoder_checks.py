"""Checks shared by the image, tabular and omics encoder tests: each encoder inside a
two-modality model (concat fusion), missing-modality masking, Opacus per-sample gradients."""

from __future__ import annotations

from typing import Any

import torch
from opacus.grad_sample.utils import prepare_module
from opacus.validators import ModuleValidator
from torch import nn

from fusion_models.model import ModelSpec, MultimodalModel, build_model

# A plain partner modality for the encoder under test.
PARTNER = {"omics": ({"in_features": 6}, {"name": "omics_mlp", "hidden": 8}, (6,))}


def two_modality_model(
    modality: str, inputs: dict[str, Any], encoder: dict[str, Any], *, seed: int = 0
) -> MultimodalModel:
    """``modality`` with ``encoder`` plus a small omics MLP, fused by concatenation."""
    partner_inputs, partner_encoder, _ = PARTNER["omics"]
    spec = ModelSpec(
        modalities={modality: inputs, "omics": partner_inputs},
        encoders={modality: encoder, "omics": partner_encoder},
        fusion={"name": "concat", "dropout": 0.0},
        feature_dim=8,
        out_dim=1,
    )
    return build_model(spec, seed=seed)


def batch_for(modality: str, x: torch.Tensor, present: list[bool]) -> dict[str, torch.Tensor]:
    """A batch where ``modality`` is present where ``present`` says (zeros elsewhere, as
    client/data.py writes them) and omics is always present."""
    mask = torch.tensor(present)
    x = x * mask.view(-1, *[1] * (x.dim() - 1)).to(x.dtype)
    omics = torch.randn(len(present), *PARTNER["omics"][2], generator=torch.Generator().manual_seed(1))
    return {modality: x, "omics": omics, "present": torch.stack([mask, torch.ones_like(mask)], dim=1)}


def check_model_masking(model: MultimodalModel, modality: str, x: torch.Tensor) -> None:
    """Complete, partly missing and wholly missing batches give finite outputs, and the
    values behind a missing modality do not change the output."""
    model.eval()
    b = x.shape[0]
    for present in ([True] * b, [i % 2 == 0 for i in range(b)], [False] * b):
        batch = batch_for(modality, x, present)
        out = model(batch)
        assert out.shape == (b, 1) and torch.isfinite(out).all()
        junk = dict(batch)
        missing = ~torch.tensor(present)
        junk[modality] = batch[modality].clone()
        junk[modality][missing] = torch.randn_like(junk[modality][missing]) * 10
        torch.testing.assert_close(model(junk), out)


def check_validator(module: nn.Module) -> None:
    assert ModuleValidator.validate(module, strict=False) == []
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def check_per_sample_grads(module: nn.Module, inputs: Any, *, mode: str = "hooks", batch_size: int) -> None:
    """One backward pass through Opacus' ``mode`` wrapper gives every trainable parameter a
    ``grad_sample`` of first dimension ``batch_size``."""
    wrapped = prepare_module(module, mode)
    wrapped(inputs).sum().backward()
    for name, p in module.named_parameters():
        if p.requires_grad:
            assert p.grad_sample is not None and p.grad_sample.shape[0] == batch_size, name


def check_gradients_reach_every_parameter(module: nn.Module, inputs: Any) -> None:
    module.train()
    module.zero_grad()
    module(inputs).square().mean().backward()
    for name, p in module.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def check_seeded_build_is_deterministic(build, inputs: Any) -> None:
    """``build()`` twice under the same seed gives the same weights and outputs."""
    torch.manual_seed(0)
    a = build().eval()
    torch.manual_seed(0)
    b = build().eval()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    torch.testing.assert_close(a(inputs), b(inputs))


def check_dp_step(model: nn.Module, batch: dict[str, torch.Tensor], *, max_grad_norm: float = 1e-3,
                  noise_multiplier: float = 1.0) -> None:  # fmt: skip
    """One DP-SGD step through Opacus (GradSampleModule + DPOptimizer): every per-sample
    gradient is clipped to ``max_grad_norm`` before summing, Gaussian noise of std
    ``noise_multiplier * max_grad_norm`` is added, and the step moves the weights."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    torch.manual_seed(0)
    model.train()
    b = batch["present"].shape[0]
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = DPOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=noise_multiplier,
                            max_grad_norm=max_grad_norm, expected_batch_size=b)  # fmt: skip
    out = GradSampleModule(model)(batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], torch.ones(b))
    if hasattr(model, "auxiliary_loss"):
        loss = loss + model.auxiliary_loss(out, torch.ones(b))
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([p.grad_sample.reshape(b, -1) for p in params], dim=1)
    norms = flat.norm(dim=1)
    assert (norms > max_grad_norm).all(), "the clipping bound must bite for the check to mean anything"
    optimizer.step()
    clipped = flat * (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)[:, None]
    summed = torch.cat([p.summed_grad.reshape(-1) for p in params])
    torch.testing.assert_close(summed, clipped.sum(dim=0), rtol=1e-4, atol=1e-9)
    noise = torch.cat([(p.grad * b - p.summed_grad).reshape(-1) for p in params])
    assert abs(noise.std().item() / (noise_multiplier * max_grad_norm) - 1) < 0.25, noise.std().item()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters())), "the step moved no weight"

"""grad_sample_mode=auto: ew only where its per-sample gradients equal a per-row backward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from client import grad_sample_choice
from client.grad_sample_choice import choose_grad_sample_mode, ew_disagreement
from client.settings import PrivacySettings
from fusion_models.model import ModelSpec, build_model


def _inputs(rows: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(rows, 3, 32, 32, generator=g), "tabular": torch.randn(rows, 5, generator=g),
            "present": torch.ones(rows, 2, dtype=torch.bool)}  # fmt: skip


def _spec(image: dict, fusion: str = "concat") -> ModelSpec:
    return ModelSpec(modalities={"image": {"in_channels": 3, "spatial_dims": 2}, "tabular": {"in_features": 5}},
                     encoders={"image": image, "tabular": {"name": "mlp", "hidden": 16}}, fusion={"name": fusion},
                     feature_dim=16, out_dim=1)  # fmt: skip


class _BatchCoupled(nn.Module):
    """Each row's output depends on the other rows (centred over the batch): per-sample
    gradients of the batch are not each row's own, which the check must catch."""

    modalities = ["tabular"]

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["tabular"]
        return self.linear(x - x.mean(dim=0, keepdim=True))


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch):
    monkeypatch.setattr(grad_sample_choice, "_CHOSEN", {})


@pytest.mark.parametrize("fusion", ["concat", "hyperfusion"])
def test_ew_is_chosen_where_its_per_sample_gradients_are_right(fusion):
    model = build_model(_spec({"name": "cnn_small", "channels": [8, 16], "num_groups": 4}, fusion), seed=0)
    assert ew_disagreement(model, _inputs()) is None
    mode, why = choose_grad_sample_mode(model, _inputs())
    assert mode == "ew" and "per-row backward pass on 2 rows" in why


def test_hooks_where_ew_fails_on_the_model():
    model = build_model(_spec({"name": "densenet121", "num_groups": 8}), seed=0)
    mode, why = choose_grad_sample_mode(model, _inputs())
    assert mode == "hooks" and why.startswith("ew failed on this model: RuntimeError")


def test_hooks_where_ew_runs_but_its_gradients_are_not_each_rows_own():
    inputs = {"tabular": _inputs()["tabular"], "present": torch.ones(2, 1, dtype=torch.bool)}
    mode, why = choose_grad_sample_mode(_BatchCoupled(), inputs)
    assert mode == "hooks" and "per-sample gradient of linear.weight is off by" in why


def test_parameters_only_an_auxiliary_loss_trains_are_checked_through_it():
    """mm_dynamics' confidence heads learn only from its auxiliary loss: without the labels
    the check cannot reach them and refuses ew; with them it checks them."""
    model = build_model(_spec({"name": "cnn_small", "channels": [8, 16], "num_groups": 4}, "mm_dynamics"), seed=0)
    label = torch.tensor([0.0, 1.0])
    assert "cannot be checked" in ew_disagreement(model, _inputs())
    assert ew_disagreement(model, _inputs(), label) is None


def test_the_check_rows_are_those_with_the_most_modalities():
    present = torch.tensor([[True, False], [False, False], [True, True], [False, True], [True, True]])
    assert grad_sample_choice.check_rows(present) == [2, 4]


def test_the_check_runs_once_per_model_layout(monkeypatch):
    calls = []
    monkeypatch.setattr(grad_sample_choice, "ew_disagreement", lambda model, batch, label=None: calls.append(1))
    model = build_model(_spec({"name": "cnn_small", "channels": [8, 16], "num_groups": 4}), seed=0)
    for seed in (0, 1):  # other weights, same layout
        assert choose_grad_sample_mode(build_model(model.spec, seed=seed), _inputs())[0] == "ew"
    assert calls == [1]


class _Tied(nn.Module):
    """One linear layer used twice per row: ghost clipping refuses tied parameters."""

    modalities = ["tabular"]

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 5)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(self.linear(batch["tabular"])).sum(dim=1, keepdim=True)


def _small_model():
    return build_model(_spec({"name": "cnn_small", "channels": [8, 16], "num_groups": 4}), seed=0)


def test_ghost_norms_are_checked_against_a_per_row_backward_pass():
    assert grad_sample_choice.ghost_disagreement(_small_model(), _inputs()) is None
    tabular = {"tabular": _inputs()["tabular"], "present": torch.ones(2, 1, dtype=torch.bool)}
    assert "per-row gradient norms are off by" in grad_sample_choice.ghost_disagreement(_BatchCoupled(), tabular)
    assert "ghost clipping failed on this model: NotImplementedError" in grad_sample_choice.ghost_disagreement(
        _Tied(), tabular)


def test_ghost_is_refused_on_heads_with_an_auxiliary_batch_loss():
    model = build_model(_spec({"name": "cnn_small", "channels": [8, 16], "num_groups": 4}, "mm_dynamics"), seed=0)
    assert "auxiliary loss over the batch" in grad_sample_choice.ghost_disagreement(model, _inputs())


def test_auto_takes_ghost_only_where_the_per_sample_gradients_pass_the_bound():
    model = _small_model()
    size = grad_sample_choice.per_sample_gradient_bytes(model, 256)
    assert size == 256 * 4 * sum(p.numel() for p in model.parameters())
    mode, why = choose_grad_sample_mode(model, _inputs(), batch_size=256, ghost_above_bytes=size - 1)
    assert mode == "ghost" and "ghost clipping's per-row gradient norms equal a per-row backward pass on 2 rows" in why
    assert choose_grad_sample_mode(model, _inputs(), batch_size=256, ghost_above_bytes=size)[0] == "ew"


def test_auto_falls_back_from_ghost_with_the_reason():
    model = build_model(_spec({"name": "cnn_small", "channels": [8, 16], "num_groups": 4}, "mm_dynamics"), seed=0)
    mode, why = choose_grad_sample_mode(model, _inputs(), torch.tensor([0.0, 1.0]), batch_size=256, ghost_above_bytes=1)
    assert mode == "ew" and "not ghost clipping:" in why and "auxiliary loss over the batch" in why


def test_auto_takes_ghost_on_densenet_at_the_default_dp_batch():
    """MONAI's DenseNet121: 1.7 GiB of per-sample gradients at a batch of 64, under the default
    2 GiB (hooks, since ew fails on it); 6.7 GiB at privacy=dp's batch of 256 (ghost clipping)."""
    model = build_model(_spec({"name": "densenet121", "num_groups": 8}), seed=0)
    bound = PrivacySettings(name="dp", target_epsilon=5.0).ghost_above_mib * 2**20
    assert choose_grad_sample_mode(model, _inputs(), batch_size=64, ghost_above_bytes=bound)[0] == "hooks"
    mode, why = choose_grad_sample_mode(model, _inputs(), batch_size=256, ghost_above_bytes=bound)
    assert mode == "ghost", why

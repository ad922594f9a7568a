"""grad_sample_mode=auto: ew only where its per-sample gradients equal a per-row backward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from client import grad_sample_choice
from client.grad_sample_choice import choose_grad_sample_mode, ew_disagreement
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

"""benchmarks/dp_step_time.py: every fusion head and both image encoders are timed, and the DP
step is the project's own DPRound (it clips and adds noise)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import dp_step_time
from fusion_models.fusion import FUSIONS


def test_every_fusion_head_and_both_image_encoders_are_benchmarked():
    names = set(dp_step_time.models())
    assert {"cnn_small+concat", "densenet121+concat"} <= names
    assert {name.split("+", 1)[1] for name in names} == set(FUSIONS.names())


def test_a_timed_dp_step_goes_through_dp_round(monkeypatch):
    seen = []
    original = dp_step_time.DPRound.attach

    def spy(self, model, optimizer, loader, **kwargs):
        forward, dp_optimizer, private_loader = original(self, model, optimizer, loader, **kwargs)
        seen.append((self.plan.grad_sample_mode, type(dp_optimizer).__name__, dp_optimizer.noise_multiplier))
        return forward, dp_optimizer, private_loader

    monkeypatch.setattr(dp_step_time.DPRound, "attach", spy)
    torch.manual_seed(0)
    result = dp_step_time.time_model(dp_step_time.models()["cnn_small+concat"], batch_size=8, steps=1,
                                     modes=("hooks",))  # fmt: skip
    assert seen == [("hooks", "DPOptimizer", 1.0)]
    assert result["no_dp_s"] > 0 and result["modes"]["hooks"]["ratio"] > 0
    assert result["modes"]["hooks"]["dp_s"] == pytest.approx(result["modes"]["hooks"]["ratio"] * result["no_dp_s"])

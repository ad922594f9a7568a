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
    # the profile: each phase of the DP step timed apart, clip+noise only with DP
    assert set(result["modes"]["hooks"]["phases_s"]) == set(dp_step_time.PHASES)
    assert set(result["no_dp_phases_s"]) == set(dp_step_time.PHASES) - {"clip+noise"}
    assert all(v > 0 for v in result["modes"]["hooks"]["phases_s"].values())
    assert sum(result["modes"]["hooks"]["phases_s"].values()) <= 1.5 * result["modes"]["hooks"]["dp_s"]
    table = dp_step_time._phase_table({"m": result})
    assert table[2].startswith("| m | no DP |") and " – " in table[2] and table[3].startswith("| m | hooks |")


def _ew_per_sample_gradients(spec, inputs, target):
    from opacus.grad_sample import wrap_model

    from client.privacy import TensorArguments
    from fusion_models.model import build_model

    model = build_model(spec, seed=0).eval()
    wrapped = wrap_model(TensorArguments(model), grad_sample_mode="ew", batch_first=True, loss_reduction="sum")
    out = wrapped(inputs["present"], *(inputs[m] for m in model.modalities))
    torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], target, reduction="sum").backward()
    return [p.grad_sample.detach() for p in model.parameters()]


def _loop_per_sample_gradients(spec, inputs, target):
    from fusion_models.model import build_model

    model = build_model(spec, seed=0).eval()
    grads = []
    for i in range(len(target)):
        model.zero_grad()
        one = {k: v[i : i + 1] for k, v in inputs.items()}
        torch.nn.functional.binary_cross_entropy_with_logits(
            model(one)[:, 0], target[i : i + 1], reduction="sum"
        ).backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
    return [torch.stack(per_param) for per_param in zip(*grads)]


@pytest.mark.parametrize("name", ["cnn_small+concat", "cnn_small+hyperfusion"])
def test_ew_per_sample_gradients_are_right_on_the_small_cnn_models(name):
    """The README's reading of the ew column: on these models ew's per-sample gradients equal a
    per-sample backward loop, so its speed is a correct result."""
    torch.manual_seed(0)
    spec = dp_step_time.models()[name]
    batch = dp_step_time._batch(3, seed=0)
    inputs = {k: v for k, v in batch.items() if k != "target"}
    ew = _ew_per_sample_gradients(spec, inputs, batch["target"])
    loop = _loop_per_sample_gradients(spec, inputs, batch["target"])
    assert len(ew) == len(loop)
    for a, b in zip(ew, loop):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_ew_raises_on_densenet121_at_a_small_batch():
    """Why ew is not the default: torch's expanded-weights convolution fails on MONAI's DenseNet."""
    spec = dp_step_time.models()["densenet121+concat"]
    batch = dp_step_time._batch(3, seed=0)
    inputs = {k: v for k, v in batch.items() if k != "target"}
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        _ew_per_sample_gradients(spec, inputs, batch["target"])

"""SeriesGRU ("gru") on masked irregular series [B, 2C+1, T]."""

import pytest
import torch
from opacus import GradSampleModule
from opacus.grad_sample import GradSampleModuleExpandedWeights
from opacus.validators import ModuleValidator

from fusion_models.encoders import ENCODERS
from fusion_models.model import ModelSpec, build_model

C, T = 3, 16


def series_batch(b: int = 4, *, observed: list[int] | None = None, seed: int = 0) -> torch.Tensor:
    """[b, 2C+1, T] with raw-scale values, random masks, increasing times; row i has
    ``observed[i]`` steps, then padding (all zero)."""
    g = torch.Generator().manual_seed(seed)
    observed = observed if observed is not None else [T] * b
    b = len(observed)
    x = torch.zeros(b, 2 * C + 1, T)
    for i, n in enumerate(observed):
        masks = (torch.rand(C, n, generator=g) < 0.6).float()
        masks[0] = 1.0  # every kept row has at least one measurement
        x[i, :C, :n] = (torch.randn(C, n, generator=g) * 20 + 90) * masks
        x[i, C : 2 * C, :n] = masks
        x[i, 2 * C, :n] = torch.sort(torch.rand(n, generator=g)).values
    return x


def _encoder(**kwargs):
    torch.manual_seed(0)
    return ENCODERS.get("gru")(in_channels=2 * C + 1, out_dim=8, **{"hidden": 8, **kwargs})


@pytest.mark.parametrize("kwargs", [{}, {"hidden": 5}, {"dropout": 0.5}])
def test_output_shape_and_update_gate_weights(kwargs):
    enc = _encoder(**kwargs).eval()
    out = enc(series_batch(observed=[16, 5, 1, 0]))
    assert out.shape == (4, 8) and torch.isfinite(out).all()
    weight = enc.last_explanations["step_weight"]
    assert weight.shape == (4, T) and not weight.requires_grad
    assert ((weight >= 0) & (weight <= 1)).all()
    assert (weight[1, 5:] == 0).all() and (weight[3] == 0).all() and (weight[0] > 0).all()


def test_unobserved_steps_keep_the_hidden_state():
    enc = _encoder().eval()
    x = series_batch(observed=[6])
    gap = x.clone()
    # Insert unobserved steps (values but no mask) between observed ones: the state skips them.
    gap[:, :, 3:] = 0
    gap[:, :, 5:11] = x[:, :, 3:9]
    gap[:, :C, 3:5] = 99.0
    gap[:, 2 * C, 3:5] = x[:, 2 * C, 2:3]  # same time as the step before: no time gap added
    torch.testing.assert_close(enc(x), enc(gap))


def test_padding_and_unobserved_values_do_not_change_the_output():
    enc = _encoder().eval()
    x = series_batch(observed=[10, 10])
    noisy = x.clone()
    noisy[:, :C, 10:] = 1e3 * torch.randn(2, C, T - 10)  # values on padded steps
    unmeasured = x[:, C : 2 * C] == 0
    noisy[:, :C][unmeasured] = 55.0  # values whose mask is 0
    torch.testing.assert_close(enc(x), enc(noisy))


def test_a_missing_series_encodes_to_a_constant_whatever_the_values():
    enc = _encoder().eval()
    empty = torch.zeros(3, 2 * C + 1, T)
    junk = empty.clone()
    junk[:, :C] = torch.randn(3, C, T) * 100  # values, but every mask 0
    junk[:, 2 * C] = torch.rand(3, T)
    torch.testing.assert_close(enc(empty), enc(junk))


def test_complete_partly_and_wholly_missing_batches_in_a_model():
    spec = ModelSpec(
        modalities={"tabular": {"in_features": 4}, "series": {"in_channels": 2 * C + 1}},
        encoders={"tabular": {"name": "mlp"}, "series": {"name": "gru", "hidden": 8}},
        fusion={"name": "concat"}, feature_dim=8, out_dim=1,
    )  # fmt: skip
    model = build_model(spec, seed=0).eval()
    tab = torch.randn(4, 4)
    for present in ([True] * 4, [True, False, True, False], [False] * 4):
        mask = torch.tensor(present)
        series = series_batch() * mask[:, None, None]
        batch = {"tabular": tab, "series": series, "present": torch.stack([torch.ones(4, dtype=torch.bool), mask], 1)}
        assert torch.isfinite(model(batch)).all()


def test_same_seed_same_output():
    x = series_batch()
    torch.testing.assert_close(_encoder().eval()(x), _encoder().eval()(x))


def test_bad_channel_counts_are_refused():
    with pytest.raises(ValueError, match="2C \\+ 1"):
        ENCODERS.get("gru")(in_channels=4, out_dim=8)
    with pytest.raises(ValueError, match="expected a series batch"):
        _encoder()(torch.zeros(2, 5, T))


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_dp_per_sample_gradients(mode):
    enc = _encoder()
    assert ModuleValidator.validate(enc, strict=False) == []
    if mode == "ew":
        wrapped = GradSampleModuleExpandedWeights(enc, batch_first=True, loss_reduction="sum")
    else:
        wrapped = GradSampleModule(enc, batch_first=True, loss_reduction="sum", force_functorch=mode == "functorch")
    wrapped(series_batch(b=3, observed=[16, 4, 0])).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad_sample is not None and p.grad_sample.shape[0] == 3, name


def test_hooks_per_sample_gradients_match_one_sample_at_a_time():
    enc = _encoder()
    x = series_batch(b=3, observed=[16, 7, 2])
    wrapped = GradSampleModule(enc, batch_first=True, loss_reduction="sum")
    wrapped(x).sum().backward()
    for i in range(3):
        ref = _encoder()
        ref(x[i : i + 1]).sum().backward()
        for (name, p), q in zip(enc.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad_sample[i], q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_every_parameter_gets_a_gradient():
    enc = _encoder()
    enc(series_batch()).pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

"""What every series encoder ("conv1d", "gru") must do on masked irregular series
[B, 2C+1, T]: ignore padding and unmeasured values, encode a missing series to a constant,
refuse wrong channel counts, and give exact per-sample gradients under Opacus."""

import pytest
import torch
from opacus import GradSampleModule
from opacus.grad_sample import GradSampleModuleExpandedWeights
from opacus.validators import ModuleValidator

from fusion_models.encoders import ENCODERS
from fusion_models.model import ModelSpec, build_model
from tests.fusion_models.encoders.series_checks import SMALL, C, T, make_encoder, series_batch

NAMES = sorted(SMALL)


@pytest.mark.parametrize("name", NAMES)
def test_padding_and_unobserved_values_do_not_change_the_output(name):
    enc = make_encoder(name).eval()
    x = series_batch(observed=[10, 10])
    noisy = x.clone()
    noisy[:, :C, 10:] = 1e3 * torch.randn(2, C, T - 10)  # values on padded steps
    unmeasured = x[:, C : 2 * C] == 0
    noisy[:, :C][unmeasured] = 55.0  # values whose mask is 0
    torch.testing.assert_close(enc(x), enc(noisy))


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_series_encodes_to_a_constant_whatever_the_values(name):
    enc = make_encoder(name).eval()
    empty = torch.zeros(3, 2 * C + 1, T)
    junk = empty.clone()
    junk[:, :C] = torch.randn(3, C, T) * 100  # values, but every mask 0
    junk[:, 2 * C] = torch.rand(3, T)
    torch.testing.assert_close(enc(empty), enc(junk))


@pytest.mark.parametrize("name", NAMES)
def test_complete_partly_and_wholly_missing_batches_in_a_model(name):
    spec = ModelSpec(
        modalities={"tabular": {"in_features": 4}, "series": {"in_channels": 2 * C + 1}},
        encoders={"tabular": {"name": "mlp"}, "series": {"name": name, **SMALL[name]}},
        fusion={"name": "concat"}, feature_dim=8, out_dim=1,
    )  # fmt: skip
    model = build_model(spec, seed=0).eval()
    tab = torch.randn(4, 4)
    for present in ([True] * 4, [True, False, True, False], [False] * 4):
        mask = torch.tensor(present)
        series = series_batch() * mask[:, None, None]
        batch = {"tabular": tab, "series": series, "present": torch.stack([torch.ones(4, dtype=torch.bool), mask], 1)}
        assert torch.isfinite(model(batch)).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name):
    x = series_batch()
    torch.testing.assert_close(make_encoder(name).eval()(x), make_encoder(name).eval()(x))


@pytest.mark.parametrize("name", NAMES)
def test_bad_channel_counts_are_refused(name):
    with pytest.raises(ValueError, match="2C \\+ 1"):
        ENCODERS.get(name)(in_channels=4, out_dim=8)
    with pytest.raises(ValueError, match="expected a series batch"):
        make_encoder(name)(torch.zeros(2, 5, T))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_dp_per_sample_gradients(name, mode):
    enc = make_encoder(name)
    assert ModuleValidator.validate(enc, strict=False) == []
    if mode == "ew":
        wrapped = GradSampleModuleExpandedWeights(enc, batch_first=True, loss_reduction="sum")
    else:
        wrapped = GradSampleModule(enc, batch_first=True, loss_reduction="sum", force_functorch=mode == "functorch")
    wrapped(series_batch(b=3, observed=[16, 4, 0])).sum().backward()
    for param, p in enc.named_parameters():
        assert p.grad_sample is not None and p.grad_sample.shape[0] == 3, param


@pytest.mark.parametrize("name", NAMES)
def test_hooks_per_sample_gradients_match_one_sample_at_a_time(name):
    enc = make_encoder(name)
    x = series_batch(b=3, observed=[16, 7, 2])
    wrapped = GradSampleModule(enc, batch_first=True, loss_reduction="sum")
    wrapped(x).sum().backward()
    for i in range(3):
        ref = make_encoder(name)
        ref(x[i : i + 1]).sum().backward()
        for (param, p), q in zip(enc.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad_sample[i], q.grad, atol=1e-5, rtol=1e-4, msg=param)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name):
    enc = make_encoder(name)
    enc(series_batch()).pow(2).sum().backward()
    for param, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, param

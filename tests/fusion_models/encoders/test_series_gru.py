"""SeriesGRU ("gru") on masked irregular series [B, 2C+1, T]."""

import pytest
import torch

from tests.fusion_models.encoders.series_checks import C, T, make_encoder, series_batch


def _encoder(**kwargs):
    return make_encoder("gru", **kwargs)


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

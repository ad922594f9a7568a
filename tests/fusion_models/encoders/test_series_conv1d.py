"""SeriesConv1d ("conv1d") on masked irregular series [B, 2C+1, T]."""

import pytest
import torch

from tests.fusion_models.encoders.series_checks import T, make_encoder, series_batch


def _encoder(**kwargs):
    return make_encoder("conv1d", **kwargs)


@pytest.mark.parametrize("kwargs", [{}, {"blocks": 1, "kernel_size": 3}, {"blocks": 4}])
def test_output_shape_and_pooling_weights(kwargs):
    enc = _encoder(**kwargs)
    out = enc(series_batch(observed=[16, 5, 1, 0]))
    assert out.shape == (4, 8) and torch.isfinite(out).all()
    weight = enc.last_explanations["step_weight"]
    assert weight.shape == (4, T) and not weight.requires_grad
    torch.testing.assert_close(weight.sum(dim=1), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert (weight[1, 5:] == 0).all() and (weight >= 0).all()

"""ResNetEncoder ("resnet"): MONAI ResNet with GroupNorm, 2D and 3D, DP-ready."""

import pytest
import torch

from fusion_models.encoders import ENCODERS
from tests.fusion_models.encoders.encoder_checks import (
    check_dp_step,
    check_gradients_reach_every_parameter,
    check_model_masking,
    check_per_sample_grads,
    check_seeded_build_is_deterministic,
    check_validator,
    two_modality_model,
)

TINY = {"widen_factor": 0.0625, "num_groups": 4}  # stage widths 4, 8, 16, 32


def _encoder(in_channels=3, spatial_dims=2, **kwargs):
    return ENCODERS.get("resnet")(in_channels=in_channels, out_dim=8, spatial_dims=spatial_dims, **{**TINY, **kwargs})


@pytest.mark.parametrize(
    "in_channels, spatial_dims, shape, kwargs",
    [
        (3, 2, (3, 32, 32), {"depth": 10}),
        (3, 2, (3, 32, 32), {"depth": 18, "conv1_stride": 1, "no_max_pool": True}),
        (1, 2, (1, 20, 28), {"depth": 34}),
        (1, 3, (1, 16, 16, 16), {"depth": 10}),
        (2, 3, (2, 16, 12, 8), {"depth": 18}),
    ],
)
def test_output_shape_2d_and_3d(in_channels, spatial_dims, shape, kwargs):
    enc = _encoder(in_channels, spatial_dims, **kwargs).eval()
    out = enc(torch.randn(2, *shape))
    assert out.shape == (2, 8) and torch.isfinite(out).all() and enc.out_dim == 8


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_no_batchnorm_and_no_inplace_activation(spatial_dims):
    enc = _encoder(spatial_dims=spatial_dims, depth=18)
    check_validator(enc)
    assert not any(getattr(m, "inplace", False) for m in enc.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in enc.backbone.layer4.modules())


@pytest.mark.parametrize(
    "kwargs, match",
    [({"depth": 50}, "depth"), ({"num_groups": 3}, "num_groups"), ({"spatial_dims": 1}, "spatial_dims")],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _encoder(**kwargs)


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_per_sample_gradients_2d(mode):
    torch.manual_seed(0)
    check_per_sample_grads(_encoder(depth=10), torch.randn(3, 3, 16, 16), mode=mode, batch_size=3)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    check_gradients_reach_every_parameter(_encoder(depth=10), torch.randn(4, 3, 16, 16))


def test_seeded_build_is_deterministic():
    check_seeded_build_is_deterministic(lambda: _encoder(depth=10), torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize("spatial_dims, shape", [(2, (3, 16, 16)), (3, (1, 16, 16, 16))])
def test_in_a_model_missing_images_are_masked_and_dp_step_works(spatial_dims, shape):
    encoder = {"name": "resnet", "depth": 10, **TINY}
    model = two_modality_model("image", {"in_channels": shape[0], "spatial_dims": spatial_dims}, encoder)
    check_validator(model)
    x = torch.randn(4, *shape)
    check_model_masking(model, "image", x)
    check_dp_step(model, {"image": x, **_others(4)})


def _others(b):
    return {"omics": torch.randn(b, 6), "present": torch.ones(b, 2, dtype=torch.bool)}

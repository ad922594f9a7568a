"""DenseNetEncoder ("densenet121"): MONAI DenseNet-121 with GroupNorm, 2D and 3D, DP-ready."""

import pytest
import torch

from fusion_models.encoders import ENCODERS
from fusion_models.encoders.image_densenet import _norm_widths
from tests.fusion_models.encoders.encoder_checks import (
    check_dp_step,
    check_gradients_reach_every_parameter,
    check_model_masking,
    check_per_sample_grads,
    check_seeded_build_is_deterministic,
    check_validator,
    two_modality_model,
)

TINY = {"init_features": 8, "growth_rate": 8, "block_config": (2, 2), "bn_size": 2, "num_groups": 4}


def _encoder(in_channels=3, spatial_dims=2, **kwargs):
    return ENCODERS.get("densenet121")(
        in_channels=in_channels, out_dim=8, spatial_dims=spatial_dims, **{**TINY, **kwargs}
    )


@pytest.mark.parametrize(
    "in_channels, spatial_dims, shape, kwargs",
    [
        (3, 2, (3, 32, 32), {}),
        (1, 2, (1, 24, 40), {"block_config": (1, 2, 1)}),
        (1, 3, (1, 16, 16, 16), {}),
        (2, 3, (2, 16, 12, 8), {"dropout": 0.2}),
    ],
)
def test_output_shape_2d_and_3d(in_channels, spatial_dims, shape, kwargs):
    enc = _encoder(in_channels, spatial_dims, **kwargs).eval()
    out = enc(torch.randn(2, *shape))
    assert out.shape == (2, 8) and torch.isfinite(out).all() and enc.out_dim == 8


def test_the_default_is_densenet121_with_groupnorm_and_no_inplace_relu():
    enc = ENCODERS.get("densenet121")(in_channels=3, out_dim=8)
    check_validator(enc)
    assert not any(getattr(m, "inplace", False) for m in enc.modules())
    norms = [m for m in enc.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 2 * (6 + 12 + 24 + 16) + 3 + 2  # two per dense layer, 3 transitions, stem, final
    assert {m.num_channels for m in norms} == set(_norm_widths(64, 32, (6, 12, 24, 16), 4))


@pytest.mark.parametrize("kwargs", [{"num_groups": 3}, {"growth_rate": 6}, {"spatial_dims": 1}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError, match="num_groups|spatial_dims"):
        _encoder(**kwargs)


@pytest.mark.parametrize(
    "mode",
    [
        "hooks",
        "functorch",
        pytest.param("ew", marks=pytest.mark.xfail(reason="expanded weights fail on MONAI DenseNet (opacus 1.6)")),
    ],
)
def test_per_sample_gradients_2d(mode):
    torch.manual_seed(0)
    check_per_sample_grads(_encoder(), torch.randn(3, 3, 16, 16), mode=mode, batch_size=3)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    check_gradients_reach_every_parameter(_encoder(), torch.randn(4, 3, 16, 16))


def test_seeded_build_is_deterministic():
    check_seeded_build_is_deterministic(_encoder, torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize("spatial_dims, shape", [(2, (3, 16, 16)), (3, (1, 8, 8, 8))])
def test_in_a_model_missing_images_are_masked_and_dp_step_works(spatial_dims, shape):
    model = two_modality_model(
        "image", {"in_channels": shape[0], "spatial_dims": spatial_dims}, {"name": "densenet121", **TINY}
    )
    check_validator(model)
    x = torch.randn(4, *shape)
    check_model_masking(model, "image", x)
    batch = {"image": x, "omics": torch.randn(4, 6), "present": torch.ones(4, 2, dtype=torch.bool)}
    check_dp_step(model, batch)

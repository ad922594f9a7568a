"""A real DP-SGD step (per-sample clipping, Gaussian noise, the update) through every fusion
head, with its auxiliary loss where it has one."""

import pytest

from fusion_models.fusion import FUSIONS
from tests.fusion_models.encoders.encoder_checks import check_dp_step
from tests.fusion_models.fusion import _head_checks as checks
from tests.fusion_models.fusion._head_checks import single_thread  # noqa: F401 - fixture

# head -> kwargs, as each head's own test file sizes it
HEADS = {
    "concat": {"dropout": 0.0},
    "cross_attention": {"dim": 8, "tokens": 3, "heads": 2, "layers": 2, "hidden": 16},
    "gmu": {"heads": 3, "head_dim": 4, "hidden": 16},
    "late": {},
    "masked_transformer": {"dim": 8, "heads": 2, "layers": 2},
    "mm_dynamics": {"hidden": 6, "dropout": 0.0},
    "prototype": {"tokens": 2, "prototypes": 3, "registers": 2, "dim": 8, "heads": 2, "hidden": 8, "dropout": 0.0},
    "single": {"modality": "tabular"},
}


def test_every_registered_head_is_covered():
    # film and hyperfusion are concat heads on a conditioned image encoder: their DP step is
    # in tests/fusion_models/encoders/test_image_{film,hyper}.py
    assert set(HEADS) | {"film", "hyperfusion"} == set(FUSIONS.names())


@pytest.mark.parametrize("name", sorted(HEADS))
def test_dp_step_works(name):
    modalities = checks.MODALITY_SETS[3]
    model = checks.make_model(name, modalities, **HEADS[name])
    batch = checks.make_batch(modalities, checks.presence("partly_missing", len(modalities)))
    check_dp_step(model, batch)

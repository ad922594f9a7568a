import pytest
import torch

from tests.fusion_models.fusion import _head_checks as checks
from tests.fusion_models.fusion._head_checks import single_thread  # noqa: F401 (autouse fixture)

NAME = "cross_attention"
COUNTS = sorted(checks.MODALITY_SETS)
SMALL = {"dim": 8, "tokens": 3, "heads": 2, "layers": 2, "hidden": 16}


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_shapes_and_attention(count, pattern):
    explained = checks.check_output_shape(NAME, checks.MODALITY_SETS[count], pattern, out_dim=3, **SMALL)
    attention = explained["fusion.attention"]  # [B, M (query), M (key)]
    present = checks.presence(pattern, count)
    assert attention.shape == (checks.B, count, count)
    assert ((attention >= 0) & (attention <= 1 + 1e-6)).all()
    torch.testing.assert_close(attention.sum(dim=2), present.float())  # present rows sum to 1, missing rows 0
    assert (attention.permute(0, 2, 1)[~present] == 0).all()  # nobody attends to a missing modality
    others = present.sum(dim=1) > 1
    diagonal = attention.diagonal(dim1=1, dim2=2)  # [B, M]
    assert (diagonal[others] == 0).all()  # with a partner present, attention is cross only
    alone = ~others
    torch.testing.assert_close(diagonal[alone], present[alone].float())  # alone: attends to itself


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_missing_inputs_do_not_leak(count, pattern):
    checks.check_missing_inputs_do_not_leak(NAME, checks.MODALITY_SETS[count], pattern, **SMALL)


@pytest.mark.parametrize("count", [2, 3])
def test_the_mask_matters(count):
    checks.check_mask_matters(NAME, checks.MODALITY_SETS[count], **SMALL)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="tokens"):
        checks.make_model(NAME, checks.MODALITY_SETS[2], tokens=0)
    with pytest.raises(ValueError, match="divide"):
        checks.make_model(NAME, checks.MODALITY_SETS[2], dim=8, heads=3)


@pytest.mark.parametrize("count", COUNTS)
def test_nothing_present_is_finite(count):
    checks.check_nothing_present_is_finite(NAME, checks.MODALITY_SETS[count], **SMALL)


@pytest.mark.parametrize("count", COUNTS)
def test_determinism_and_validator(count):
    checks.check_determinism(NAME, checks.MODALITY_SETS[count], **SMALL)
    checks.check_validator(NAME, checks.MODALITY_SETS[count], **SMALL)


@pytest.mark.parametrize("count, mode", [(c, "hooks") for c in COUNTS] + [(3, "functorch"), (3, "ew")])
def test_per_sample_gradients(count, mode):
    checks.check_per_sample_gradients(NAME, checks.MODALITY_SETS[count], mode, **SMALL)


@pytest.mark.parametrize("count", COUNTS)
def test_gradients_reach_every_parameter(count):
    checks.check_gradients_reach_parameters(NAME, checks.MODALITY_SETS[count], **SMALL)

import pytest
import torch

from tests.fusion_models.fusion import _head_checks as checks
from tests.fusion_models.fusion._head_checks import single_thread  # noqa: F401 (autouse fixture)

NAME = "late"
COUNTS = sorted(checks.MODALITY_SETS)


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_shapes_and_modality_weights(count, pattern):
    modalities = checks.MODALITY_SETS[count]
    explained = checks.check_output_shape(NAME, modalities, pattern, out_dim=3)
    weights = explained["fusion.modality_weight"]
    present = checks.presence(pattern, count)
    assert weights.shape == (checks.B, count)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(checks.B))
    assert (weights[~present] == 0).all()
    assert (weights[present] > 0).all()


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_missing_inputs_do_not_leak(count, pattern):
    checks.check_missing_inputs_do_not_leak(NAME, checks.MODALITY_SETS[count], pattern)


@pytest.mark.parametrize("count", [2, 3])
def test_the_mask_matters(count):
    checks.check_mask_matters(NAME, checks.MODALITY_SETS[count])


def test_one_present_modality_is_predicted_by_its_own_head_alone():
    model = checks.make_model(NAME, checks.MODALITY_SETS[3])
    present = checks.presence("all_but_one_missing", 3)
    batch = checks.make_batch(checks.MODALITY_SETS[3], present)
    with torch.no_grad():
        out = model(batch)
        for i in range(checks.B):
            m = checks.MODALITY_SETS[3][int(present[i].nonzero())]
            features = model.encoders[m](batch[m][i : i + 1])
            torch.testing.assert_close(out[i : i + 1], model.fusion.heads[m](features))


def test_weights_start_equal_and_renormalise_over_present_modalities():
    model = checks.make_model(NAME, checks.MODALITY_SETS[3])
    with torch.no_grad():
        model.fusion.logits.weight.copy_(torch.tensor([[0.0, 1.0, 2.0]]))
    present = torch.tensor([[True, True, True], [True, False, True]])
    model(checks.make_batch(checks.MODALITY_SETS[3], present))
    weights = model.explanations()["fusion.modality_weight"]
    torch.testing.assert_close(weights[0], torch.softmax(torch.tensor([0.0, 1.0, 2.0]), dim=0))
    torch.testing.assert_close(weights[1], torch.tensor([1 / (1 + torch.e**2), 0.0, torch.e**2 / (1 + torch.e**2)]))
    assert checks.make_model(NAME, checks.MODALITY_SETS[1]).fusion.logits is None


@pytest.mark.parametrize("count", COUNTS)
def test_nothing_present_is_finite(count):
    checks.check_nothing_present_is_finite(NAME, checks.MODALITY_SETS[count])


@pytest.mark.parametrize("count", COUNTS)
def test_determinism_and_validator(count):
    checks.check_determinism(NAME, checks.MODALITY_SETS[count])
    checks.check_validator(NAME, checks.MODALITY_SETS[count])


@pytest.mark.parametrize("count, mode", [(c, "hooks") for c in COUNTS] + [(3, "functorch"), (3, "ew")])
def test_per_sample_gradients(count, mode):
    checks.check_per_sample_gradients(NAME, checks.MODALITY_SETS[count], mode)


@pytest.mark.parametrize("count", COUNTS)
def test_gradients_reach_every_parameter(count):
    checks.check_gradients_reach_parameters(NAME, checks.MODALITY_SETS[count])

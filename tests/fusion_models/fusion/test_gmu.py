import pytest
import torch

from tests.fusion_models.fusion import _head_checks as checks
from tests.fusion_models.fusion._head_checks import single_thread  # noqa: F401 (autouse fixture)

NAME = "gmu"
COUNTS = sorted(checks.MODALITY_SETS)
SMALL = {"heads": 3, "head_dim": 4, "hidden": 16}


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_shapes_and_gates(count, pattern):
    explained = checks.check_output_shape(NAME, checks.MODALITY_SETS[count], pattern, out_dim=3, **SMALL)
    gate = explained["fusion.gate"]
    present = checks.presence(pattern, count)
    assert gate.shape == (checks.B, SMALL["heads"], count)
    assert ((gate >= 0) & (gate <= 1)).all()
    torch.testing.assert_close(gate.sum(dim=2), torch.ones(checks.B, SMALL["heads"]))
    assert (gate.permute(0, 2, 1)[~present] == 0).all()  # a missing modality: gate 0 in every head


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_missing_inputs_do_not_leak(count, pattern):
    checks.check_missing_inputs_do_not_leak(NAME, checks.MODALITY_SETS[count], pattern, **SMALL)


@pytest.mark.parametrize("count", [2, 3])
def test_the_mask_matters(count):
    checks.check_mask_matters(NAME, checks.MODALITY_SETS[count], **SMALL)


def test_two_modalities_reduce_to_the_sigmoid_gate_of_arevalo_et_al():
    model = checks.make_model(NAME, checks.MODALITY_SETS[2], **SMALL)
    batch = checks.make_batch(checks.MODALITY_SETS[2], checks.presence("complete", 2))
    model(batch)
    gate = model.explanations()["fusion.gate"]  # [B, heads, 2]
    fusion = model.fusion
    with torch.no_grad():
        features = [model.encoders[m](batch[m]) for m in checks.MODALITY_SETS[2]]
        logits = fusion.gate(torch.cat(features + [torch.ones(checks.B, 2)], dim=1)).reshape(
            checks.B, SMALL["heads"], 2
        )
    torch.testing.assert_close(gate[..., 0], torch.sigmoid(logits[..., 0] - logits[..., 1]))
    assert checks.make_model(NAME, checks.MODALITY_SETS[1], **SMALL).fusion.gate is None


def test_heads_must_be_positive():
    with pytest.raises(ValueError, match="heads"):
        checks.make_model(NAME, checks.MODALITY_SETS[2], heads=0)


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

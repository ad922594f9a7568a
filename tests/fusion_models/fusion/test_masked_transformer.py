import pytest
import torch

from tests.fusion_models.fusion import _head_checks as checks
from tests.fusion_models.fusion._head_checks import single_thread  # noqa: F401 (autouse fixture)

NAME = "masked_transformer"
COUNTS = sorted(checks.MODALITY_SETS)
SMALL = {"dim": 8, "heads": 2, "layers": 2}


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_shapes_and_cls_attention(count, pattern):
    explained = checks.check_output_shape(NAME, checks.MODALITY_SETS[count], pattern, out_dim=3, **SMALL)
    attention = explained["fusion.cls_attention"]
    present = checks.presence(pattern, count)
    assert attention.shape == (checks.B, count)
    assert ((attention >= 0) & (attention <= 1 + 1e-6)).all()
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(checks.B))
    assert (attention[~present] == 0).all()


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_missing_inputs_do_not_leak(count, pattern):
    checks.check_missing_inputs_do_not_leak(NAME, checks.MODALITY_SETS[count], pattern, **SMALL)


@pytest.mark.parametrize("count", [2, 3])
def test_the_mask_matters(count):
    checks.check_mask_matters(NAME, checks.MODALITY_SETS[count], **SMALL)


def test_missing_slots_hold_their_learned_token_and_reach_cls_only_through_it():
    model = checks.make_model(NAME, checks.MODALITY_SETS[2], **SMALL)
    present = torch.tensor([[False, True]] * checks.B)
    batch = checks.make_batch(checks.MODALITY_SETS[2], present)
    with torch.no_grad():
        before = model(batch)
        # (random shifts: LayerNorm would hide a constant one)
        model.fusion.missing_token.weight[1] += torch.randn(SMALL["dim"])  # tabular is present: unused
        torch.testing.assert_close(model(batch), before)
        model.fusion.missing_token.weight[0] += torch.randn(SMALL["dim"])  # image is missing: informs [CLS]
        assert not torch.isclose(model(batch), before).all()


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="layers"):
        checks.make_model(NAME, checks.MODALITY_SETS[2], layers=0)
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
    # A missing modality's learned token learns only from samples that lack that modality.
    # With one modality, [CLS] has a single key in the last block, so that block's query and
    # key projections (read only by [CLS] there) get no gradient by construction.
    last = f"blocks.{SMALL['layers'] - 1}.attention"
    inert = (f"{last}.query", f"{last}.key") if count == 1 else ()
    checks.check_gradients_reach_parameters(
        NAME, checks.MODALITY_SETS[count], learns_from_missing=("missing_token",), inert=inert, **SMALL
    )

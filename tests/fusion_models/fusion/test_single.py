import pytest
import torch

from tests.fusion_models.fusion import _head_checks as checks
from tests.fusion_models.fusion._head_checks import single_thread  # noqa: F401 (autouse fixture)

NAME = "single"
COUNTS = sorted(checks.MODALITY_SETS)
TABULAR = {"modality": "tabular"}  # in every modality set


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_shapes_and_present_flag(count, pattern):
    modalities = checks.MODALITY_SETS[count]
    explained = checks.check_output_shape(NAME, modalities, pattern, out_dim=3, **TABULAR)
    index = modalities.index("tabular")
    torch.testing.assert_close(explained["fusion.present"], checks.presence(pattern, count)[:, index])


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
@pytest.mark.parametrize("modality", ["image", "tabular"])
def test_missing_inputs_do_not_leak(count, pattern, modality):
    if modality not in checks.MODALITY_SETS[count]:
        pytest.skip(f"{modality} is not in {checks.MODALITY_SETS[count]}")
    checks.check_missing_inputs_do_not_leak(NAME, checks.MODALITY_SETS[count], pattern, modality=modality)


def test_only_its_modality_is_used_and_the_others_are_frozen():
    model = checks.make_model(NAME, checks.MODALITY_SETS[3], modality="image")
    assert model.used_modalities == ["image"]
    assert all(p.requires_grad for p in model.encoders["image"].parameters())
    assert not any(p.requires_grad for m in ("tabular", "omics") for p in model.encoders[m].parameters())
    batch = checks.make_batch(checks.MODALITY_SETS[3], checks.presence("complete", 3))
    other = dict(batch, tabular=torch.randn(checks.B, 7), omics=torch.randn(checks.B, 10))
    hidden = batch["present"].clone()
    hidden[:, 1:] = False  # other modalities missing: no effect either
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(other))
        torch.testing.assert_close(model(batch), model(dict(batch, present=hidden)))


def test_a_sample_without_its_modality_gets_the_learned_absent_output():
    model = checks.make_model(NAME, checks.MODALITY_SETS[2], modality="image")
    present = torch.tensor([[True, True], [False, True], [False, True], [True, True]])
    batch = checks.make_batch(checks.MODALITY_SETS[2], present)
    with torch.no_grad():
        out = model(batch)
        expected = model.fusion.head(model.fusion.absent.weight)  # [1, out_dim]
        torch.testing.assert_close(out[1:3], expected.expand(2, -1))
        assert not torch.isclose(out[0], out[1]).all() and not torch.isclose(out[3], out[1]).all()


def test_an_unknown_modality_is_refused_by_name():
    with pytest.raises(ValueError, match="'omics'.*fusion.modality"):
        checks.make_model(NAME, checks.MODALITY_SETS[2], modality="omics")


@pytest.mark.parametrize("count", COUNTS)
def test_nothing_present_is_finite(count):
    checks.check_nothing_present_is_finite(NAME, checks.MODALITY_SETS[count], **TABULAR)


@pytest.mark.parametrize("count", COUNTS)
def test_determinism_and_validator(count):
    checks.check_determinism(NAME, checks.MODALITY_SETS[count], **TABULAR)
    checks.check_validator(NAME, checks.MODALITY_SETS[count], **TABULAR)


@pytest.mark.parametrize("count, mode", [(c, "hooks") for c in COUNTS] + [(3, "functorch"), (3, "ew")])
def test_per_sample_gradients(count, mode):
    checks.check_per_sample_gradients(NAME, checks.MODALITY_SETS[count], mode, **TABULAR)


@pytest.mark.parametrize("count", COUNTS)
def test_gradients_reach_every_parameter(count):
    # The absent embedding learns only from samples that lack the modality.
    checks.check_gradients_reach_parameters(
        NAME, checks.MODALITY_SETS[count], learns_from_missing=("absent",), **TABULAR
    )

import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
from torch import nn

from client.privacy import TensorArguments
from tests.fusion_models.fusion import _head_checks as checks

NAME = "mm_dynamics"
COUNTS = sorted(checks.MODALITY_SETS)
SWITCHES = {
    "both": {},
    "features_only": {"modality_informativeness": False},
    "modalities_only": {"feature_informativeness": False},
    "neither": {"feature_informativeness": False, "modality_informativeness": False},
}
SMALL = {"hidden": 6, "dropout": 0.0}


def _target(out_dim: int, b: int = checks.B) -> torch.Tensor:
    if out_dim == 1:
        return torch.tensor([0.0, 1.0, 1.0, 0.0][:b])
    return torch.arange(b) % out_dim


def _task_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample task losses [B]."""
    if out.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(out[:, 0], target, reduction="none")
    return F.cross_entropy(out, target, reduction="none")


@pytest.mark.parametrize("out_dim", [1, 3])
@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_shapes_gates_and_confidences(count, pattern, out_dim):
    modalities = checks.MODALITY_SETS[count]
    explained = checks.check_output_shape(NAME, modalities, pattern, out_dim=out_dim, **SMALL)
    present = checks.presence(pattern, count)
    for i, m in enumerate(modalities):
        gate = explained[f"fusion.feature_gate.{m}"]
        assert gate.shape == (checks.B, 8)
        assert ((gate >= 0) & (gate <= 1)).all()
        assert (gate[~present[:, i]] == 0).all() and (gate[present[:, i]] > 0).all()
    confidence = explained["fusion.modality_confidence"]
    assert confidence.shape == (checks.B, count)
    assert (confidence[~present] == 0).all()
    assert ((confidence[present] > 0) & (confidence[present] < 1)).all()


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_each_part_can_be_switched_off(switch):
    model = checks.make_model(NAME, checks.MODALITY_SETS[3], **SMALL, **SWITCHES[switch])
    model(checks.make_batch(checks.MODALITY_SETS[3], checks.presence("complete", 3)))
    keys = set(model.explanations())
    fi, mi = switch in ("both", "features_only"), switch in ("both", "modalities_only")
    assert ({"fusion.feature_gate.image", "fusion.feature_gate.tabular", "fusion.feature_gate.omics"} <= keys) == fi
    assert ("fusion.modality_confidence" in keys) == mi
    assert hasattr(model.fusion, "gate") == fi and hasattr(model.fusion, "classifier") == mi


@pytest.mark.parametrize("switch", sorted(SWITCHES))
@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_missing_inputs_do_not_leak(count, pattern, switch):
    checks.check_missing_inputs_do_not_leak(NAME, checks.MODALITY_SETS[count], pattern, **SMALL, **SWITCHES[switch])


@pytest.mark.parametrize("count", [2, 3])
def test_the_mask_matters(count):
    checks.check_mask_matters(NAME, checks.MODALITY_SETS[count], **SMALL)


@pytest.mark.parametrize("count", COUNTS)
def test_nothing_present_is_finite(count):
    checks.check_nothing_present_is_finite(NAME, checks.MODALITY_SETS[count], **SMALL)


def test_determinism_and_validator():
    checks.check_determinism(NAME, checks.MODALITY_SETS[3], **SMALL)
    checks.check_validator(NAME, checks.MODALITY_SETS[3], **SMALL)


def test_auxiliary_loss_is_the_papers_per_sample_sum():
    modalities = checks.MODALITY_SETS[3]
    model = checks.make_model(NAME, modalities, out_dim=3, **SMALL)
    present = checks.presence("partly_missing", 3)
    out = model(checks.make_batch(modalities, present))
    target = _target(3)
    fusion = model.fusion
    logits, confidence = fusion._kept["logits"], fusion._kept["confidence"]  # [B, M, K], [B, M]
    tcp = torch.softmax(logits, dim=-1).gather(-1, target[:, None, None].expand(-1, 3, 1))[..., 0]
    nll = -torch.log(tcp)
    gates = torch.stack([model.explanations()[f"fusion.feature_gate.{m}"].mean(dim=1) for m in modalities], dim=1)
    expected = ((gates + nll + (confidence - tcp) ** 2) * present).sum(dim=1).mean()
    torch.testing.assert_close(model.auxiliary_loss(out, target), expected)


def test_binary_tcp_is_the_probability_of_the_true_label():
    model = checks.make_model(NAME, ["tabular"], **SMALL)
    logits = torch.tensor([[[2.0]], [[2.0]], [[-1.0]], [[0.0]]])  # [B, M=1, 1]
    tcp, nll = model.fusion._true_class(logits, torch.tensor([1.0, 0.0, 0.0, 1.0]))
    p = torch.sigmoid(logits[:, 0, 0])
    torch.testing.assert_close(tcp[:, 0], torch.stack([p[0], 1 - p[1], 1 - p[2], p[3]]))
    torch.testing.assert_close(nll, -torch.log(tcp))


def test_the_tcp_target_is_detached():
    """The regression term trains the confidence regressor, not the modality classifier."""
    model = checks.make_model(NAME, checks.MODALITY_SETS[2], feature_informativeness=False, **SMALL).train()
    batch = checks.make_batch(checks.MODALITY_SETS[2], checks.presence("complete", 2))
    out = model(batch)
    fusion, target = model.fusion, _target(1)
    squared = ((fusion._kept["confidence"] - fusion._true_class(fusion._kept["logits"], target)[0].detach()) ** 2).sum()
    model.auxiliary_loss(out, target)  # must not raise
    squared.backward()
    assert all(p.grad is None or (p.grad == 0).all() for p in fusion.classifier.parameters())
    assert any(p.grad is not None and (p.grad != 0).any() for p in fusion.confidence.parameters())


@pytest.mark.parametrize("switch", sorted(SWITCHES))
@pytest.mark.parametrize("out_dim", [1, 3])
def test_gradients_reach_every_parameter(switch, out_dim):
    modalities = checks.MODALITY_SETS[3]
    model = checks.make_model(NAME, modalities, out_dim=out_dim, **SMALL, **SWITCHES[switch]).train()
    out = model(checks.make_batch(modalities, checks.presence("complete", 3)))
    target = _target(out_dim)
    (_task_loss(out, target).mean() + model.auxiliary_loss(out, target)).backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not dead, dead


def _train_without_dropout(model: nn.Module) -> nn.Module:
    """Train mode (Opacus' hooks record nothing in eval mode) with every dropout off, so the
    wrapped model and its per-sample reference compute the same function."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    return model


@pytest.mark.parametrize("mode, out_dim", [("hooks", 1), ("functorch", 1), ("ew", 1), ("hooks", 3)])
def test_per_sample_gradients_with_the_auxiliary_loss_are_exact(mode, out_dim):
    modalities = checks.MODALITY_SETS[3]
    present = checks.presence("partly_missing", 3)
    batch, target = checks.make_batch(modalities, present), _target(out_dim)
    model = _train_without_dropout(checks.make_model(NAME, modalities, out_dim=out_dim, **SMALL))
    if mode == "ew":
        out = GradSampleModuleExpandedWeights(TensorArguments(model), loss_reduction="sum")(
            present, *(batch[m] for m in modalities)
        )
    else:
        out = GradSampleModule(model, loss_reduction="sum", force_functorch=mode == "functorch")(batch)
    # The auxiliary loss is a batch mean of per-sample terms: times B it is their sum.
    (_task_loss(out, target).sum() + checks.B * model.auxiliary_loss(out, target)).backward()
    reference = _train_without_dropout(checks.make_model(NAME, modalities, out_dim=out_dim, **SMALL))
    for i in range(checks.B):
        reference.zero_grad()
        one = {k: v[i : i + 1] for k, v in batch.items()}
        out_i = reference(one)
        (_task_loss(out_i, target[i : i + 1]).sum() + reference.auxiliary_loss(out_i, target[i : i + 1])).backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            if not p.requires_grad:
                continue
            assert p.grad_sample is not None and p.grad_sample.shape[0] == checks.B, name
            expected = q.grad if q.grad is not None else torch.zeros_like(q)
            torch.testing.assert_close(p.grad_sample[i], expected, atol=1e-5, rtol=1e-4, msg=name)


def test_without_modality_informativeness_the_shared_per_sample_check_passes():
    checks.check_per_sample_gradients(NAME, checks.MODALITY_SETS[3], "hooks", modality_informativeness=False, **SMALL)


@pytest.mark.parametrize(
    "target, task",
    [
        (torch.tensor([0.3, 1.7, -2.0, 0.0]), "regression"),
        (torch.tensor([[1.0, 1.0], [2.0, 0.0], [3.0, 1.0], [4.0, 0.0]]), "survival"),
    ],
)
def test_regression_and_survival_targets_are_refused_by_name(target, task):
    model = checks.make_model(NAME, checks.MODALITY_SETS[2], **SMALL)
    out = model(checks.make_batch(checks.MODALITY_SETS[2], checks.presence("complete", 2)))
    with pytest.raises(ValueError, match=task):
        model.auxiliary_loss(out, target)
    with pytest.raises(ValueError, match=task):
        checks.make_model(NAME, checks.MODALITY_SETS[2], task=task, **SMALL)
    # Feature informativeness alone needs no label.
    model = checks.make_model(NAME, checks.MODALITY_SETS[2], modality_informativeness=False, task=task, **SMALL)
    out = model(checks.make_batch(checks.MODALITY_SETS[2], checks.presence("complete", 2)))
    assert torch.isfinite(model.auxiliary_loss(out, target))


def test_no_auxiliary_loss_before_a_forward_pass():
    model = checks.make_model(NAME, checks.MODALITY_SETS[2], **SMALL)
    assert model.auxiliary_loss(torch.zeros(2, 1), torch.zeros(2)) == 0

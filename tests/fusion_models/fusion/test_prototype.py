import pytest
import torch
from opacus import GradSampleModule
from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
from torch import nn

from client.privacy import TensorArguments
from fusion_models.fusion.prototype import modularity
from tests.fusion_models.fusion import _head_checks as checks

NAME = "prototype"
COUNTS = sorted(checks.MODALITY_SETS)
SMALL = {"tokens": 2, "prototypes": 3, "registers": 2, "dim": 8, "heads": 2, "hidden": 8, "dropout": 0.0}


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_shapes_and_attention_over_present_modalities(count, pattern):
    explained = checks.check_output_shape(NAME, checks.MODALITY_SETS[count], pattern, out_dim=3, **SMALL)
    attention, registers = explained["fusion.prototype_attention"], explained["fusion.register_attention"]
    present = checks.presence(pattern, count)
    assert attention.shape == (checks.B, 3, count) and registers.shape == (checks.B, 3)
    torch.testing.assert_close(attention.sum(dim=-1) + registers, torch.ones(checks.B, 3))
    assert (attention >= 0).all() and (registers > 0).all()
    assert (attention.permute(0, 2, 1)[~present] == 0).all()  # no attention on a missing modality
    assert (attention.permute(0, 2, 1)[present] > 0).all()


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("pattern", checks.PATTERNS)
def test_missing_inputs_do_not_leak(count, pattern):
    checks.check_missing_inputs_do_not_leak(NAME, checks.MODALITY_SETS[count], pattern, **SMALL)


@pytest.mark.parametrize("count", [2, 3])
def test_the_mask_matters(count):
    checks.check_mask_matters(NAME, checks.MODALITY_SETS[count], **SMALL)


@pytest.mark.parametrize("count", COUNTS)
def test_nothing_present_is_finite(count):
    checks.check_nothing_present_is_finite(NAME, checks.MODALITY_SETS[count], **SMALL)
    model = checks.make_model(NAME, checks.MODALITY_SETS[count], **SMALL)
    out = model(checks.make_batch(checks.MODALITY_SETS[count], torch.zeros(checks.B, count, dtype=torch.bool)))
    assert torch.isfinite(out).all() and torch.isfinite(model.auxiliary_loss(out, torch.zeros(checks.B)))
    torch.testing.assert_close(model.explanations()["fusion.register_attention"], torch.ones(checks.B, 3))


def test_determinism_and_validator():
    checks.check_determinism(NAME, checks.MODALITY_SETS[3], **SMALL)
    checks.check_validator(NAME, checks.MODALITY_SETS[3], **SMALL)


def _two_cliques() -> torch.Tensor:
    a = torch.zeros(1, 4, 4)
    a[0, :2, :2] = 1
    a[0, 2:, 2:] = 1
    return a * (1 - torch.eye(4))


def test_modularity_rewards_communities_and_is_zero_for_one_cluster():
    affinity = _two_cliques()
    split = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    one = torch.tensor([[[1.0, 0.0]] * 4])
    torch.testing.assert_close(modularity(split, affinity), torch.tensor([0.5]))
    torch.testing.assert_close(modularity(one, affinity), torch.tensor([0.0]))
    assert modularity(split, torch.zeros(1, 4, 4)).item() == 0  # no edges: no signal, no NaN


def test_auxiliary_loss_is_a_mean_of_per_sample_terms():
    modalities = checks.MODALITY_SETS[3]
    model = checks.make_model(NAME, modalities, **SMALL)
    batch = checks.make_batch(modalities, checks.presence("partly_missing", 3))
    out = model(batch)
    whole = model.auxiliary_loss(out, torch.zeros(checks.B))
    parts = []
    for i in range(checks.B):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        parts.append(model.auxiliary_loss(model(one), torch.zeros(1)))
    torch.testing.assert_close(whole, torch.stack(parts).mean())
    assert torch.isfinite(whole)
    assert checks.make_model(NAME, modalities, **{**SMALL, "modularity_weight": 0.0}).auxiliary_loss(out, None) == 0


def test_gradients_reach_every_parameter():
    modalities = checks.MODALITY_SETS[3]
    model = checks.make_model(NAME, modalities, **SMALL).train()
    out = model(checks.make_batch(modalities, checks.presence("complete", 3)))
    (((out - torch.randn_like(out)) ** 2).mean() + model.auxiliary_loss(out, None)).backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not dead, dead


def test_the_modularity_loss_moves_the_prototypes():
    modalities = checks.MODALITY_SETS[2]
    model = checks.make_model(NAME, modalities, **SMALL)
    out = model(checks.make_batch(modalities, checks.presence("complete", 2)))
    model.auxiliary_loss(out, None).backward()
    assert model.fusion.prototypes.weight.grad.abs().sum() > 0
    assert model.fusion.tokenize["image"].weight.grad.abs().sum() > 0


def test_shared_per_sample_check():
    checks.check_per_sample_gradients(NAME, checks.MODALITY_SETS[3], "hooks", **SMALL)


def _train_without_dropout(model: nn.Module) -> nn.Module:
    """Train mode (Opacus' hooks record nothing in eval mode) with every dropout off."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    return model


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_per_sample_gradients_with_the_modularity_loss_are_exact(mode):
    modalities = checks.MODALITY_SETS[3]
    present = checks.presence("partly_missing", 3)
    batch, target = checks.make_batch(modalities, present), torch.randn(checks.B, 1)
    model = _train_without_dropout(checks.make_model(NAME, modalities, **SMALL))
    if mode == "ew":
        out = GradSampleModuleExpandedWeights(TensorArguments(model), loss_reduction="sum")(
            present, *(batch[m] for m in modalities)
        )
    else:
        out = GradSampleModule(model, loss_reduction="sum", force_functorch=mode == "functorch")(batch)
    # The auxiliary loss is a batch mean of per-sample terms: times B it is their sum.
    (((out - target) ** 2).sum() + checks.B * model.auxiliary_loss(out, None)).backward()
    reference = _train_without_dropout(checks.make_model(NAME, modalities, **SMALL))
    for i in range(checks.B):
        reference.zero_grad()
        out_i = reference({k: v[i : i + 1] for k, v in batch.items()})
        (((out_i - target[i]) ** 2).sum() + reference.auxiliary_loss(out_i, None)).backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            assert p.grad_sample is not None and p.grad_sample.shape[0] == checks.B, name
            expected = q.grad if q.grad is not None else torch.zeros_like(q)
            torch.testing.assert_close(p.grad_sample[i], expected, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("bad", [{"tokens": 0}, {"registers": 0}, {"temperature": 0.0}, {"dim": 6, "heads": 4}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        checks.make_model(NAME, checks.MODALITY_SETS[2], **{**SMALL, **bad})

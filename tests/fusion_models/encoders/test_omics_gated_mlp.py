"""OmicsGatedMLP ("omics_gated_mlp"): per-sample feature gates with an L1 penalty."""

import pytest
import torch

from fusion_models.encoders import ENCODERS
from fusion_models.model import ModelSpec, build_model
from tests.fusion_models.encoders.encoder_checks import (
    check_gradients_reach_every_parameter,
    check_per_sample_grads,
    check_seeded_build_is_deterministic,
    check_validator,
)

G = 12


def _encoder(**kwargs):
    return ENCODERS.get("omics_gated_mlp")(in_features=G, out_dim=8, hidden=16, **kwargs)


@pytest.mark.parametrize("kwargs", [{}, {"gate_hidden": 4}, {"dropout": 0.0, "l1": 0.5}])
def test_output_shape_gates_and_penalty(kwargs):
    enc = _encoder(**kwargs)
    out = enc(torch.randn(5, G))
    assert out.shape == (5, 8) and torch.isfinite(out).all()
    gate = enc.last_explanations["feature_gate"]
    assert gate.shape == (5, G) and not gate.requires_grad
    assert ((gate >= 0) & (gate <= 1)).all()
    penalty = enc.auxiliary_loss(out, torch.zeros(5))
    torch.testing.assert_close(penalty, enc.l1 * gate.abs().mean(dim=1).mean())
    assert penalty.requires_grad


def test_without_gating_it_is_the_plain_omics_mlp():
    torch.manual_seed(0)
    plain = ENCODERS.get("omics_mlp")(in_features=G, out_dim=8, hidden=16)
    torch.manual_seed(0)
    ungated = _encoder(gating=False)
    assert list(plain.state_dict()) == list(ungated.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), ungated.state_dict().values()))
    out = ungated(torch.randn(3, G))
    assert ungated.last_explanations == {} and ungated.auxiliary_loss(out, torch.zeros(3)) == 0


def test_the_penalty_pushes_gates_towards_zero():
    torch.manual_seed(0)
    enc = _encoder(l1=1.0, dropout=0.0)
    optimizer = torch.optim.SGD(enc.parameters(), lr=1.0)
    x = torch.randn(16, G)
    before = None
    for _ in range(20):
        optimizer.zero_grad()
        enc(x)
        loss = enc.auxiliary_loss(torch.zeros(()), torch.zeros(()))
        before = loss.item() if before is None else before
        loss.backward()
        optimizer.step()
    assert enc.auxiliary_loss(enc(x), None).item() < 0.8 * before


def test_l1_must_not_be_negative():
    with pytest.raises(ValueError, match="l1"):
        _encoder(l1=-0.1)


def test_seeded_build_is_deterministic():
    check_seeded_build_is_deterministic(_encoder, torch.randn(3, G))


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
@pytest.mark.parametrize("gate_hidden", [None, 4])
def test_per_sample_gradients(mode, gate_hidden):
    check_per_sample_grads(_encoder(gate_hidden=gate_hidden), torch.randn(5, G), mode=mode, batch_size=5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    check_gradients_reach_every_parameter(_encoder(dropout=0.0), torch.randn(8, G))


def _model():
    spec = ModelSpec(
        modalities={"tabular": {"in_features": 4}, "omics": {"in_features": G}},
        encoders={"tabular": {"name": "mlp", "hidden": 8}, "omics": {"name": "omics_gated_mlp", "hidden": 8, "l1": 0.1}},
        fusion={"name": "concat", "dropout": 0.0}, feature_dim=8, out_dim=1,
    )  # fmt: skip
    return build_model(spec, seed=0)


def test_in_a_model_missing_omics_are_masked_and_the_penalty_is_collected():
    model = _model()
    check_validator(model)
    model.eval()
    tab = torch.randn(4, 4)
    for present in ([True] * 4, [True, False, True, False], [False] * 4):
        mask = torch.tensor(present)
        omics = torch.randn(4, G) * mask[:, None]
        batch = {"tabular": tab, "omics": omics, "present": torch.stack([torch.ones(4, dtype=torch.bool), mask], 1)}
        out = model(batch)
        assert torch.isfinite(out).all()
        junk = dict(batch, omics=torch.where(mask[:, None], omics, torch.randn(4, G) * 10))
        torch.testing.assert_close(model(junk), out)
    assert model.explanations()["encoders.omics.feature_gate"].shape == (4, G)
    assert model.auxiliary_loss(out, torch.zeros(4)) > 0


def test_dp_step_keeps_the_penalty_per_sample():
    from opacus.grad_sample.utils import prepare_module

    model = _model().train()
    wrapped = prepare_module(model, "hooks")
    batch = {"tabular": torch.randn(4, 4), "omics": torch.randn(4, G), "present": torch.ones(4, 2, dtype=torch.bool)}
    out = wrapped(batch)
    (
        torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], torch.ones(4)) + model.auxiliary_loss(out, None)
    ).backward()
    gate = model.encoders["omics"].gate
    assert gate.weight.grad_sample.shape == (4, G, G)
    # The per-sample gradients average to the batch gradient: the penalty is not dropped.
    torch.testing.assert_close(gate.weight.grad_sample.mean(dim=0), gate.weight.grad)
    # And a real DP step (clip, noise, step) goes through the gated encoder with its penalty.
    from tests.fusion_models.encoders.encoder_checks import check_dp_step

    check_dp_step(_model(), batch)

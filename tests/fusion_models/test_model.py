import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator

from client.data import SiteDataset
from client.privacy import DPPlan, DPRound
from client.settings import TrainSettings
from client.train import train_local
from fusion_models.model import ModelSpec, build_model, module_groups
from fusion_models.task import make_task

INPUTS = {
    "image": ({"in_channels": 3, "spatial_dims": 2}, (3, 16, 16), "cnn_small"),
    "tabular": ({"in_features": 7}, (7,), "mlp"),
    "omics": ({"in_features": 20}, (20,), "omics_mlp"),
    "series": ({"in_channels": 3}, (3, 12), "conv1d"),  # 2C+1: one value, one mask, time
}


def _spec(modalities, *, out_dim=1, dropout=0.0) -> ModelSpec:
    return ModelSpec(
        modalities={m: INPUTS[m][0] for m in modalities},
        encoders={m: {"name": INPUTS[m][2]} for m in modalities},
        fusion={"name": "concat"}, feature_dim=16, out_dim=out_dim, modality_dropout=dropout,
    )  # fmt: skip


def _batch(modalities, b=5, present=None):
    batch = {m: torch.randn(b, *INPUTS[m][1]) for m in modalities}
    batch["present"] = torch.ones(b, len(modalities), dtype=torch.bool) if present is None else present
    return batch


@pytest.mark.parametrize(
    "modalities, out_dim",
    [(["image", "tabular"], 1), (["tabular"], 1), (["image", "tabular", "omics", "series"], 7), (["omics", "tabular"], 1)],
)
def test_output_shape_and_module_groups(modalities, out_dim):
    model = build_model(_spec(modalities, out_dim=out_dim), seed=0)
    assert model(_batch(modalities)).shape == (5, out_dim)
    assert sorted(module_groups(model)) == sorted([f"encoders.{m}" for m in modalities] + ["fusion"])


def test_a_missing_modality_does_not_leak_its_input_values():
    model = build_model(_spec(["image", "tabular"]), seed=0).eval()
    present = torch.tensor([[False, True]] * 5)
    batch = _batch(["image", "tabular"], present=present)
    other = dict(batch, image=torch.randn(5, 3, 16, 16) * 10)
    torch.testing.assert_close(model(batch), model(other))
    full = dict(batch, present=torch.ones(5, 2, dtype=torch.bool))
    assert not torch.allclose(model(batch), model(full))  # the mask itself matters


def test_modality_dropout_never_hides_every_modality():
    model = build_model(_spec(["image", "tabular"], dropout=0.9), seed=0).train()
    present = torch.tensor([[True, True], [True, False], [False, True]] * 50)
    kept = model._drop_modalities(present)
    assert kept.any(dim=1).all()
    assert not (kept & ~present).any()
    assert (kept != present).any()


def test_same_seed_same_weights():
    a, b = build_model(_spec(["image", "tabular"]), seed=3), build_model(_spec(["image", "tabular"]), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_opacus_accepts_the_model_and_computes_per_sample_gradients():
    model = build_model(_spec(["image", "tabular", "omics", "series"]), seed=0)
    assert ModuleValidator.validate(model, strict=False) == []
    wrapped = GradSampleModule(model)
    wrapped(_batch(["image", "tabular", "omics", "series"], b=4)).sum().backward()
    for name, p in wrapped.named_parameters():
        assert p.grad_sample is not None and p.grad_sample.shape[0] == 4, name


def test_spec_round_trip_and_errors():
    spec = _spec(["tabular"])
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="missing keys"):
        ModelSpec.from_dict({"modalities": {}})


def test_modality_dropout_keeps_one_of_the_heads_own_modalities():
    spec = _spec(["image", "tabular"], dropout=0.9)
    spec.fusion = {"name": "single", "modality": "image"}
    model = build_model(spec, seed=0).train()
    kept = model._drop_modalities(torch.ones(200, 2, dtype=torch.bool))
    assert kept[:, 0].all()  # the only used modality is never hidden


def _image_tabular_with_frozen(frozen) -> ModelSpec:
    spec = _spec(["image", "tabular"])
    spec.encoders["image"] = {"name": "cnn_small", "frozen": frozen}
    return spec


@pytest.mark.parametrize("dp", [False, True])
def test_frozen_submodules_keep_their_weights_and_the_rest_trains(dp):
    model = build_model(_image_tabular_with_frozen(["features"]), seed=0)
    assert all(not p.requires_grad for p in model.encoders["image"].features.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    dataset = SiteDataset(inputs={"image": torch.randn(32, 3, 16, 16, generator=g), "tabular": torch.randn(32, 7, generator=g)},
                          present=torch.ones(32, 2, dtype=torch.bool), target=(torch.arange(32) % 2).float(),
                          sample_ids=[f"r{i}" for i in range(32)], modalities=["image", "tabular"])  # fmt: skip
    round_ = None
    if dp:
        plan = DPPlan(noise_multiplier=1.0, sample_rate=0.5, steps=2, max_grad_norm=1.0, delta=1e-5, accountant="rdp",
                      grad_sample_mode="hooks")  # fmt: skip
        round_ = DPRound(plan, [])
    train_local(model, dataset, make_task("binary"), TrainSettings(epochs=1.0, batch_size=16, lr=0.01), seed=0,
                device=torch.device("cpu"), dp=round_)  # fmt: skip
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith("encoders.image.features.") for k in changed)
    assert "encoders.image.project.weight" in changed and "fusion.head.0.weight" in changed


def test_frozen_names_an_unknown_submodule_clearly():
    with pytest.raises(ValueError, match=r"encoder\.image\.frozen: SmallCNN has no submodule \['convs'\]; its submodules "
                                         r"are \['features', 'pool', 'dropout', 'project'\]"):  # fmt: skip
        build_model(_image_tabular_with_frozen(["convs"]), seed=0)
    with pytest.raises(ValueError, match=r"encoder\.image\.frozen: expected a list of submodule names"):
        build_model(_image_tabular_with_frozen("features"), seed=0)

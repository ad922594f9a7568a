"""cnn_hyper (HyperFusion) and the hyperfusion head: shapes, masking, DP, training signal."""

import pytest
import torch
from opacus import GradSampleModule
from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
from opacus.validators import ModuleValidator
from torch import nn

from client.features import FeatureSpec
from fusion_models.encoders.image_cnn import SmallCNN
from fusion_models.encoders.image_hyper import HyperCNN
from fusion_models.model import ModelSpec, build_model
from server.model_setup import make_model_spec
from server.settings import ModelSettings
from simulation.cli import CONFIG_DIR

B, F = 4, 5
SMALL = {"channels": [4, 8], "num_groups": 2, "hyper_hidden": 6}
MODES = ("hooks", "functorch", "ew")
CONFIGS = {
    "project": {"hyper_layers": ["project"]},
    "last_conv": {"hyper_layers": ["last_conv"]},
    "both": {"hyper_layers": ["project", "last_conv"]},
    "both_rank2_no_bias": {"hyper_layers": ["project", "last_conv"], "rank": 2, "generate_bias": False},
}
PATTERNS = {
    "complete": torch.ones(B, 2, dtype=torch.bool),
    "partly_missing": torch.tensor([[True, True], [False, True], [True, False], [True, True]]),
    "all_but_one_missing": torch.tensor([[True, False], [False, True], [True, False], [False, True]]),
}


@pytest.fixture(autouse=True)
def _seed_inputs():
    """Every test draws its random inputs from the same seed, whatever the test order."""
    torch.manual_seed(0)


def _model(config: str = "both", *, seed: int = 0):
    spec = ModelSpec(
        modalities={"image": {"in_channels": 3, "spatial_dims": 2}, "tabular": {"in_features": F}},
        encoders={
            "image": {"name": "cnn_hyper", "conditioned_on": "tabular", "condition_features": F, **SMALL, **CONFIGS[config]},
            "tabular": {"name": "mlp", "hidden": 8, "dropout": 0.0},
        },
        fusion={"name": "hyperfusion", "dropout": 0.0}, feature_dim=8, out_dim=1,
    )  # fmt: skip
    return build_model(spec, seed=seed).eval()


def _batch(present: torch.Tensor, *, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(B, 3, 8, 8, generator=g) * present[:, 0].view(B, 1, 1, 1)
    tabular = torch.randn(B, F, generator=g) * present[:, 1:2]
    return {"image": image, "tabular": tabular, "present": present}


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("spatial_dims, shape", [(2, (3, 8, 8)), (3, (3, 8, 8, 8)), (2, (3, 7, 9))])
def test_encoder_output_shape_and_explanations(config, spatial_dims, shape):
    encoder = HyperCNN(3, 6, spatial_dims, condition_features=F, **SMALL, **CONFIGS[config])
    out = encoder(torch.randn(B, *shape), condition=torch.randn(B, F))
    assert out.shape == (B, 6) and torch.isfinite(out).all()
    norms = encoder.last_explanations
    assert sorted(norms) == sorted(f"hyper_weight_norm.{n}" for n in CONFIGS[config]["hyper_layers"])
    assert all(v.shape == (B,) and (v >= 0).all() and (v > 0).any() and not v.requires_grad for v in norms.values())


def test_generated_weights_are_base_plus_offset():
    """The per-sample path equals running the base network with W + dW(t) per sample."""
    encoder = HyperCNN(3, 6, condition_features=F, **SMALL, **CONFIGS["both"]).eval()
    x, t = torch.randn(B, 3, 8, 8), torch.randn(B, F)
    with torch.no_grad():
        out = encoder(x, condition=t)
        z = encoder.hypernet(t)
        for i in range(B):
            plain = SmallCNN(3, 6, channels=SMALL["channels"], num_groups=2).eval()
            plain.load_state_dict(
                {k: v for k, v in encoder.state_dict().items() if not k.startswith(("hypernet.", "generators."))}
            )
            for name, layer in (("project", plain.project), ("last_conv", plain.features[-1].conv)):
                delta, bias = encoder.generators[name](z[i : i + 1])
                layer.weight += delta.view(layer.weight.shape)
                layer.bias += bias[0]
            torch.testing.assert_close(plain(x[i : i + 1]), out[i : i + 1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("config", ["project", "both"])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_model_outputs_are_finite_and_missing_images_do_not_leak(config, pattern):
    model = _model(config)
    present = PATTERNS[pattern]
    batch = _batch(present)
    with torch.no_grad():
        out = model(batch)
        assert out.shape == (B, 1) and torch.isfinite(out).all()
        noisy = dict(
            batch, image=torch.where(present[:, :1, None, None], batch["image"], 100 * torch.randn(B, 3, 8, 8))
        )
        torch.testing.assert_close(model(noisy), out)


def test_a_missing_record_leaves_the_base_network():
    encoder = HyperCNN(3, 6, condition_features=F, **SMALL, **CONFIGS["both"]).eval()
    x, t = torch.randn(B, 3, 8, 8), torch.randn(B, F)
    present = torch.tensor([True, False, True, False])
    with torch.no_grad():
        reference = encoder(x, condition=t * present[:, None])  # zero rows, as data.py delivers them
        norms = encoder.last_explanations
        explicit = encoder(x, condition=100 * torch.randn(B, F), condition_present=present)
        unconditioned = encoder(x)
        plain = SmallCNN(3, 6, channels=SMALL["channels"], num_groups=2).eval()
        plain.load_state_dict(
            {k: v for k, v in encoder.state_dict().items() if not k.startswith(("hypernet.", "generators."))}
        )
        base = plain(x)
    for other in (explicit, unconditioned, base):
        torch.testing.assert_close(other[~present], reference[~present])
    assert all((v[~present] == 0).all() and (v[present] > 0).all() for v in norms.values())


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_image_features_depend_on_the_record_and_the_hypernetwork_learns(config):
    model = _model(config).train()
    batch = _batch(PATTERNS["complete"])
    encoder = model.encoders["image"]
    with torch.no_grad():
        a = encoder(batch["image"], condition=batch["tabular"])
        b = encoder(batch["image"], condition=batch["tabular"] + 1)
    assert not torch.isclose(a, b).all(dim=1).any()
    out = model(batch)
    ((out - torch.randn_like(out)) ** 2).mean().backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not dead, dead
    assert any(n.startswith("encoders.image.hypernet.") for n, _ in model.named_parameters())


def test_seeded_builds_are_deterministic():
    a, b, c = _model(seed=3), _model(seed=3), _model(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    batch = _batch(PATTERNS["partly_missing"])
    torch.testing.assert_close(a(batch), b(batch))


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_validator_accepts_the_model(config):
    assert ModuleValidator.validate(_model(config).train(), strict=False) == []


class _TensorArguments(nn.Module):
    """Opacus' ew wrapper reads ``x.shape[0]`` of the first argument: pass tensors, not a dict."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, present: torch.Tensor, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return self.model({"image": image, "tabular": tabular, "present": present})


@pytest.mark.parametrize("mode, config", [(m, "both") for m in MODES] + [("hooks", "both_rank2_no_bias")])
def test_per_sample_gradients_are_exact(mode, config):
    batch = _batch(PATTERNS["partly_missing"])
    target = torch.randn(B, 1)
    model = _model(config).train()  # Opacus' hooks record nothing in eval mode; no dropout here
    if mode == "ew":
        out = GradSampleModuleExpandedWeights(_TensorArguments(model), loss_reduction="sum")(
            batch["present"], batch["image"], batch["tabular"]
        )
    else:
        out = GradSampleModule(model, loss_reduction="sum", force_functorch=mode == "functorch")(batch)
    ((out - target) ** 2).sum().backward()
    reference = _model(config)
    for i in range(B):
        reference.zero_grad()
        ((reference({k: v[i : i + 1] for k, v in batch.items()}) - target[i]) ** 2).sum().backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            assert p.grad_sample is not None and p.grad_sample.shape == (B, *p.shape), name
            torch.testing.assert_close(p.grad_sample[i], q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_hyperfusion_yaml_swaps_in_the_conditioned_encoder():
    import yaml

    fusion = yaml.safe_load((CONFIG_DIR / "fusion" / "hyperfusion.yaml").read_text())
    features = FeatureSpec(
        task="binary", classes=["a", "b"], numeric={"age": (50.0, 10.0)}, categorical={"sex": ["f", "m"]},
        omics={}, files={"image": "image"}, shapes={"image": [3, 8, 8]}, modalities=["image", "tabular"],
    )  # fmt: skip
    spec = make_model_spec(features, ModelSettings(fusion=fusion, feature_dim=8))
    assert "encoders" not in spec.fusion
    assert spec.encoders["image"]["name"] == "cnn_hyper"
    assert spec.encoders["image"]["hyper_layers"] == ["project"]
    model = build_model(spec, seed=0)
    assert isinstance(model.encoders["image"], HyperCNN)
    batch = {
        "image": torch.randn(B, 3, 8, 8),
        "tabular": torch.randn(B, features.tabular_width),
        "present": torch.ones(B, 2, dtype=torch.bool),
    }
    assert model(batch).shape == (B, 1)
    assert model.explanations()["encoders.image.hyper_weight_norm.project"].shape == (B,)


@pytest.mark.parametrize("layers", [[], ["projection"], ["project", "project"]])
def test_unknown_layers_are_refused(layers):
    with pytest.raises(ValueError, match="hyper_layers"):
        HyperCNN(3, 6, condition_features=F, hyper_layers=layers)


def test_in_a_model_the_hyperfusion_head_dp_step_works():
    from tests.fusion_models.encoders.encoder_checks import check_dp_step

    check_dp_step(_model(), _batch(torch.tensor([[True, True], [False, True], [True, False], [True, True]])))

"""cnn_film (FiLM-conditioned CNN) and the film head: shapes, masking, DP, training signal."""

import pytest
import torch
from opacus import GradSampleModule
from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
from opacus.validators import ModuleValidator
from torch import nn

from client.features import FeatureSpec
from fusion_models.encoders.image_cnn import SmallCNN
from fusion_models.encoders.image_film import FiLMCNN
from fusion_models.model import ModelSpec, build_model
from server.model_setup import make_model_spec
from server.settings import ModelSettings
from simulation.cli import CONFIG_DIR

B, F = 4, 5
SMALL = {"channels": [4, 8], "num_groups": 2}
MODES = ("hooks", "functorch", "ew")


@pytest.fixture(autouse=True)
def _seed_inputs():
    """Every test draws its random inputs from the same seed, whatever the test order."""
    torch.manual_seed(0)


def _model(as_channels: bool = False, *, seed: int = 0, spatial_dims: int = 2):
    spec = ModelSpec(
        modalities={"image": {"in_channels": 3, "spatial_dims": spatial_dims}, "tabular": {"in_features": F}},
        encoders={
            "image": {"name": "cnn_film", "conditioned_on": "tabular", "condition_features": F, "as_channels": as_channels, **SMALL},
            "tabular": {"name": "mlp", "hidden": 8, "dropout": 0.0},
        },
        fusion={"name": "film", "dropout": 0.0}, feature_dim=8, out_dim=1,
    )  # fmt: skip
    return build_model(spec, seed=seed).eval()


def _batch(present: torch.Tensor, *, spatial: tuple[int, ...] = (8, 8), seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(B, 3, *spatial, generator=g) * present[:, 0].view(B, *[1] * (1 + len(spatial)))
    tabular = torch.randn(B, F, generator=g) * present[:, 1:2]
    return {"image": image, "tabular": tabular, "present": present}


PATTERNS = {
    "complete": torch.ones(B, 2, dtype=torch.bool),
    "partly_missing": torch.tensor([[True, True], [False, True], [True, False], [True, True]]),
    "all_but_one_missing": torch.tensor([[True, False], [False, True], [True, False], [False, True]]),
}


@pytest.mark.parametrize("as_channels", [False, True])
@pytest.mark.parametrize("spatial_dims, shape", [(2, (3, 8, 8)), (3, (3, 8, 8, 8)), (2, (3, 7, 9))])
def test_encoder_output_shape_and_explanations(as_channels, spatial_dims, shape):
    encoder = FiLMCNN(3, 6, spatial_dims, condition_features=F, as_channels=as_channels, **SMALL)
    out = encoder(torch.randn(B, *shape), condition=torch.randn(B, F))
    assert out.shape == (B, 6) and torch.isfinite(out).all()
    if as_channels:
        assert encoder.last_explanations == {}
    else:
        assert encoder.last_explanations["film_gamma"].shape == (B, 4)
        assert encoder.last_explanations["film_beta"].shape == (B, 4)
        assert not encoder.last_explanations["film_gamma"].requires_grad


@pytest.mark.parametrize("as_channels", [False, True])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_model_outputs_are_finite_and_missing_images_do_not_leak(as_channels, pattern):
    model = _model(as_channels)
    present = PATTERNS[pattern]
    batch = _batch(present)
    with torch.no_grad():
        out = model(batch)
        assert out.shape == (B, 1) and torch.isfinite(out).all()
        noisy = dict(
            batch, image=torch.where(present[:, :1, None, None], batch["image"], 100 * torch.randn(B, 3, 8, 8))
        )
        torch.testing.assert_close(model(noisy), out)


@pytest.mark.parametrize("as_channels", [False, True])
def test_a_missing_record_leaves_the_plain_network(as_channels):
    encoder = FiLMCNN(3, 6, condition_features=F, as_channels=as_channels, **SMALL).eval()
    x, t = torch.randn(B, 3, 8, 8), torch.randn(B, F)
    present = torch.tensor([True, False, True, False])
    with torch.no_grad():
        reference = encoder(x, condition=t * present[:, None])  # zero rows, as data.py delivers them
        explicit = encoder(x, condition=100 * torch.randn(B, F), condition_present=present)
        unconditioned = encoder(x)
    torch.testing.assert_close(explicit[~present], reference[~present])
    torch.testing.assert_close(unconditioned[~present], reference[~present])
    if not as_channels:
        gamma = encoder.last_explanations["film_gamma"]
        torch.testing.assert_close(gamma, torch.ones_like(gamma))
        assert (encoder.last_explanations["film_beta"] == 0).all()


def test_film_without_a_generator_is_the_plain_cnn():
    film = FiLMCNN(3, 6, condition_features=F, **SMALL).eval()
    plain = SmallCNN(3, 6, **SMALL).eval()
    plain.load_state_dict({k: v for k, v in film.state_dict().items() if not k.startswith("film.")})
    x = torch.randn(B, 3, 8, 8)
    torch.testing.assert_close(film(x), plain(x))


@pytest.mark.parametrize("as_channels", [False, True])
def test_image_features_depend_on_the_record_and_the_generator_learns(as_channels):
    model = _model(as_channels).train()
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


def test_seeded_builds_are_deterministic():
    a, b, c = _model(seed=3), _model(seed=3), _model(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    batch = _batch(PATTERNS["partly_missing"])
    torch.testing.assert_close(a(batch), b(batch))


@pytest.mark.parametrize("as_channels", [False, True])
def test_validator_accepts_the_model(as_channels):
    assert ModuleValidator.validate(_model(as_channels).train(), strict=False) == []


class _TensorArguments(nn.Module):
    """Opacus' ew wrapper reads ``x.shape[0]`` of the first argument: pass tensors, not a dict."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, present: torch.Tensor, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return self.model({"image": image, "tabular": tabular, "present": present})


@pytest.mark.parametrize("as_channels", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_per_sample_gradients_are_exact(mode, as_channels):
    batch = _batch(PATTERNS["partly_missing"])
    target = torch.randn(B, 1)
    model = _model(as_channels).train()  # Opacus' hooks record nothing in eval mode; no dropout here
    if mode == "ew":
        out = GradSampleModuleExpandedWeights(_TensorArguments(model), loss_reduction="sum")(
            batch["present"], batch["image"], batch["tabular"]
        )
    else:
        out = GradSampleModule(model, loss_reduction="sum", force_functorch=mode == "functorch")(batch)
    ((out - target) ** 2).sum().backward()
    reference = _model(as_channels)
    for i in range(B):
        reference.zero_grad()
        ((reference({k: v[i : i + 1] for k, v in batch.items()}) - target[i]) ** 2).sum().backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            assert p.grad_sample is not None and p.grad_sample.shape == (B, *p.shape), name
            torch.testing.assert_close(p.grad_sample[i], q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_film_yaml_swaps_in_the_conditioned_encoder():
    import yaml

    fusion = yaml.safe_load((CONFIG_DIR / "fusion" / "film.yaml").read_text())
    features = FeatureSpec(
        task="binary", classes=["a", "b"], numeric={"age": (50.0, 10.0)}, categorical={"sex": ["f", "m"]},
        omics={}, files={"image": "image"}, shapes={"image": [3, 8, 8]}, modalities=["image", "tabular"],
    )  # fmt: skip
    spec = make_model_spec(features, ModelSettings(fusion=fusion, feature_dim=8))
    assert "encoders" not in spec.fusion
    assert spec.encoders["image"]["name"] == "cnn_film"
    assert spec.encoders["image"]["condition_features"] == features.tabular_width
    model = build_model(spec, seed=0)
    assert isinstance(model.encoders["image"], FiLMCNN)
    present = torch.ones(B, 2, dtype=torch.bool)
    batch = {"image": torch.randn(B, 3, 8, 8), "tabular": torch.randn(B, features.tabular_width), "present": present}
    assert model(batch).shape == (B, 1)
    assert model.explanations()["encoders.image.film_gamma"].shape == (B, 16)


def test_a_wrongly_sized_record_is_refused():
    encoder = FiLMCNN(3, 6, condition_features=F, **SMALL)
    with pytest.raises(ValueError, match="condition_features"):
        encoder(torch.randn(B, 3, 8, 8), condition=torch.randn(B, F + 1))


def test_in_a_model_the_film_head_dp_step_works():
    from tests.fusion_models.encoders.encoder_checks import check_dp_step

    check_dp_step(_model(), _batch(PATTERNS["partly_missing"]))

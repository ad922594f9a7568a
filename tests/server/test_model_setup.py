import pytest

from client.features import FeatureSpec
from fusion_models.model import build_model
from server.model_setup import make_model_spec
from server.settings import ModelSettings


def _features(task: str) -> FeatureSpec:
    return FeatureSpec(task=task, classes=["a", "b"] if task == "binary" else [], numeric={"x": (0.0, 1.0)},
                       categorical={}, omics={"g1": (0.0, 1.0), "g2": (0.0, 1.0)}, files={}, shapes={},
                       modalities=["tabular", "omics"])  # fmt: skip


def test_a_task_dependent_head_learns_the_task_when_built():
    spec = make_model_spec(_features("binary"), ModelSettings(fusion={"name": "mm_dynamics"}, feature_dim=8))
    assert spec.fusion["task"] == "binary"
    build_model(spec, seed=0)


def test_mm_dynamics_on_survival_fails_when_the_model_is_built():
    spec = make_model_spec(_features("survival"), ModelSettings(fusion={"name": "mm_dynamics"}, feature_dim=8))
    with pytest.raises(ValueError, match="survival"):
        build_model(spec, seed=0)


def test_the_tabular_layout_follows_the_encoding_order():
    spec = make_model_spec(_features("binary"), ModelSettings(feature_dim=8))
    assert spec.modalities["tabular"]["layout"] == [["x", "numeric", 2]]
    assert spec.modalities["omics"] == {"in_features": 2}


def test_a_frozen_image_submodule_set_in_the_config_stays_untrained_in_the_built_model():
    from server.default_config import default_run_settings

    features = FeatureSpec(task="binary", classes=["a", "b"], numeric={"x": (0.0, 1.0)}, categorical={}, omics={},
                           files={"image": "image"}, shapes={"image": [3, 16, 16]}, modalities=["image", "tabular"])  # fmt: skip
    settings = default_run_settings(["encoder.image.frozen=[features]"])
    model = build_model(make_model_spec(features, settings.model), seed=0)
    image = model.encoders["image"]
    assert not any(p.requires_grad for p in image.features.parameters())
    assert all(p.requires_grad for p in image.project.parameters())
    assert all(p.requires_grad for p in build_model(make_model_spec(features, default_run_settings().model),
                                                    seed=0).encoders["image"].parameters())  # fmt: skip

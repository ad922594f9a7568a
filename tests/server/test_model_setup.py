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

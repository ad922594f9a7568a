"""configs/encoder/ mirrors fusion_models/encoders/: every encoder has its YAML (or is chosen
by the fusion head that conditions it), every YAML names a registered encoder of its modality."""

from pathlib import Path

import pytest
import yaml

from fusion_models.encoders import ENCODERS
from server.default_config import CONFIG_DIR, default_run_settings

ENCODER_DIR = CONFIG_DIR / "encoder"


def _modality(name: str) -> str:
    return Path(ENCODERS.get(name).__module__.rsplit(".", 1)[1]).name.split("_", 1)[0]


def _chosen_by_fusion() -> set[str]:
    names = set()
    for path in (CONFIG_DIR / "fusion").glob("*.yaml"):
        for options in (yaml.safe_load(path.read_text()).get("encoders") or {}).values():
            names.add(options["name"])
    return names


def test_every_encoder_has_its_yaml_or_its_fusion_head():
    yamls = {(p.parent.name, p.stem) for p in ENCODER_DIR.glob("*/*.yaml")}
    missing = {n for n in ENCODERS.names() if (_modality(n), n) not in yamls} - _chosen_by_fusion()
    assert not missing, f"encoders without configs/encoder/<modality>/<name>.yaml: {sorted(missing)}"


@pytest.mark.parametrize("path", sorted(ENCODER_DIR.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_yaml_names_a_registered_encoder_of_its_modality(path):
    options = yaml.safe_load(path.read_text())
    assert options["name"] == path.stem and _modality(path.stem) == path.parent.name
    settings = default_run_settings([f"encoder/{path.parent.name}={path.stem}"])
    assert settings.model.encoders[path.parent.name] == options


@pytest.mark.parametrize(("preset", "modality", "name"),
                         [("resnet", "image", "resnet"), ("densenet", "image", "densenet121"),
                          ("ft_transformer", "tabular", "ft_transformer"), ("small", "image", "cnn_small")])
def test_model_presets_pick_their_encoder(preset, modality, name):
    assert default_run_settings([f"model={preset}"]).model.encoders[modality]["name"] == name

"""Carving data into site manifests, without Flower: what `simulate` does before training."""


import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from client.data import load_site_dataset
from client.features import merge_statistics, site_statistics
from client.settings import TrainSettings
from client.train import evaluate, train_local
from fusion_models.model import build_model
from fusion_models.task import make_task
from server.model_setup import make_model_spec
from server.settings import ModelSettings
from simulation.baselines import concat_sites
from simulation.cli import CONFIG_DIR
from simulation.config import SimulationConfig
from simulation.prepare import prepare_sites, subsample
from simulation.datasets import load_dataset
from tests.conftest import write_image_sites


def _config(*overrides: str) -> SimulationConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return SimulationConfig.from_cfg(compose(config_name="config", overrides=list(overrides)))


def _train_and_score(manifests) -> float:
    stats = [site_statistics(m) for m in manifests]
    features = merge_statistics(stats, schema=manifests[0].schema, task=manifests[0].task)
    spec = make_model_spec(features, ModelSettings(feature_dim=16))
    task = make_task(features.task, num_classes=max(2, len(features.classes)))
    model = build_model(spec, seed=0)
    train = torch.utils.data.ConcatDataset([load_site_dataset(m, features, split="train") for m in manifests])
    train_local(model, train, task, TrainSettings(epochs=15, batch_size=16, lr=3e-3), seed=0, device=torch.device("cpu"))
    held_out = concat_sites([load_site_dataset(m, features, split=s) for m in manifests for s in ("val", "test")])
    return evaluate(model, held_out, task, device=torch.device("cpu"))["auroc"]


# Held-out AUROC floors below what the generator's signal allows (image: brightness +60 over
# noise 30 per pixel; tabular: age +10 over sd 10, about 0.76 in theory) and above chance:
# on 160 held-out rows chance has a standard deviation of about 0.05.
@pytest.mark.parametrize(("keep", "floor"), [(["sample_id", "label", "image"], 0.85),
                                             (["sample_id", "label", "age", "sex"], 0.6)])
def test_image_only_and_tabular_only_sites(tmp_path, keep, floor):
    source = tmp_path / "mine"
    for path in write_image_sites(source, sites={"a": 200, "b": 200}):
        pd.read_csv(path, dtype=str, keep_default_na=False)[keep].to_csv(path, index=False)
    config = _config("data=manifests", f"data.dir={source}")
    _, manifests = prepare_sites(config, tmp_path / "run")
    modalities = ["image"] if "image" in keep else ["tabular"]
    assert manifests[0].schema.modalities == modalities
    assert _train_and_score(manifests) > floor


def test_a_given_split_column_is_honoured_and_groups_stay_together(tmp_path):
    source = tmp_path / "mine"
    for path in write_image_sites(source, sites={"a": 30, "b": 30}):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame["split"] = ["train"] * 20 + ["val"] * 4 + ["test"] * 6
        frame.to_csv(path, index=False)
    _, manifests = prepare_sites(_config("data=manifests", f"data.dir={source}"), tmp_path / "run")
    for manifest in manifests:
        original = pd.read_csv(source / f"{manifest.site}.csv", dtype=str).set_index("sample_id")["split"]
        written = manifest.table.set_index("sample_id")["split"]
        assert written.to_dict() == original.to_dict()


def test_subsample_keeps_whole_lesions():
    table = load_dataset("ham10000")
    small = subsample(table, max_samples=500, seed=0)
    assert 450 <= len(small) <= 500
    lesions = set(small.table["group_id"])
    assert len(table.table[table.table["group_id"].isin(lesions)]) == len(small)


def test_ham10000_sites_split_by_lesion(tmp_path):
    _, manifests = prepare_sites(_config("max_samples=1500"), tmp_path / "run")
    assert sorted(m.site for m in manifests) == ["rosendahl", "vidir_modern", "vidir_molemax", "vienna_dias"]
    for manifest in manifests:
        sides = manifest.table.groupby("group_id")["split"].nunique()
        assert (sides == 1).all(), f"{manifest.site}: a lesion spans splits"
        assert "dx_type" not in manifest.table.columns
    assert (tmp_path / "run" / "sites" / "schema.yaml").is_file()

import torch

from client.data import load_site_dataset
from client.features import merge_statistics, site_statistics
from client.manifest import read_manifest_folder
from client.train import TrainSettings
from fusion_models.task import make_task
from server.model_setup import make_model_spec
from server.settings import ModelSettings
from simulation.baselines import train_local_only, train_pooled


def _sites(folder):
    manifests = read_manifest_folder(folder)
    features = merge_statistics([site_statistics(m) for m in manifests], schema=manifests[0].schema, task="binary")
    data = {m.site: load_site_dataset(m, features, split="train") for m in manifests}
    return data, make_model_spec(features, ModelSettings(feature_dim=8)), make_task("binary")


def test_pooled_and_local_baselines_train_with_the_same_budget(image_sites):
    data, spec, task = _sites(image_sites)
    settings = TrainSettings(epochs=1, batch_size=8)
    seen = []
    pooled = train_pooled(data, data, spec, task, settings, rounds=2, seed=0, device=torch.device("cpu"),
                          on_round=lambda r, site, m: seen.append(("pooled", r, site)))  # fmt: skip
    local = train_local_only(data, data, spec, task, settings, rounds=2, seed=0, device=torch.device("cpu"),
                             on_round=lambda r, site, m: seen.append(("local", r, site)))  # fmt: skip
    assert sorted(local) == ["alpha", "beta"]
    assert len(seen) == 2 * 2 * 2  # 2 methods x 2 rounds x 2 sites of validation
    alpha, beta = (dict(local[s].state_dict()) for s in ("alpha", "beta"))
    assert any(not torch.equal(alpha[k], beta[k]) for k in alpha), "each site trains its own model"
    assert any(not torch.equal(pooled.state_dict()[k], alpha[k]) for k in alpha)

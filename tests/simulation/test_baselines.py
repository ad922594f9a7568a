import math

import torch

from client.data import load_site_dataset
from client.features import merge_statistics, site_statistics
from client.manifest import read_manifest_folder
from client.settings import TrainSettings
from fusion_models.task import make_task
from server.model_setup import make_model_spec
from server.settings import ModelSettings
from simulation.baselines import concat_sites, train_local_only, train_pooled


def _sites(folder):
    manifests = read_manifest_folder(folder)
    features = merge_statistics([site_statistics(m) for m in manifests], schema=manifests[0].schema, task="binary")
    data = {m.site: load_site_dataset(m, features, split="train") for m in manifests}
    return data, make_model_spec(features, ModelSettings(feature_dim=8)), make_task("binary")


def test_pooled_and_local_baselines_train_with_the_documented_budget(image_sites):
    data, spec, task = _sites(image_sites)  # alpha 40 rows, beta 30 rows
    settings = TrainSettings(epochs=0.5, batch_size=8)
    seen = []
    pooled, pooled_steps = train_pooled(data, data, spec, task, settings, rounds=3, seed=0, device=torch.device("cpu"),
                                        on_round=lambda r, site, m: seen.append(("pooled", r, site)))  # fmt: skip
    local = train_local_only(data, data, spec, task, settings, rounds=3, seed=0, device=torch.device("cpu"),
                             on_round=lambda r, site, m: seen.append(("local", r, site)))  # fmt: skip
    assert sorted(local) == ["alpha", "beta"]
    assert len(seen) == 2 * 3 * 2  # 2 methods x 3 rounds x 2 sites of validation
    # README: each round makes ceil(epochs * ceil(n / batch_size)) steps, as a site does
    assert pooled_steps == 3 * math.ceil(0.5 * math.ceil(70 / 8)) == 15
    assert local["alpha"][1] == 3 * math.ceil(0.5 * 5) and local["beta"][1] == 3 * math.ceil(0.5 * 4)
    alpha, beta = (dict(local[s][0].state_dict()) for s in ("alpha", "beta"))
    assert any(not torch.equal(alpha[k], beta[k]) for k in alpha), "each site trains its own model"
    assert any(not torch.equal(pooled.state_dict()[k], alpha[k]) for k in alpha)


def test_concat_sites_keeps_rows_and_presence(image_sites):
    data, _, _ = _sites(image_sites)
    pooled = concat_sites(list(data.values()))
    assert len(pooled) == 70
    assert pooled.presence_counts() == {m: data["alpha"].presence_counts()[m] + data["beta"].presence_counts()[m]
                                        for m in pooled.modalities}  # fmt: skip
    assert len(set(pooled.sample_ids)) == 70

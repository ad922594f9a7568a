"""The ServerApp's whole main, with real ClientApp handlers, over an in-process Grid."""

import json

import numpy as np
import pytest
import torch

from client.app import app as client_app
from client.data import load_site_dataset
from client.features import FeatureSpec
from client.manifest import read_manifest
from client.site_evaluation import evaluate_at_site
from fusion_models.model import ModelSpec, build_model
from fusion_models.task import make_task
from server.app import main as server_main
from server.checkpoint import load_checkpoint
from server.default_config import default_run_settings
from server.final_evaluation import read_site_evaluations
from simulation.inprocess_grid import run_server_in_process
from tests.conftest import write_image_sites


def _with_splits(paths):
    import pandas as pd

    for path in paths:
        table = pd.read_csv(path)
        table["split"] = (["train"] * 3 + ["val", "test"]) * (len(table) // 5)
        table.to_csv(path, index=False)


def _run(tmp_path, overrides):
    paths = write_image_sites(tmp_path / "sites", sites={"north": 50, "south": 40}, missing_image_every=4)
    _with_splits(paths)
    settings = default_run_settings(["rounds=2", "num_sites=2", "train.batch_size=8", "model.feature_dim=8", "bootstrap=30", *overrides])
    run_dir = tmp_path / "run"
    run_server_in_process(server_main, client_app, {i + 1: {"manifest": str(p)} for i, p in enumerate(paths)},
                          {"config-json": settings.to_json(), "run-dir": str(run_dir)})  # fmt: skip
    return paths, run_dir


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_server_main_trains_checkpoints_and_gathers_site_evaluations(tmp_path, strategy):
    paths, run_dir = _run(tmp_path, [f"strategy={strategy}", "personalization=finetune",
                                     "personalization.min_train_positives=0", "train.label_skew=logit_adjust"])
    federated = run_dir / "federated"
    assert json.loads((federated / "done.json").read_text()) == {"rounds": 2}
    evaluations, failures = read_site_evaluations(federated / "site_evaluation.json")
    assert failures == []
    assert sorted((e.site, e.model) for e in evaluations) == [
        ("north", "global"), ("north", "personalized"), ("south", "global"), ("south", "personalized")]
    assert (run_dir / "site_state" / "north" / "personal.pt").is_file()
    rounds = [json.loads(line)["round"] for line in (federated / "site_metrics.jsonl").read_text().splitlines()]
    assert sorted(set(rounds)) == [1, 2]

    # What the sites reported equals central scoring of the checkpointed global model.
    checkpoint = load_checkpoint(federated / "global.pt")
    assert checkpoint["round"] == 2
    features = FeatureSpec.from_json(checkpoint["feature_spec"])
    model = build_model(ModelSpec.from_dict(checkpoint["model_spec"]))
    model.load_state_dict(checkpoint["state_dict"])
    for path in paths:
        manifest = read_manifest(path)
        val, test = (load_site_dataset(manifest, features, split=s) for s in ("val", "test"))
        central = evaluate_at_site(model, site=manifest.site, model_name="global", val_set=val, test_set=test,
                                   task=make_task("binary"), device=torch.device("cpu"), n_boot=0, seed=0)  # fmt: skip
        reported = next(e for e in evaluations if e.site == manifest.site and e.model == "global")
        assert reported.threshold == central.threshold
        assert np.isclose(reported.metrics["auroc"], central.metrics["auroc"], equal_nan=True)
        assert np.isclose(reported.metrics["loss"], central.metrics["loss"])


def test_rare_classes_and_disagreeing_columns_are_judged_over_all_sites(tmp_path):
    """Each deployed site reads its manifest alone; the ServerApp applies the cross-site rules."""
    import pandas as pd

    from server.federation import agree_on_schema

    paths = write_image_sites(tmp_path / "sites", sites={"north": 30, "south": 30, "east": 30})
    for path in paths:  # three classes everywhere, so every site infers a multiclass task
        frame = pd.read_csv(path)
        frame.loc[20:, "label"] = "nevus"
        if path.stem == "east":
            frame.loc[:4, "label"] = "atypical"  # 5 samples, at one site only: below the one-site minimum of 10
        frame.to_csv(path, index=False)
    settings = default_run_settings(["rounds=1", "num_sites=3", "model.feature_dim=8"])
    with pytest.raises(ValueError, match=r"class 'atypical': 5 sample\(s\) over all sites \(east 5\)"):
        run_server_in_process(server_main, client_app, {i + 1: {"manifest": str(p)} for i, p in enumerate(paths)},
                              {"config-json": settings.to_json(), "run-dir": str(tmp_path / "run")})  # fmt: skip

    # the same class at two sites with 3 samples in all is fine: neither site alone decides
    stats = [{"site": s, "task": "multiclass", "schema": {"columns": {"label": "label"}, "schema_version": 1},
              "label_counts": counts} for s, counts in
             (("a", {"x": 40, "y": 2}), ("b", {"x": 30, "y": 1}))]  # fmt: skip
    assert agree_on_schema(stats)[1] == "multiclass"
    stats[1]["schema"] = {"columns": {"label": "label", "age": "categorical"}, "schema_version": 1}
    with pytest.raises(ValueError, match="'age': absent at a, categorical at b"):
        agree_on_schema(stats)


def test_select_best_val_keeps_the_round_the_sites_scored_best_and_evaluates_it(tmp_path):
    # lr 0.1 makes round 2 score worse than round 1 here, so keeping the last round would fail
    paths, run_dir = _run(tmp_path, ["personalization=finetune", "personalization.min_train_positives=0",
                                     "personalization.select=best_val", "personalization.epochs=1", "train.lr=0.1"])
    federated = run_dir / "federated"
    figures: dict[int, list[float]] = {}
    for line in (federated / "site_metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["kind"] == "evaluate" and row.get("val-auroc") is not None:
            figures.setdefault(row["round"], []).append(row["val-auroc"])
    means = {r: float(np.mean(v)) for r, v in figures.items()}
    best = min(means, key=lambda r: (-means[r], r))  # the best mean, the earlier round on a tie
    assert best == 1, "round 1 should score best for this test to tell the rule from keeping the last round"
    selected = json.loads((federated / "selected_round.json").read_text())
    assert (selected["round"], selected["rounds"]) == (best, 2)
    assert np.isclose(selected["mean_over_sites"], means[best])
    checkpoint = load_checkpoint(federated / "global.pt")
    assert checkpoint["round"] == best, "global.pt is the federation's model: the selected round's"
    model = build_model(ModelSpec.from_dict(checkpoint["model_spec"]))
    model.load_state_dict(checkpoint["state_dict"])
    features = FeatureSpec.from_json(checkpoint["feature_spec"])
    evaluations, _ = read_site_evaluations(federated / "site_evaluation.json")
    manifest = read_manifest(paths[0])
    val, test = (load_site_dataset(manifest, features, split=s) for s in ("val", "test"))
    central = evaluate_at_site(model, site=manifest.site, model_name="global", val_set=val, test_set=test,
                               task=make_task("binary"), device=torch.device("cpu"), n_boot=0, seed=0)  # fmt: skip
    reported = next(e for e in evaluations if e.site == manifest.site and e.model == "global")
    assert np.isclose(reported.metrics["loss"], central.metrics["loss"]), "the sites scored the selected round"
    personal = next(e for e in evaluations if e.site == manifest.site and e.model == "personalized")
    assert "select=best_val: kept" in personal.note

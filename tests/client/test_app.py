"""The ClientApp called directly, as Flower calls it, without Ray."""

import json
import math

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client import messages as keys
from client.app import app as client_app
from client.data import load_site_dataset
from client.features import FeatureSpec, merge_statistics
from client.manifest import read_manifest
from client.messages import RoundConfig
from client.personalization import load_personal_model
from client.schema import Schema
from client.settings import PersonalizationSettings, TrainSettings
from client.site_evaluation import SiteEvaluation, evaluate_at_site
from fusion_models.model import build_model
from fusion_models.task import make_task
from server.model_setup import make_model_spec
from server.settings import ModelSettings
from tests.conftest import write_image_sites


def _context(manifest, state_dir=None) -> Context:
    node_config = {"manifest": str(manifest)}
    if state_dir is not None:
        node_config["state-dir"] = str(state_dir)
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


def _send(message_type: str, content: RecordDict, manifest, state_dir=None) -> Message:
    msg = Message(content=content, dst_node_id=1, message_type=message_type)
    return client_app(msg, _context(manifest, state_dir))


def _setup(tmp_path, missing_every=0, n=30, with_splits=False):
    paths = write_image_sites(tmp_path, sites={"a": n}, missing_image_every=missing_every)
    if with_splits:
        import pandas as pd

        table = pd.read_csv(paths[0])
        table["split"] = (["train"] * 3 + ["val", "test"]) * (n // 5)
        table.to_csv(paths[0], index=False)
    reply = _send("query", RecordDict({keys.CONFIG: ConfigRecord({keys.QUERY_KIND: keys.STATISTICS_QUERY})}), paths[0])
    stats = json.loads(reply.content[keys.STATISTICS][keys.STATISTICS_JSON])
    features = merge_statistics([stats], schema=Schema.from_dict(stats["schema"]), task=stats["task"])
    spec = make_model_spec(features, ModelSettings(feature_dim=8))
    return paths[0], stats, features, spec


def _config(features, spec, **changes) -> RoundConfig:
    values = {"task": "binary", "feature_spec": features.to_json(), "model_spec": json.dumps(spec.to_dict()),
              "seed": 0, "device": "cpu", "train": TrainSettings(epochs=1.0, batch_size=8, weight_decay=0.0)}
    return RoundConfig(**{**values, **changes})


def test_query_train_and_evaluate(tmp_path, task_identity):
    manifest, stats, features, spec = _setup(tmp_path)
    n_train = stats["n"]  # the site split its 30 rows itself (no split column)
    assert stats["site"] == "a" and 15 < n_train < 30 and "sample_id" not in json.dumps(stats["numeric"])
    model = build_model(spec, seed=0)
    config = _config(features, spec).to_record(**{keys.SERVER_ROUND: 1})
    reply = _send("train", RecordDict({keys.ARRAYS: ArrayRecord(model.state_dict()), keys.CONFIG: config}), manifest)
    metrics = reply.content[keys.METRICS]
    assert metrics["num-examples"] == n_train and metrics["num-examples.encoders.image"] == n_train
    assert metrics["train-steps"] == math.ceil(n_train / 8)  # one epoch of batches of 8
    sent = reply.content[keys.ARRAYS].to_torch_state_dict()
    assert set(sent) == set(model.state_dict())
    changed = [k for k in sent if not np.allclose(sent[k].numpy(), model.state_dict()[k].numpy())]
    assert changed, "training changed no weight"
    reply = _send("evaluate", RecordDict({keys.ARRAYS: ArrayRecord(model.state_dict()),
                                          keys.CONFIG: _config(features, spec, split="train").to_record()}), manifest)
    assert reply.content[keys.METRICS]["num-examples"] == n_train and "train-auroc" in reply.content[keys.METRICS]


def test_a_site_without_images_sends_no_image_encoder(tmp_path, task_identity):
    manifest, _, features, spec = _setup(tmp_path, missing_every=1)
    # Every image cell is empty here; the run's spec still has images (from other sites).
    features = FeatureSpec.from_json(features.to_json())
    features.modalities, features.files, features.shapes = ["image", "tabular"], {"image": "image"}, {"image": [3, 8, 8]}
    spec = make_model_spec(features, ModelSettings(feature_dim=8))
    model = build_model(spec, seed=0)
    config = _config(features, spec).to_record(**{keys.SERVER_ROUND: 1})
    reply = _send("train", RecordDict({keys.ARRAYS: ArrayRecord(model.state_dict()), keys.CONFIG: config}), manifest)
    sent = set(reply.content[keys.ARRAYS].keys())
    assert sent and not any(k.startswith("encoders.image.") for k in sent)
    assert reply.content[keys.METRICS]["num-examples.encoders.image"] == 0


def test_final_evaluation_at_the_site_matches_central_scoring(tmp_path, task_identity):
    manifest, _, features, spec = _setup(tmp_path, n=60, with_splits=True)
    model = build_model(spec, seed=3)
    config = _config(features, spec, bootstrap=50,
                     personalization=PersonalizationSettings(name="finetune", epochs=1.0, min_train_positives=0))
    state_dir = tmp_path / "state"
    reply = _send(keys.FINAL_EVALUATION, RecordDict({keys.ARRAYS: ArrayRecord(model.state_dict()),
                                                     keys.CONFIG: config.to_record(**{keys.SERVER_ROUND: 5})}),
                  manifest, state_dir)  # fmt: skip
    reported = [SiteEvaluation.from_dict(d) for d in json.loads(reply.content[keys.EVALUATION][keys.EVALUATION_JSON])]
    assert [e.model for e in reported] == ["global", "personalized"]
    assert reply.content.array_records == {}, "the final evaluation sends figures only, no weights"

    # The same model scored centrally on the same rows gives the same figures.
    site = read_manifest(manifest)
    val, test = (load_site_dataset(site, features, split=s) for s in ("val", "test"))
    at_site = reported[0]  # its intervals use the site's own seed: compare point figures and threshold
    central = evaluate_at_site(model, site="a", model_name="global", val_set=val, test_set=test,
                               task=make_task("binary"), device=torch.device("cpu"), n_boot=0, seed=0)  # fmt: skip
    assert at_site.n == central.n == 12
    assert at_site.threshold == central.threshold
    for name in ("auroc", "auprc", "balanced_accuracy", "f1", "ece"):
        assert np.isclose(at_site.metrics[name], central.metrics[name], equal_nan=True), name
    assert "auroc" in at_site.intervals

    # The personalised weights stay at the site, on its disk, and read back after a restart.
    saved = load_personal_model(state_dir / "personal.pt")
    assert saved["meta"]["personalization"] == "finetune" and saved["meta"]["steps"] == reported[1].train_steps > 0
    restored = build_model(spec)
    restored.load_state_dict(saved["state_dict"])
    again = evaluate_at_site(restored, site="a", model_name="personalized", val_set=val, test_set=test,
                             task=make_task("binary"), device=torch.device("cpu"), n_boot=0, seed=0)  # fmt: skip
    assert np.isclose(again.metrics["auroc"], reported[1].metrics["auroc"])
    assert not np.isclose(again.metrics["loss"], at_site.metrics["loss"]), "fine-tuning changed the model"


def _train(manifest, state_dir, features, spec, model, personalization, server_round):
    config = _config(features, spec, personalization=personalization).to_record(**{keys.SERVER_ROUND: server_round})
    # a new Context each time: a deployed site starts a fresh process for every message
    return _send("train", RecordDict({keys.ARRAYS: ArrayRecord(model.state_dict()), keys.CONFIG: config}), manifest,
                 state_dir)  # fmt: skip


def test_a_fedper_site_never_sends_its_kept_modules_and_keeps_them_across_restarts(tmp_path, task_identity):
    manifest, _, features, spec = _setup(tmp_path)
    model = build_model(spec, seed=0)
    state_dir = tmp_path / "state"
    fedper = PersonalizationSettings(name="fedper", keep_modules=("fusion",))
    first = _train(manifest, state_dir, features, spec, model, fedper, 1)
    sent = set(first.content[keys.ARRAYS].keys())
    assert sent and not any(k.startswith("fusion.") for k in sent)
    assert "num-examples.fusion" not in first.content[keys.METRICS]
    kept = load_personal_model(state_dir / "personal.pt")["state_dict"]
    assert kept and all(k.startswith("fusion.") for k in kept)
    # Round 2 from the same global weights: the site starts from its own fusion head, not the
    # global one, so its encoders train differently than a fresh site's would.
    second = _train(manifest, state_dir, features, spec, model, fedper, 2)
    fresh = _train(manifest, tmp_path / "fresh", features, spec, model, fedper, 2)
    a, b = second.content[keys.ARRAYS].to_torch_state_dict(), fresh.content[keys.ARRAYS].to_torch_state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    after = load_personal_model(state_dir / "personal.pt")["state_dict"]
    assert any(not torch.equal(after[k], kept[k]) for k in kept), "the kept head trained again in round 2"


def test_ditto_keeps_a_personal_model_pulled_towards_the_global_one(tmp_path, task_identity):
    manifest, _, features, spec = _setup(tmp_path)
    model = build_model(spec, seed=0)
    ditto = PersonalizationSettings(name="ditto", ditto_lambda=0.5)
    reply = _train(manifest, tmp_path / "state", features, spec, model, ditto, 1)
    assert set(reply.content[keys.ARRAYS].keys()) == set(model.state_dict()), "ditto sends the whole global update"
    personal = load_personal_model(tmp_path / "state" / "personal.pt")
    assert set(personal["state_dict"]) == set(model.state_dict()) and personal["meta"]["round"] == 1
    sent = reply.content[keys.ARRAYS].to_torch_state_dict()
    assert any(not torch.equal(personal["state_dict"][k], sent[k]) for k in sent), "two models, trained apart"


def test_a_truncated_personal_state_is_refused_loudly(tmp_path, task_identity):
    import pytest

    manifest, _, features, spec = _setup(tmp_path)
    model = build_model(spec, seed=0)
    state_dir = tmp_path / "state"
    fedper = PersonalizationSettings(name="fedper")
    _train(manifest, state_dir, features, spec, model, fedper, 1)
    path = state_dir / "personal.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="personal state"):
        load_personal_model(path)


def test_a_site_without_a_split_column_splits_itself_the_same_way_every_time(tmp_path, task_identity):
    manifest, _, features, spec = _setup(tmp_path, n=60)  # no split column: a deployed site's usual manifest
    model = build_model(spec, seed=0)
    config = _config(features, spec, bootstrap=0).to_record(**{keys.SERVER_ROUND: 1})
    content = RecordDict({keys.ARRAYS: ArrayRecord(model.state_dict()), keys.CONFIG: config})
    first = _send(keys.FINAL_EVALUATION, content, manifest)
    again = _send(keys.FINAL_EVALUATION, content, manifest)
    a, b = (json.loads(r.content[keys.EVALUATION][keys.EVALUATION_JSON])[0] for r in (first, again))
    assert 0 < a["n"] < 60 and a == b  # a test split of its own, identical in a fresh process
    trained = _send("train", content, manifest).content[keys.METRICS]["num-examples"]
    assert trained + a["n"] < 60  # training rows exclude the test (and val) rows


def test_the_apps_import_flower_alone():
    """Flower loads both apps in the engine process before it starts Ray, and Opacus, torch,
    MONAI and scikit-learn cost seconds of import there (benchmarks/startup.py): the apps
    import those only where a message needs them."""
    import subprocess
    import sys
    from pathlib import Path

    heavy = ["opacus", "torch", "monai", "sklearn", "pandas"]
    code = f"import sys, client.app, server.app; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                            cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_statistics_query_and_the_cli_before_submission_load_no_training_stack():
    """The CLI submits the app, and a site answers the statistics query, without importing torch,
    MONAI, scikit-learn or Opacus (benchmarks/startup.py): a deployed site loads them once it
    trains, the simulation when it scores its repeat (its Ray workers preload them as they start,
    simulation/ray_head.py)."""
    import subprocess
    import sys
    from pathlib import Path

    heavy = ["opacus", "torch", "monai", "sklearn"]
    modules = "simulation.cli, simulation.run, simulation.flower_runner, client.site_query, server.statistics_round"
    code = f"import sys, {modules}; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                            cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

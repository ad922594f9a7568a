"""The ClientApp called directly, as Flower calls it, without Ray."""

import json

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client.app import app as client_app
from client.features import FeatureSpec, merge_statistics
from client.schema import Schema
from fusion_models.model import build_model
from server.model_setup import make_model_spec
from server.settings import ModelSettings
from tests.conftest import write_image_sites


def _context(manifest) -> Context:
    return Context(run_id=1, node_id=1, node_config={"manifest": str(manifest)}, state=RecordDict(), run_config={})


def _send(message_type: str, content: RecordDict, manifest) -> Message:
    msg = Message(content=content, dst_node_id=1, message_type=message_type)
    return client_app(msg, _context(manifest))


def _setup(tmp_path, task_identity, missing_every=0):
    paths = write_image_sites(tmp_path, sites={"a": 30}, missing_image_every=missing_every)
    reply = _send("query", RecordDict({"config": ConfigRecord({"query": "feature-statistics"})}), paths[0])
    stats = json.loads(reply.content["statistics"]["json"])
    features = merge_statistics([stats], schema=Schema.from_dict(stats["schema"]), task=stats["task"])
    spec = make_model_spec(features, ModelSettings(feature_dim=8))
    config = {"task": "binary", "feature-spec": features.to_json(), "model-spec": json.dumps(spec.to_dict()),
              "seed": 0, "device": "cpu", "server-round": 1}
    return paths[0], stats, features, spec, config


def test_query_train_and_evaluate(tmp_path, task_identity):
    manifest, stats, features, spec, config = _setup(tmp_path, task_identity)
    assert stats["site"] == "a" and stats["n"] == 30 and "sample_id" not in json.dumps(stats["numeric"])
    model = build_model(spec, seed=0)
    train_config = ConfigRecord({**config, "epochs": 1.0, "batch-size": 8, "lr": 1e-3, "weight-decay": 0.0, "proximal-mu": 0.0})
    reply = _send("train", RecordDict({"arrays": ArrayRecord(model.state_dict()), "config": train_config}), manifest)
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == 30 and metrics["num-examples.encoders.image"] == 30
    sent = reply.content["arrays"].to_torch_state_dict()
    assert set(sent) == set(model.state_dict())
    changed = [k for k in sent if not np.allclose(sent[k].numpy(), model.state_dict()[k].numpy())]
    assert changed, "training changed no weight"
    reply = _send("evaluate", RecordDict({"arrays": ArrayRecord(model.state_dict()), "config": ConfigRecord({**config, "split": "train"})}), manifest)
    assert 0.0 <= reply.content["metrics"]["train-auroc"] <= 1.0


def test_a_site_without_images_sends_no_image_encoder(tmp_path, task_identity):
    manifest, _, features, spec, config = _setup(tmp_path, task_identity, missing_every=1)
    # Every image cell is empty here; the run's spec still has images (from other sites).
    features = FeatureSpec.from_json(features.to_json())
    features.modalities, features.files, features.shapes = ["image", "tabular"], {"image": "image"}, {"image": [3, 8, 8]}
    spec = make_model_spec(features, ModelSettings(feature_dim=8))
    model = build_model(spec, seed=0)
    train_config = ConfigRecord({**config, "feature-spec": features.to_json(), "model-spec": json.dumps(spec.to_dict()),
                                 "epochs": 1.0, "batch-size": 8, "lr": 1e-3, "weight-decay": 0.0, "proximal-mu": 0.0})
    reply = _send("train", RecordDict({"arrays": ArrayRecord(model.state_dict()), "config": train_config}), manifest)
    sent = set(reply.content["arrays"].keys())
    assert sent and not any(k.startswith("encoders.image.") for k in sent)
    assert reply.content["metrics"]["num-examples.encoders.image"] == 0

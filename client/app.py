"""The Flower ClientApp: unpack the message, call the plain functions, pack the reply.

Node facts come from ``node_config``: ``manifest`` (this site's CSV) and optional
``cache-dir``. In simulation the node's ``partition-id`` picks a manifest of the run
config's ``sites-dir``. Per-round values ride in the message's ConfigRecord.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.data import SiteDataset, default_cache_dir, load_site_dataset
from client.features import FeatureSpec, site_statistics
from client.manifest import Manifest, read_manifest
from client.schema import Schema
from client.train import TrainSettings, evaluate, resolve_device, train_local
from client.update import round_seed, site_update
from fusion_models.model import ModelSpec, MultimodalModel, build_model
from fusion_models.task import Task, make_task

__all__ = ["app", "site_manifest_path"]

app = ClientApp()


def site_manifest_path(context: Context) -> Path:
    """This node's manifest: ``node_config["manifest"]``, or in simulation the
    ``partition-id``-th CSV of ``run_config["sites-dir"]``."""
    if "manifest" in context.node_config:
        return Path(str(context.node_config["manifest"]))
    sites_dir = Path(str(context.run_config.get("sites-dir", "")))
    manifests = sorted(sites_dir.glob("*.csv"))
    partition = int(context.node_config.get("partition-id", -1))
    if not 0 <= partition < len(manifests):
        raise ValueError(
            f"node has no 'manifest' in its node config and partition-id {partition} does not pick one of "
            f"the {len(manifests)} manifests in sites-dir {sites_dir!s}"
        )
    return manifests[partition]


def _manifest(context: Context, *, check_files: bool) -> Manifest:
    path = site_manifest_path(context)
    schema_path = path.parent / "schema.yaml"
    schema = Schema.load(schema_path) if schema_path.is_file() else None
    return read_manifest(path, schema=schema, check_files=check_files)


def _cache_dir(context: Context, manifest: Manifest) -> Path:
    configured = context.node_config.get("cache-dir")
    return Path(str(configured)) if configured else default_cache_dir(manifest)


def _site_record(manifest: Manifest) -> ConfigRecord:
    return ConfigRecord({"name": manifest.site})


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Validate the manifest (files included) and reply with counts and sums of the training split."""
    manifest = _manifest(context, check_files=True)
    stats = site_statistics(manifest)
    stats["schema"] = manifest.schema.to_dict()
    stats["warnings"] = list(manifest.warnings)
    content = RecordDict({"statistics": ConfigRecord({"json": json.dumps(stats)}), "site": _site_record(manifest)})
    return Message(content=content, reply_to=msg)


@dataclass
class _RoundInputs:
    """What a train or evaluate message unpacks to at this site."""

    manifest: Manifest
    config: ConfigRecord
    task: Task
    dataset: SiteDataset
    model: MultimodalModel


def _unpack(msg: Message, context: Context, *, split: str) -> _RoundInputs:
    config = msg.content["config"]
    manifest = _manifest(context, check_files=False)
    features = FeatureSpec.from_json(str(config["feature-spec"]))
    model = build_model(ModelSpec.from_dict(json.loads(str(config["model-spec"]))))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return _RoundInputs(
        manifest=manifest,
        config=config,
        task=make_task(str(config["task"]), num_classes=max(2, len(features.classes))),
        dataset=load_site_dataset(manifest, features, split=split, cache_dir=_cache_dir(context, manifest)),
        model=model,
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the global model on the local training split; send back the modules this site trained."""
    inputs = _unpack(msg, context, split="train")
    config = inputs.config
    settings = TrainSettings(
        epochs=float(config["epochs"]),
        batch_size=int(config["batch-size"]),
        lr=float(config["lr"]),
        weight_decay=float(config["weight-decay"]),
        proximal_mu=float(config["proximal-mu"]),
    )
    result = train_local(
        inputs.model, inputs.dataset, inputs.task, settings,
        seed=round_seed(int(config["seed"]), int(config["server-round"]), inputs.manifest.site),
        device=resolve_device(str(config["device"])),
    )  # fmt: skip
    state, counts = site_update(inputs.model, inputs.dataset)
    metrics = {**counts, "train-loss": result["loss"], "train-samples": result["samples"]}
    content = RecordDict(
        {"arrays": ArrayRecord(state), "metrics": MetricRecord(metrics), "site": _site_record(inputs.manifest)}
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_site(msg: Message, context: Context) -> Message:
    """Evaluate the global model on the local split named in the config (``val`` by default)."""
    split = str(msg.content["config"].get("split", "val"))
    inputs = _unpack(msg, context, split=split)
    result = evaluate(inputs.model, inputs.dataset, inputs.task, device=resolve_device(str(inputs.config["device"])))
    metrics = {"num-examples": len(inputs.dataset), **{f"{split}-{k}": float(v) for k, v in result.items()}}
    content = RecordDict({"metrics": MetricRecord(metrics), "site": _site_record(inputs.manifest)})
    return Message(content=content, reply_to=msg)

"""The Flower ServerApp: a federated statistics round, then modality-aware FedAvg rounds,
with an atomic checkpoint and per-site metrics written after every round."""

from __future__ import annotations

import json
import time
from logging import INFO
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from client.features import merge_statistics
from client.schema import Schema
from fusion_models.model import build_model
from server.checkpoint import save_checkpoint
from server.model_setup import make_model_spec
from server.settings import RunSettings
from server.strategy import STRATEGIES

__all__ = ["app", "STATISTICS_QUERY", "agree_on_schema"]

app = ServerApp()

STATISTICS_QUERY = "feature-statistics"
_NODE_WAIT_S = 120.0


def _wait_for_nodes(grid: Grid, count: int) -> list[int]:
    deadline = time.monotonic() + _NODE_WAIT_S
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count or time.monotonic() > deadline:
            return nodes
        time.sleep(1.0)


def agree_on_schema(stats: list[dict]) -> tuple[Schema, str]:
    """Every site must share the schema (column -> role) and the task; returns both."""
    first = stats[0]
    schema = Schema.from_dict(first["schema"], source=f"site {first['site']}")
    for other in stats[1:]:
        if other["schema"]["columns"] != first["schema"]["columns"]:
            raise ValueError(
                f"sites {first['site']!r} and {other['site']!r} have different manifest columns or types; "
                "give every site the same schema.yaml"
            )
        if other["task"] != first["task"]:
            raise ValueError(f"site {first['site']!r} infers task {first['task']!r} but {other['site']!r} infers {other['task']!r}")
    return schema, first["task"]


def _collect_statistics(grid: Grid, nodes: list[int]) -> list[dict]:
    messages = [
        Message(RecordDict({"config": ConfigRecord({"query": STATISTICS_QUERY})}), dst_node_id=n, message_type="query")
        for n in nodes
    ]
    stats, failures = [], []
    for reply in grid.send_and_receive(messages):
        if reply.has_error():
            failures.append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
        else:
            stats.append(json.loads(reply.content["statistics"]["json"]))
    if failures:
        raise RuntimeError("sites failed the statistics round:\n  " + "\n  ".join(failures))
    return sorted(stats, key=lambda s: s["site"])


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by the run config's ``config-json``."""
    text = str(context.run_config.get("config-json", ""))
    if text:
        settings = RunSettings.from_json(text)
    else:  # plain `flwr run .`: the defaults of configs/config.yaml
        from simulation.config import default_run_settings

        settings = default_run_settings()
    run_dir = Path(str(context.run_config.get("run-dir", "")) or f"outputs/flwr-run-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    federated_dir = run_dir / "federated"
    federated_dir.mkdir(parents=True, exist_ok=True)

    nodes = _wait_for_nodes(grid, settings.num_sites)
    stats = _collect_statistics(grid, nodes)
    schema, inferred_task = agree_on_schema(stats)
    task = inferred_task if settings.task == "auto" else settings.task
    features = merge_statistics(stats, schema=schema, task=task)
    (federated_dir / "site_statistics.json").write_text(json.dumps(stats, indent=1))
    (federated_dir / "feature_spec.json").write_text(features.to_json())
    model_spec = make_model_spec(features, settings.model)
    model = build_model(model_spec, seed=settings.seed)
    log(INFO, "fedfusion: %d sites, task %s, modalities %s", len(stats), task, features.modalities)

    site_log = (federated_dir / "site_metrics.jsonl").open("a")

    def record_site(server_round: int, kind: str, site: str, metrics: MetricRecord) -> None:
        site_log.write(json.dumps({"round": server_round, "kind": kind, "site": site, **dict(metrics)}) + "\n")
        site_log.flush()

    def checkpoint_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        # Flower calls this with the global arrays after every round: the server holds no
        # data, so instead of central evaluation it saves the global state.
        save_checkpoint(
            federated_dir / "global.pt",
            state_dict=arrays.to_torch_state_dict(),
            round=server_round,
            model_spec=model_spec.to_dict(),
            feature_spec=features.to_json(),
            settings=json.loads(settings.to_json()),
        )
        (federated_dir / "progress.json").write_text(json.dumps({"round": server_round, "rounds": settings.rounds}))
        return None

    strategy = STRATEGIES.get(settings.strategy.name)(
        on_site_metrics=record_site,
        fraction_train=settings.strategy.fraction_train,
        fraction_evaluate=settings.strategy.fraction_evaluate,
        min_train_nodes=min(settings.strategy.min_nodes, len(nodes)),
        min_evaluate_nodes=min(settings.strategy.min_nodes, len(nodes)),
        min_available_nodes=min(settings.strategy.min_nodes, len(nodes)),
    )
    train = settings.train
    common = {
        "task": task,
        "feature-spec": features.to_json(),
        "model-spec": json.dumps(model_spec.to_dict()),
        "seed": settings.seed,
        "device": settings.device,
    }
    train_config = ConfigRecord(
        {
            **common,
            "epochs": float(train.epochs),
            "batch-size": train.batch_size,
            "lr": train.lr,
            "weight-decay": train.weight_decay,
            "proximal-mu": settings.strategy.proximal_mu,
        }
    )
    try:
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=settings.rounds,
            train_config=train_config,
            evaluate_config=ConfigRecord({**common, "split": "val"}),
            evaluate_fn=checkpoint_round,
        )
    finally:
        site_log.close()
    (federated_dir / "done.json").write_text(json.dumps({"rounds": settings.rounds}))

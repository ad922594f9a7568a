"""The final evaluation round: every site scores the final global model (and its own
personalised model) on its own test split and sends back only the figures."""

from __future__ import annotations

import json
from logging import WARNING
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from client import messages as keys
from client.atomic_io import atomic_write_text
from client.site_evaluation import RANK_INTERVAL_RULE, READABLE_RULE, THRESHOLD_RULE, SiteEvaluation

__all__ = ["run_final_evaluation", "write_site_evaluations", "read_site_evaluations", "SITE_EVALUATION_FILE"]

SITE_EVALUATION_FILE = "site_evaluation.json"
_SCHEMA_VERSION = 1


def run_final_evaluation(
    grid: Grid, nodes: list[int], arrays: ArrayRecord, config: ConfigRecord
) -> tuple[list[SiteEvaluation], list[str]]:
    """Send ``evaluate.final`` to every node; returns the sites' evaluations and the failures."""
    messages = [
        Message(RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config}), dst_node_id=node,
                message_type=keys.FINAL_EVALUATION)  # fmt: skip
        for node in nodes
    ]
    evaluations, failures = [], []
    for reply in grid.send_and_receive(messages):
        node = reply.metadata.src_node_id
        if reply.has_error():
            failures.append(f"node {node}: {reply.error.reason}")
            log(WARNING, "final evaluation: node %s failed: %s", node, reply.error.reason)
            continue
        record = reply.content.config_records.get(keys.EVALUATION)
        if record is None:
            failures.append(f"node {node}: reply has no {keys.EVALUATION!r} record")
            continue
        evaluations += [SiteEvaluation.from_dict(d) for d in json.loads(str(record[keys.EVALUATION_JSON]))]
    return sorted(evaluations, key=lambda e: (e.site, e.model)), failures


def write_site_evaluations(path: Path, evaluations: list[SiteEvaluation], failures: list[str], *, round: int) -> Path:
    """``site_evaluation.json``: what the sites reported, with the rules behind it (atomic)."""
    data = {"schema_version": _SCHEMA_VERSION, "round": round, "threshold_rule": THRESHOLD_RULE,
            "readable_rule": READABLE_RULE, "flagged_interval_rule": RANK_INTERVAL_RULE, "failures": failures,
            "sites": [e.to_dict() for e in evaluations]}  # fmt: skip
    return atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False))


def read_site_evaluations(path: Path) -> tuple[list[SiteEvaluation], list[str]]:
    """Inverse of :func:`write_site_evaluations`; another schema version is an error naming the file."""
    data = json.loads(Path(path).read_text())
    if data.get("schema_version") != _SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {data.get('schema_version')!r}, expected {_SCHEMA_VERSION}")
    return [SiteEvaluation.from_dict(d) for d in data["sites"]], list(data["failures"])

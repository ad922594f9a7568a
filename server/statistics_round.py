"""The statistics round: the ServerApp asks every site for its schema, task and training-split
statistics before it builds the model. Flower alone is imported here, so the ServerApp can
send these queries before it imports torch and MONAI (see ``server.app``)."""

from __future__ import annotations

import json
import time

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from client import messages as keys

__all__ = ["wait_for_nodes", "ask_for_statistics", "collect_statistics"]

_NODE_WAIT_S = 120.0
_POLL_S = 0.1


def wait_for_nodes(grid: Grid, count: int, *, timeout_s: float = _NODE_WAIT_S) -> list[int]:
    """The connected node ids, sorted, once ``count`` are connected or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count or time.monotonic() > deadline:
            return nodes
        time.sleep(_POLL_S)


def ask_for_statistics(grid: Grid, nodes: list[int]) -> set[str]:
    """Send the statistics query to every node; returns the ids of the messages sent."""
    messages = [
        Message(RecordDict({keys.CONFIG: ConfigRecord({keys.QUERY_KIND: keys.STATISTICS_QUERY})}), dst_node_id=n,
                message_type="query")  # fmt: skip
        for n in nodes
    ]
    return set(grid.push_messages(messages))


def collect_statistics(grid: Grid, message_ids: set[str]) -> list[dict]:
    """Wait for every reply to ``message_ids``; returns the sites' statistics sorted by site,
    or raises naming each node whose reply was an error."""
    pending, replies = set(message_ids), []
    while pending:
        received = list(grid.pull_messages(pending))
        replies.extend(received)
        pending -= {reply.metadata.reply_to_message_id for reply in received}
        if pending:
            time.sleep(_POLL_S)
    stats, failures = [], []
    for reply in replies:
        if reply.has_error():
            failures.append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
        else:
            stats.append(json.loads(reply.content[keys.STATISTICS][keys.STATISTICS_JSON]))
    if failures:
        raise RuntimeError("sites failed the statistics round:\n  " + "\n  ".join(failures))
    return sorted(stats, key=lambda s: s["site"])

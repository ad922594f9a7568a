"""A Flower ``Grid`` that hands each message to a ClientApp in this process.

The ServerApp's ``main`` and the ClientApp's handlers run unchanged, the same code a real
federation runs; only the transport (SuperLink, SuperNodes, Ray) is left out. Used where
starting Flower per run would cost more than the run (the fusion benchmark's many heads and
seeds, fast tests of the whole round logic). Every node keeps its own ``Context``, so a
site's state lives across rounds as it does on a SuperNode.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["InProcessGrid", "run_server_in_process"]


class InProcessGrid(Grid):
    """Deliver every message to ``client_app`` with the destination node's own Context.

    Args:
        client_app: the ClientApp every node runs.
        node_configs: node id -> that node's ``node_config`` (e.g. ``{"manifest": path}``).
        run_config: the run config every node sees.
        run_id: the run's id.
    """

    def __init__(
        self, client_app: ClientApp, node_configs: dict[int, dict[str, Any]], run_config: dict[str, Any], run_id: int = 1
    ) -> None:
        self._app = client_app
        self._contexts = {
            node: Context(run_id=run_id, node_id=node, node_config=dict(config), state=RecordDict(),
                          run_config=dict(run_config))  # fmt: skip
            for node, config in node_configs.items()
        }
        self._run = Run.create_empty(run_id)
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:  # fmt: skip
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run each message's handler now, on its own copy as a transport would deliver it (a
        mod may change what it receives, and the server may send one record to many nodes);
        its reply (or its error) waits to be pulled."""
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            message = copy.deepcopy(message)
            context = self._contexts.get(message.metadata.dst_node_id)
            if context is None:
                raise ValueError(f"no node {message.metadata.dst_node_id}; nodes: {sorted(self._contexts)}")
            try:
                reply = self._app(message, context)
            except Exception as error:  # noqa: BLE001 - a SuperNode turns a ClientApp failure into an error reply too
                reply = Message(error=Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(error).__name__}: {error}"),
                                reply_to=message)  # fmt: skip
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_server_in_process(
    server_main: Callable[[Grid, Context], None],
    client_app: ClientApp,
    node_configs: dict[int, dict[str, Any]],
    run_config: dict[str, Any],
    *,
    run_id: int = 1,
) -> None:
    """Run ``server_main`` over an :class:`InProcessGrid` of ``node_configs``.

    Sets the run's task identity for the duration, as Flower's runtime does before an app
    runs (messages are stamped with it), and restores what was there.
    """
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = run_id, run_id, 0
    try:
        grid = InProcessGrid(client_app, node_configs, run_config, run_id=run_id)
        server_main(grid, Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=dict(run_config)))
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved

"""The Flower ServerApp: its main asks the sites for their statistics, then runs the
federation of ``server.federation``.

This module imports Flower alone. In a simulation, Flower loads the ServerApp and the
ClientApp under one import lock, and the engine starts Ray only after both have loaded
(flwr 1.42, ``flwr.supercore.object_ref.load_app``, ``vce_api.start_vce``); then the
ServerApp's main runs in a thread of the process that is starting Ray. The federation's
module brings torch, MONAI and scikit-learn (about 3 s of import on 2 cores), so main sends
the statistics queries first and imports it while they are answered. In a simulation the
queries go out before Ray has started the ClientApp actor, so this import overlaps Ray's
start-up. Importing after the statistics instead ended a traced 2-round run 1.6 s later: the
actor then waits idle for the server (benchmarks/results/startup/README.md).
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.default_config import settings_from_run_config
from server.statistics_round import ask_for_statistics, collect_statistics, wait_for_nodes

__all__ = ["app", "main"]

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by the run config (see ``server.federation.run``)."""
    settings = settings_from_run_config(dict(context.run_config))
    nodes = wait_for_nodes(grid, settings.num_sites)
    queries = ask_for_statistics(grid, nodes)
    from server import federation  # torch and MONAI load while the sites compute their statistics

    federation.run(grid, context, settings=settings, nodes=nodes, stats=collect_statistics(grid, queries))

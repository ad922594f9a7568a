"""The Flower ServerApp: its main runs the federation of ``server.federation``.

This module imports Flower alone. In a simulation, Flower loads the ServerApp and the
ClientApp under one import lock, and the engine starts Ray only after both have loaded
(flwr 1.42, ``flwr.supercore.object_ref.load_app``, ``vce_api.start_vce``). The federation's
module brings torch, MONAI and scikit-learn (about 3.5 s of import on 2 cores), so it is
imported inside ``main``, while Ray starts beside it, instead of under that lock.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

__all__ = ["app", "main"]

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by the run config (see ``server.federation.run``)."""
    from server import federation

    federation.run(grid, context)

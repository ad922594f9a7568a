"""The Flower ClientApp: one handler per message type, each doing its work in
``client.site_query`` (statistics) or ``client.handlers`` (training and evaluation).

This module imports Flower alone. Flower's simulation engine imports it in the engine process
only to check that it loads, before it starts Ray (flwr 1.42, ``vce_api.start_vce``), and each
Ray actor imports it with its first message. The handlers' module brings torch, MONAI and
scikit-learn (about 2.5 s of import on 2 cores); the statistics query needs none of them, so
it is answered from ``client.site_query`` without loading them.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.secure_aggregation import secure_aggregation_mod

__all__ = ["app"]

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Validate the site's manifest and reply with its training-split statistics."""
    from client import site_query

    return site_query.query(msg, context)


@app.train(mods=[secure_aggregation_mod])
def train(msg: Message, context: Context) -> Message:
    """One round of local training from the global weights (or a budget refusal under DP);
    SecAgg+ rounds go through Flower's ``secaggplus_mod`` (:mod:`client.secure_aggregation`)."""
    from client import handlers

    return handlers.train(msg, context)


@app.evaluate()
def evaluate_round(msg: Message, context: Context) -> Message:
    """Per-round figures of the global model on the split the config names."""
    from client import handlers

    return handlers.evaluate_round(msg, context)


@app.evaluate("final")
def evaluate_final(msg: Message, context: Context) -> Message:
    """The final global (and personalised) model scored on the site's test split."""
    from client import handlers

    return handlers.evaluate_final(msg, context)

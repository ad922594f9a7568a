"""The message contract between the ServerApp and the ClientApp.

Every record name, config key and reply layout that travels in a Flower ``Message`` is
spelled here, once; both sides import this module (it sits on the client floor, which the
server may import). A reply carries:

- ``ARRAYS``: an ``ArrayRecord`` with the modules the site trained (train replies only);
- ``METRICS``: a ``MetricRecord`` with ``num-examples`` and ``num-examples.<module>`` (the
  per-module weights), plus the figures of the round;
- ``SITE``: a ``ConfigRecord`` ``{"name": <site name>}`` naming the site;
- ``STATUS``: a ``ConfigRecord`` ``{"code": ..., "reason": ...}`` when a site declines a round.
"""

from __future__ import annotations

__all__ = [
    "ARRAYS",
    "METRICS",
    "CONFIG",
    "SITE",
    "SITE_NAME",
    "STATUS",
    "STATISTICS",
    "STATISTICS_JSON",
    "STATISTICS_QUERY",
    "QUERY_KIND",
    "EVALUATION",
    "EVALUATION_JSON",
    "NUM_EXAMPLES",
    "module_weight_key",
]

ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"
SITE = "site"
SITE_NAME = "name"
STATUS = "status"
STATISTICS = "statistics"
STATISTICS_JSON = "json"
EVALUATION = "evaluation"
EVALUATION_JSON = "json"
QUERY_KIND = "query"
STATISTICS_QUERY = "feature-statistics"

#: Samples that trained the whole reply; ``num-examples.<module>`` weights one module.
NUM_EXAMPLES = "num-examples"


def module_weight_key(module: str) -> str:
    """The metric that weights ``module`` (e.g. ``encoders.image``) in a train reply."""
    return f"{NUM_EXAMPLES}.{module}"

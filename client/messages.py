"""The message contract between the ServerApp and the ClientApp.

Every record name, config key and reply layout that travels in a Flower ``Message`` is
spelled here, once; both sides import this module (it sits on the client floor, which the
server may import). A reply carries:

- ``ARRAYS``: an ``ArrayRecord`` with the modules the site trained (train replies only);
- ``METRICS``: a ``MetricRecord`` with ``num-examples`` and ``num-examples.<module>`` (the
  per-module weights), plus the figures of the round;
- ``SITE``: a ``ConfigRecord`` ``{"name": <site name>}`` naming the site;
- ``STATUS``: a ``ConfigRecord`` ``{"code": ..., "reason": ...}`` when a site declines a round
  (``code`` ``privacy-budget``: the round would pass its DP budget); such a reply has no arrays.

Under DP a train reply's metrics carry ``train-epsilon``, the site's epsilon so far.

Under secure aggregation (the train config holds ``SECURE_SCALE``) a train message also
carries SecAgg+'s own record, and the reply is the legacy ``FitRes`` layout SecAgg+ reads
(``fitres.parameters``: the vectors of :mod:`client.secure_update`, masked by
``secaggplus_mod`` before they leave; ``fitres.num_examples`` 1; ``fitres.metrics``: the
``METRICS`` figures plus ``SECURE_SITE`` and, for a declined round, ``SECURE_STATUS_CODE``
and ``SECURE_STATUS_REASON``). It has no ``ARRAYS``: the server sees only the sum.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from typing import Any

from flwr.app import ConfigRecord

from client.settings import PersonalizationSettings, PrivacySettings, TrainSettings

__all__ = [
    "RoundConfig",
    "SERVER_ROUND",
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
    "FINAL_EVALUATION",
    "EVALUATION",
    "EVALUATION_JSON",
    "NUM_EXAMPLES",
    "EPSILON",
    "STATUS_CODE",
    "STATUS_REASON",
    "BUDGET_REFUSAL",
    "module_weight_key",
    "SECURE_SCALE",
    "SECURE_CLIPPING_RANGE",
    "SECURE_SITE",
    "SECURE_STATUS_CODE",
    "SECURE_STATUS_REASON",
]

ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"
SITE = "site"
SITE_NAME = "name"
STATUS = "status"
STATUS_CODE = "code"
STATUS_REASON = "reason"
BUDGET_REFUSAL = "privacy-budget"
STATISTICS = "statistics"
STATISTICS_JSON = "json"
EVALUATION = "evaluation"
EVALUATION_JSON = "json"
QUERY_KIND = "query"
STATISTICS_QUERY = "feature-statistics"

#: Set by Flower's strategies in every train/evaluate config; set by us for the final evaluation.
SERVER_ROUND = "server-round"
FINAL_EVALUATION = "evaluate.final"

#: Samples that trained the whole reply; ``num-examples.<module>`` weights one module.
NUM_EXAMPLES = "num-examples"

#: A DP site's epsilon so far, in every train reply (metrics.csv: split train, metric epsilon).
EPSILON = "train-epsilon"

#: Train config under secure aggregation: the bound sample counts are divided by, and the
#: range SecAgg+ clips each coordinate to (a site refuses to send a vector it would clip).
SECURE_SCALE = "secure-weight-scale"
SECURE_CLIPPING_RANGE = "secure-clipping-range"
#: Keys of a secure reply's ``fitres.metrics`` beside the figures (a legacy record is flat).
SECURE_SITE = "site"
SECURE_STATUS_CODE = "status-code"
SECURE_STATUS_REASON = "status-reason"


def module_weight_key(module: str) -> str:
    """The metric that weights ``module`` (e.g. ``encoders.image``) in a train reply."""
    return f"{NUM_EXAMPLES}.{module}"


@dataclass(frozen=True)
class RoundConfig:
    """The ConfigRecord of every train and evaluate message, flattened to dashed keys.

    Args:
        task: task name (``binary``, ``multiclass``, ``regression``, ``survival``).
        feature_spec: the run's :class:`client.features.FeatureSpec` as JSON.
        model_spec: the run's :class:`fusion_models.model.ModelSpec` as JSON.
        seed: the run's seed; each site derives its own per round.
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        train: local training settings.
        split: the split a per-round evaluation scores.
        bootstrap: resamples for the final evaluation's intervals.
        personalization: how a site derives its own model in the final evaluation.
        privacy: sample-level DP-SGD at the sites.
        rounds: the run's planned rounds (DP sizes its noise for them).
    """

    task: str
    feature_spec: str
    model_spec: str
    seed: int
    device: str
    train: TrainSettings
    split: str = "val"
    bootstrap: int = 0
    personalization: PersonalizationSettings = PersonalizationSettings()
    privacy: PrivacySettings = PrivacySettings()
    rounds: int = 1

    def to_record(self, **extra: Any) -> ConfigRecord:
        """The ConfigRecord; ``extra`` adds keys such as ``server-round``. A setting left
        ``None`` is left out (a ConfigRecord holds no None) and reads back as its default."""
        flat: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if is_dataclass(value):
                flat.update({f"{f.name}.{k}".replace("_", "-"): list(v) if isinstance(v, tuple) else v
                             for k, v in asdict(value).items() if v is not None})  # fmt: skip
            else:
                flat[f.name.replace("_", "-")] = value
        flat.update(extra)
        return ConfigRecord(flat)

    @classmethod
    def from_record(cls, record: ConfigRecord) -> "RoundConfig":
        """Inverse of :meth:`to_record`; a missing key is an error naming it."""
        values: dict[str, Any] = {}
        missing: list[str] = []
        for f in fields(cls):
            if f.name in ("train", "personalization", "privacy"):
                kind = {"train": TrainSettings, "personalization": PersonalizationSettings,
                        "privacy": PrivacySettings}[f.name]  # fmt: skip
                sub = {}
                for g in fields(kind):
                    key = f"{f.name}.{g.name}".replace("_", "-")
                    if key in record:
                        sub[g.name] = record[key]
                    elif f.name == "train":
                        missing.append(key)
                values[f.name] = kind(**sub)
                continue
            key = f.name.replace("_", "-")
            if key in record:
                values[f.name] = record[key]
            elif f.default is MISSING:
                missing.append(key)
        if missing:
            raise ValueError(f"round config: missing keys {missing}")
        return cls(**values)

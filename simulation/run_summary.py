"""The run summary as a typed, versioned object: what ``summary.json`` holds, and what the
report, the plots and the repeats read.

``RunSummary.to_dict`` writes the layout ``summary.json`` has always had (plus ``version``),
so tools that read the JSON keep working; :meth:`RunSummary.load` reads it back and refuses a
file of another version, naming the file and both versions. A run of several repeats writes a
:class:`RepeatsSummary` instead (every repeat's :class:`RunSummary` under ``runs``, with the
spreads over repeats and the paired comparisons); :meth:`RepeatsSummary.is_repeats` tells the
two apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulation.results import json_safe

__all__ = ["SUMMARY_VERSION", "MethodResult", "MethodSpread", "PairedComparison", "RepeatsSummary", "RunSummary",
           "SitePartition", "SiteResult", "SiteWins", "Spread"]  # fmt: skip

#: Bumped whenever a field changes meaning or layout.
SUMMARY_VERSION = 1
_NAN = float("nan")


def _number(value: Any) -> float:
    """A figure as float; JSON's null (a figure that could not be computed) is NaN."""
    return _NAN if value is None else float(value)


def _check_version(data: dict[str, Any], source: str) -> None:
    version = data.get("version", SUMMARY_VERSION)
    if version != SUMMARY_VERSION:
        raise ValueError(f"{source}: summary version {version!r}, expected {SUMMARY_VERSION} (written by another "
                         "fedfusion version; rerun it with this one)")  # fmt: skip


@dataclass(frozen=True)
class SiteResult:
    """One method's test figures at one site, as the site (or, for a baseline, the same code) reported them."""

    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    n: int = 0
    n_pos: int | None = None
    n_events: int | None = None
    threshold: float | None = None
    threshold_source: str = ""
    readable: bool = True
    note: str = ""
    train_steps: int | None = None

    def value(self, metric: str) -> float:
        """The figure, NaN where it is undefined or was not computed."""
        return self.metrics.get(metric, _NAN)

    def interval(self, metric: str) -> tuple[float, float] | None:
        return self.intervals.get(metric)

    def count(self, key: str) -> int | None:
        """``n``, ``n_pos`` or ``n_events``."""
        return {"n": self.n, "n_pos": self.n_pos, "n_events": self.n_events}.get(key)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = dict(self.metrics)
        row.update({f"{m}_ci": list(ci) for m, ci in self.intervals.items()})
        row["n"] = self.n
        row.update({k: v for k, v in (("n_pos", self.n_pos), ("n_events", self.n_events)) if v is not None})
        row.update(threshold=self.threshold, threshold_source=self.threshold_source, readable=self.readable,
                   note=self.note, train_steps=self.train_steps)  # fmt: skip
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any], metrics: list[str]) -> SiteResult:
        return cls(
            metrics={m: _number(row.get(m)) for m in metrics},
            intervals={m: (_number(row[f"{m}_ci"][0]), _number(row[f"{m}_ci"][1])) for m in metrics
                       if isinstance(row.get(f"{m}_ci"), (list, tuple)) and len(row[f"{m}_ci"]) == 2},  # fmt: skip
            n=int(row.get("n", 0)),
            n_pos=None if row.get("n_pos") is None else int(row["n_pos"]),
            n_events=None if row.get("n_events") is None else int(row["n_events"]),
            threshold=None if row.get("threshold") is None else float(row["threshold"]),
            threshold_source=str(row.get("threshold_source") or ""),
            readable=bool(row.get("readable", True)),
            note=str(row.get("note") or ""),
            train_steps=None if row.get("train_steps") is None else int(row["train_steps"]),
        )


@dataclass(frozen=True)
class MethodResult:
    """One method's test figures: every site, the means over sites and the pooled test.

    ``site_mean`` averages the readable sites where a metric is defined (``site_mean_n`` counts
    them), ``site_mean_all`` every site where it is defined; ``pooled_test`` is empty for a
    method no one can score on all sites' rows together (personalised models).
    """

    per_site: dict[str, SiteResult]
    site_mean: dict[str, float]
    site_mean_n: dict[str, int] = field(default_factory=dict)
    site_mean_all: dict[str, float] = field(default_factory=dict)
    pooled_test: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    source: str = ""

    def mean(self, metric: str) -> float:
        return self.site_mean.get(metric, _NAN)

    def pooled(self, metric: str) -> float:
        return self.pooled_test.get(metric, _NAN)

    def to_dict(self) -> dict[str, Any]:
        return {"per_site": {s: r.to_dict() for s, r in self.per_site.items()}, "site_mean": dict(self.site_mean),
                "site_mean_n": dict(self.site_mean_n), "site_mean_all": dict(self.site_mean_all),
                "pooled_test": dict(self.pooled_test), "seconds": self.seconds, "source": self.source}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], metrics: list[str]) -> MethodResult:
        return cls(
            per_site={s: SiteResult.from_dict(r, metrics) for s, r in (data.get("per_site") or {}).items()},
            site_mean={m: _number(v) for m, v in (data.get("site_mean") or {}).items()},
            site_mean_n={m: int(v) for m, v in (data.get("site_mean_n") or {}).items()},
            site_mean_all={m: _number(v) for m, v in (data.get("site_mean_all") or {}).items()},
            pooled_test={m: _number(v) for m, v in (data.get("pooled_test") or {}).items()},
            seconds=None if data.get("seconds") is None else float(data["seconds"]),
            source=str(data.get("source") or ""),
        )


@dataclass(frozen=True)
class SitePartition:
    """A site's split sizes, label (or event) counts over all its rows, and rows per modality."""

    train: int
    val: int
    test: int
    labels: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"train": self.train, "val": self.val, "test": self.test}
        if self.labels:
            out["labels"] = dict(self.labels)
        out["modalities"] = dict(self.modalities)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SitePartition:
        return cls(train=int(data.get("train", 0)), val=int(data.get("val", 0)), test=int(data.get("test", 0)),
                   labels={str(k): int(v) for k, v in (data.get("labels") or {}).items()},
                   modalities={str(k): int(v) for k, v in (data.get("modalities") or {}).items()})  # fmt: skip


@dataclass(frozen=True)
class RunSummary:
    """Everything one repeat measured, as ``summary.json`` stores it.

    ``methods`` maps a method (``federated``, ``personalized``, ``pooled``, ``local``) to its
    results; ``privacy_sites``, ``explanations`` and ``attacks`` keep the layouts of the
    modules that write them (:mod:`simulation.privacy_report`, :mod:`simulation.explanations`,
    :mod:`simulation.attacks`).
    """

    name: str
    task: str
    headline: str
    methods: dict[str, MethodResult]
    metrics: list[str]
    higher_is_better: bool = True
    dataset: str = ""
    description: str = ""
    classes: list[str] = field(default_factory=list)
    rounds: int = 0
    local_epochs: float = 0
    privacy: str = "none"
    secure_aggregation: str = "none"
    privacy_sites: dict[str, Any] = field(default_factory=dict)
    partition: dict[str, SitePartition] = field(default_factory=dict)
    sites: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    explanations: dict[str, Any] = field(default_factory=dict)
    attacks: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    version: int = SUMMARY_VERSION

    def site_names(self) -> list[str]:
        """The run's sites: ``sites``, else every site named by a method or the partition."""
        if self.sites:
            return list(self.sites)
        seen: dict[str, None] = {}
        for method in self.methods.values():
            seen.update(dict.fromkeys(method.per_site))
        seen.update(dict.fromkeys(self.partition))
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["methods"] = {m: r.to_dict() for m, r in self.methods.items()}
        out["partition"] = {s: p.to_dict() for s, p in self.partition.items()}
        return json_safe(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "summary") -> RunSummary:
        """Read a summary; ``source`` names it in the error for another version."""
        _check_version(data, source)
        metrics = list(data.get("metrics") or [data["headline"]])
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.update(
            metrics=metrics,
            methods={m: MethodResult.from_dict(r or {}, metrics) for m, r in (data.get("methods") or {}).items()},
            partition={s: SitePartition.from_dict(p) for s, p in (data.get("partition") or {}).items()},
            classes=[str(c) for c in data.get("classes") or []],
            privacy_sites=data.get("privacy_sites") or {},
            explanations=data.get("explanations") or {},
            files=data.get("files") or {},
        )
        return cls(**known)

    @classmethod
    def load(cls, path: Path) -> RunSummary:
        return cls.from_dict(json.loads(Path(path).read_text()), source=str(path))


@dataclass(frozen=True)
class Spread:
    """A figure over repeats: mean and sample std of its finite values, ``n`` of them (std NaN under 2)."""

    mean: float
    std: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spread:
        return cls(mean=_number(data.get("mean")), std=_number(data.get("std")), n=int(data.get("n") or 0))


@dataclass(frozen=True)
class MethodSpread:
    """One method over repeats: the spread of each site-mean metric (over readable sites, over
    all), of each site's headline, and whether each site was readable in every repeat."""

    site_mean: dict[str, Spread]
    site_mean_all: dict[str, Spread]
    per_site: dict[str, Spread]
    readable: dict[str, bool]

    def to_dict(self) -> dict[str, Any]:
        return {"site_mean": {m: v.to_dict() for m, v in self.site_mean.items()},
                "site_mean_all": {m: v.to_dict() for m, v in self.site_mean_all.items()},
                "per_site": {s: v.to_dict() for s, v in self.per_site.items()},
                "readable": dict(self.readable)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodSpread:
        return cls(site_mean={m: Spread.from_dict(v) for m, v in (data.get("site_mean") or {}).items()},
                   site_mean_all={m: Spread.from_dict(v) for m, v in (data.get("site_mean_all") or {}).items()},
                   per_site={s: Spread.from_dict(v) for s, v in (data.get("per_site") or {}).items()},
                   readable={s: bool(v) for s, v in (data.get("readable") or {}).items()})  # fmt: skip


@dataclass(frozen=True)
class SiteWins:
    """At one site, the repeats each of two methods won and the ties (or figures not defined);
    ``readable``: the first method's figure was readable in every repeat. In the JSON the wins
    are keyed by the two methods' names."""

    first: int
    second: int
    ties: int
    readable: bool

    def to_dict(self, first: str, second: str) -> dict[str, Any]:
        return {first: self.first, second: self.second, "ties": self.ties, "readable": self.readable}

    @classmethod
    def from_dict(cls, data: dict[str, Any], first: str, second: str) -> SiteWins:
        return cls(first=int(data[first]), second=int(data[second]), ties=int(data["ties"]),
                   readable=bool(data["readable"]))  # fmt: skip


@dataclass(frozen=True)
class PairedComparison:
    """``first`` against ``second`` on ``metric``, repeat by repeat: the differences of the site
    mean with their mean, std and count, and per site the wins (:class:`SiteWins`).

    In the JSON each site's wins are keyed by the two methods' names, ``ties`` and ``readable``.
    """

    first: str
    second: str
    metric: str
    differences: list[float]
    mean: float
    std: float
    n: int
    per_site: dict[str, SiteWins]

    def to_dict(self) -> dict[str, Any]:
        sites = {s: w.to_dict(self.first, self.second) for s, w in self.per_site.items()}
        return {"first": self.first, "second": self.second, "metric": self.metric,
                "differences": list(self.differences), "mean": self.mean, "std": self.std, "n": self.n,
                "per_site": sites}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairedComparison:
        first, second = str(data["first"]), str(data["second"])
        sites = {s: SiteWins.from_dict(w, first, second) for s, w in (data.get("per_site") or {}).items()}
        return cls(first=first, second=second, metric=str(data["metric"]),
                   differences=[_number(d) for d in data.get("differences") or []], mean=_number(data.get("mean")),
                   std=_number(data.get("std")), n=int(data.get("n") or 0), per_site=sites)  # fmt: skip


@dataclass(frozen=True)
class RepeatsSummary:
    """A run of several repeats (seeds ``seeds``), as its ``summary.json`` stores it: per method
    the spreads over repeats, the paired comparisons, and every repeat's :class:`RunSummary`."""

    name: str
    dataset: str
    task: str
    headline: str
    higher_is_better: bool
    seeds: list[int]
    aggregate: dict[str, MethodSpread]
    paired: list[PairedComparison]
    runs: list[RunSummary]
    version: int = SUMMARY_VERSION

    @property
    def repeats(self) -> int:
        return len(self.runs)

    @staticmethod
    def is_repeats(data: dict[str, Any]) -> bool:
        """Whether a ``summary.json``'s content is a run of repeats (it has ``runs``), not one repeat."""
        return "runs" in data

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"version": self.version, "name": self.name, "dataset": self.dataset, "task": self.task,
                          "headline": self.headline, "higher_is_better": self.higher_is_better,
                          "repeats": self.repeats, "seeds": list(self.seeds),
                          "aggregate": {m: a.to_dict() for m, a in self.aggregate.items()},
                          "paired": [p.to_dict() for p in self.paired],
                          "runs": [r.to_dict() for r in self.runs]})  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "summary") -> RepeatsSummary:
        """Read a summary of repeats; ``source`` names it in the error for another version."""
        _check_version(data, source)
        return cls(name=str(data["name"]), dataset=str(data.get("dataset") or ""), task=str(data["task"]),
                   headline=str(data["headline"]), higher_is_better=bool(data.get("higher_is_better", True)),
                   seeds=[int(s) for s in data.get("seeds") or []],
                   aggregate={m: MethodSpread.from_dict(a) for m, a in (data.get("aggregate") or {}).items()},
                   paired=[PairedComparison.from_dict(p) for p in data.get("paired") or []],
                   runs=[RunSummary.from_dict(r, source=f"{source} (repeat {k})")
                         for k, r in enumerate(data.get("runs") or [])])  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> RepeatsSummary:
        return cls.from_dict(json.loads(Path(path).read_text()), source=str(path))

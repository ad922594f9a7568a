"""eICU-CRD Demo: in-hospital mortality from admission/first-day data + the first 48 h of
bedside series (cuff blood pressure, respiratory charting, urine), 186 hospitals in 4 regions.

One row per labelled ICU unit stay; patients (``uniquepid``) are the split groups. The
series of each stay is written once, as the per-stay CSV a real site would hold
(``hours`` + one column per variable, see ``client/data.py::read_file_array``), into a
cache folder keyed by the content of ``timeseries_48h.csv``, and reused.

Reference: Pollard T. J. et al. The eICU Collaborative Research Database, a freely available
multi-center database for critical care research. Sci. Data 5, 180178 (2018). Licence ODbL
v1.0; see ``data/eicu_demo_ts/README.md``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from client.atomic_io import atomic_open
from client.schema import Schema
from simulation.datasets.base import DATASETS, SampleTable, require_columns, require_file, resolve_root

__all__ = ["CATEGORICAL", "EXCLUDED", "NUMERIC", "REGIONS", "VARIABLES", "default_series_root", "load"]

_NAME = "eicu"
_FOLDER = "eicu_demo_ts"
#: Series variables, in channel order (README, ``timeseries_48h.csv``).
VARIABLES = ["nibp_sys", "nibp_dia", "nibp_mean", "fio2", "peep", "resp_rate", "sao2", "o2_flow_lpm", "urine_ml"]
_APS = [
    "intubated",
    "vent",
    "dialysis",
    "eyes",
    "motor",
    "verbal",
    "meds",
    "urine",
    "wbc",
    "temperature",
    "respiratoryrate",
    "sodium",
    "heartrate",
    "meanbp",
    "ph",
    "hematocrit",
    "creatinine",
    "albumin",
    "pao2",
    "pco2",
    "bun",
    "glucose",
    "bilirubin",
    "fio2",
]
#: Known at ICU admission or over the first ICU day: demographics, admission, APACHE IV(a).
NUMERIC = [
    "age",
    "age_over_89",
    "admissionheight",
    "admissionweight",
    "hospitaladmitoffset",
    "unitvisitnumber",
    *[f"aps_{v}" for v in _APS],
    "apache_iva_score",
    "apache_iva_aps",
]
CATEGORICAL = [
    "gender",
    "ethnicity",
    "unittype",
    "unitadmitsource",
    "unitstaytype",
    "hospitaladmitsource",
    "apacheadmissiondx",
]
#: Never inputs: outcomes and outcome times (``icu_los_hours``, ``hospitaldischargeyear``,
#: ``unit_mort``), counts over the 48 h window that shrink when a patient dies early
#: (``n_ts_obs_48h``, ``has_nibp_48h``), another model's mortality prediction
#: (``apache_iva_pred_hosp_mort``, kept as an ignore column for a baseline) and site facts.
EXCLUDED = [
    "hosp_mort",
    "unit_mort",
    "icu_los_hours",
    "hospitaldischargeyear",
    "n_ts_obs_48h",
    "has_nibp_48h",
    "apache_iva_pred_hosp_mort",
    "patienthealthsystemstayid",
    "hosp_numbeds",
    "hosp_teaching",
]
REGIONS = ["Midwest", "Northeast", "South", "West", "unknown"]
#: Admission diagnoses with fewer stays than this in ``stays.csv`` become "other" (236 codes,
#: most seen once or twice: a one-hot of all would be mostly noise).
_MIN_DX_STAYS = 10
_SERIES_FORMAT = "eicu-series-v1"


def default_series_root(timeseries: Path) -> Path:
    """``~/.cache/fedfusion/eicu_series/<hash>``, the hash taken over the file's content and
    the series format, so a changed source or layout never reuses stale files."""
    digest = hashlib.sha256(_SERIES_FORMAT.encode())
    with timeseries.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return Path("~/.cache/fedfusion/eicu_series").expanduser() / digest.hexdigest()[:16]


def _write_atomic(text: str, path: Path) -> None:
    with atomic_open(path, "w", newline="") as fh:
        fh.write(text)


def _series_files(timeseries: Path, stays: list[int], series_root: Path) -> dict[int, str]:
    """Absolute path of each stay's series CSV (stays without any row are left out); only
    files that do not exist yet are written, each atomically."""
    series_root.mkdir(parents=True, exist_ok=True)
    paths = {s: series_root / f"{s}.csv" for s in stays}
    # ``<stay>.none`` marks a stay known to have no series row, so it is not looked up again.
    done = {s for s, p in paths.items() if p.exists()}
    todo = {s for s in stays if s not in done and not (series_root / f"{s}.none").exists()}
    if todo:
        long = pd.read_csv(timeseries)
        require_columns(long, ["patientunitstayid", "hours", "variable", "value"], dataset=_NAME, path=timeseries)
        long = long[long["patientunitstayid"].isin(todo) & long["variable"].isin(VARIABLES)]
        # One row per observation time; the source's exact duplicates are averaged away.
        wide = long.pivot_table(
            index=["patientunitstayid", "hours"], columns="variable", values="value", aggfunc="mean"
        )
        wide = wide.reindex(columns=VARIABLES)
        for stay, rows in wide.groupby(level=0, sort=False):
            frame = rows.droplevel(0).reset_index()
            _write_atomic(frame.to_csv(index=False, float_format="%.6g"), paths[int(stay)])
            done.add(int(stay))
        for stay in todo - done:
            (series_root / f"{stay}.none").touch()
    return {s: str(paths[s]) for s in stays if s in done}


def _frequent(values: pd.Series, minimum: int) -> pd.Series:
    counts = values.value_counts()
    keep = set(counts[counts >= minimum].index)
    return values.map(lambda v: v if pd.isna(v) or v in keep else "other")


@DATASETS.register(_NAME)
def load(
    *,
    root: str | Path | None = None,
    task: str | None = None,
    series_root: str | Path | None = None,
    max_stays: int | None = None,
    min_icu_hours: float | None = None,
) -> SampleTable:
    """Load the eICU demo: one row per labelled unit stay, grouped by patient, natural site
    ``hosp_region`` (``hospitalid`` is kept as an ignore column for ``natural(column=...)``).

    Args:
        root: folder with ``stays.csv`` and ``timeseries_48h.csv``; default the vendored copy.
        task: only ``"binary"`` (in-hospital mortality, classes alive/died).
        series_root: folder for the per-stay series CSVs; default
            ``~/.cache/fedfusion/eicu_series/<hash of timeseries_48h.csv>``. Existing files are reused.
        max_stays: keep only the first this many labelled stays (by stay id), e.g. for tests.
        min_icu_hours: keep only stays at least this long (e.g. 48). A stay that ends early
            (death or discharge) has a shorter series, which tells the model its length of
            stay; None keeps every labelled stay.

    Returns:
        The sample table; outcome and leaking columns (``EXCLUDED``) are never features.
    """
    task = task or "binary"
    if task != "binary":
        raise ValueError(f"dataset {_NAME!r}: task must be 'binary' (in-hospital mortality), got {task!r}")
    folder, _ = resolve_root(root, _FOLDER)
    stays_path = require_file(folder / "stays.csv", dataset=_NAME, what="the per-stay table stays.csv")
    ts_path = require_file(
        folder / "timeseries_48h.csv", dataset=_NAME, what="the long series table timeseries_48h.csv"
    )
    stays = pd.read_csv(stays_path)
    required = ["patientunitstayid", "uniquepid", "hospitalid", "hosp_region", "hosp_mort", "icu_los_hours"]
    require_columns(stays, required + NUMERIC + CATEGORICAL, dataset=_NAME, path=stays_path)
    stays["apacheadmissiondx"] = _frequent(stays["apacheadmissiondx"], _MIN_DX_STAYS)
    stays = stays[stays["hosp_mort"].notna()].sort_values("patientunitstayid")
    if min_icu_hours is not None:
        stays = stays[stays["icu_los_hours"] >= min_icu_hours]
    if max_stays is not None:
        stays = stays.head(max_stays)
    if stays.empty:
        raise ValueError(f"dataset {_NAME!r}: no labelled stays left in {str(stays_path)!r}")
    stays = stays.reset_index(drop=True)
    ids = stays["patientunitstayid"].astype(int).tolist()
    files = _series_files(ts_path, ids, Path(series_root).expanduser() if series_root else default_series_root(ts_path))

    table = pd.DataFrame(
        {
            "sample_id": stays["patientunitstayid"].astype(str),
            "label": stays["hosp_mort"].map({0.0: "alive", 1.0: "died"}),
            "group_id": stays["uniquepid"].astype(str),
        }
    )
    for column in NUMERIC:
        table[column] = pd.to_numeric(stays[column], errors="coerce").astype(float)
    for column in CATEGORICAL:
        table[column] = pd.Series([None if pd.isna(v) else str(v) for v in stays[column]], dtype=object)
    table["vitals"] = pd.Series([files.get(s) for s in ids], dtype=object)
    table["hosp_region"] = stays["hosp_region"].fillna("unknown").astype(str)
    table["hospitalid"] = stays["hospitalid"].astype(str)
    table["apache_iva_pred_hosp_mort"] = stays["apache_iva_pred_hosp_mort"].astype(float)

    columns = {"sample_id": "id", "label": "label", "group_id": "group"}
    columns |= {c: "numeric" for c in NUMERIC} | {c: "categorical" for c in CATEGORICAL}
    columns |= {
        "vitals": "series",
        "hosp_region": "ignore",
        "hospitalid": "ignore",
        "apache_iva_pred_hosp_mort": "ignore",
    }
    schema = Schema(columns=columns, task="binary", classes=["alive", "died"])
    n_series = int(table["vitals"].notna().sum())
    return SampleTable(
        name=_NAME,
        table=table,
        schema=schema,
        site_column="hosp_region",
        description=f"eICU-CRD demo ({len(table)} labelled ICU stays, {table['group_id'].nunique()} patients, "
        f"{n_series} with 48 h series), in-hospital mortality, tabular + series 'vitals', natural site 'hosp_region'",
    )

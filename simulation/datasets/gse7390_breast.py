"""GSE7390 (TRANSBIG) breast cancer: 76-gene expression + 4 clinical variables, survival.

Reference: Desmedt C. et al. Strong time dependence of the 76-gene prognostic signature for
node-negative breast cancer patients in the TRANSBIG multicenter independent validation
series. Clin. Cancer Res. 13(11):3207-3214 (2007). NCBI GEO GSE7390; see
``data/gse7390_breast/README.md``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from client.schema import Schema
from simulation.datasets.base import DATASETS, SampleTable, require_columns, require_file, resolve_root

__all__ = ["load", "GRADES", "ER"]

GRADES = ["well differentiated", "intermediate", "poorly differentiated"]
ER = ["negative", "positive"]
_CLINICAL = ["row", "age", "size", "grade", "er", "t.tdm", "e.tdm"]


@DATASETS.register("gse7390_breast")
def load(*, root: str | Path | None = None, task: str | None = None) -> SampleTable:
    """Load GSE7390: one row per patient, time to distant metastasis, no natural site.

    Args:
        root: folder with ``gse7390.csv``; default the vendored copy.
        task: only ``"survival"`` (the default).

    Returns:
        The sample table: ``age``/``size`` numeric, ``grade``/``er`` categorical (the source's
        ``unkown`` grade is missing), the 76 probe-set columns inline with role ``"omics"``.
    """
    if task not in (None, "survival"):
        raise ValueError(f"dataset 'gse7390_breast' has only the 'survival' task, got {task!r}")
    folder, _ = resolve_root(root, "gse7390_breast")
    path = require_file(folder / "gse7390.csv", dataset="gse7390_breast", what="the expression + clinical table")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    require_columns(raw, _CLINICAL, dataset="gse7390_breast", path=path)
    probes = [c for c in raw.columns if c not in _CLINICAL]

    def categorical(column: str) -> list[str | None]:
        return [None if v in ("", "unkown", "unknown") else v for v in raw[column]]

    table = pd.DataFrame({
        "sample_id": ("gse7390_" + raw["row"].astype(str)).to_numpy(),
        "time": pd.to_numeric(raw["t.tdm"]).astype(float).to_numpy(),
        "event": pd.to_numeric(raw["e.tdm"]).astype(int).to_numpy(),
        "age": pd.to_numeric(raw["age"]).astype(float).to_numpy(),
        "size": pd.to_numeric(raw["size"]).astype(float).to_numpy(),
        "grade": pd.Series(categorical("grade"), dtype=object),
        "er": pd.Series(categorical("er"), dtype=object),
    })
    omics = pd.DataFrame({p: pd.to_numeric(raw[p]).astype(float).to_numpy() for p in probes})
    table = pd.concat([table, omics], axis=1)
    columns = {"sample_id": "id", "time": "time", "event": "event", "age": "numeric", "size": "numeric",
               "grade": "categorical", "er": "categorical"}
    columns.update({p: "omics" for p in probes})
    return SampleTable(
        name="gse7390_breast",
        table=table,
        schema=Schema(columns=columns, task="survival", categories={"grade": list(GRADES), "er": list(ER)}),
        site_column=None,
        description=f"GSE7390 breast cancer ({len(table)} patients), {len(probes)}-gene omics + clinical, "
        "time to distant metastasis; no natural site",
    )

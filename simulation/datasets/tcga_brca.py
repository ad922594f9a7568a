"""TCGA-BRCA clinical survival data as FLamby's Fed-TCGA-BRCA: 39 features, 6 natural regions.

References: Liu J. et al., Cell 173(2):400-416 (2018); Andreux M. et al., arXiv:2006.08997
(2020); Ogier du Terrail J. et al., FLamby, NeurIPS Datasets and Benchmarks (2022). TCGA
open access (GDC data access policy); see ``data/tcga_brca/README.md``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from client.schema import Schema
from simulation.datasets.base import DATASETS, SampleTable, require_columns, require_file, resolve_root

__all__ = ["load"]

_SITE_COLUMNS = ["region", "source_site"]


@DATASETS.register("tcga_brca")
def load(
    *,
    root: str | Path | None = None,
    task: str | None = None,
    include_other: bool = False,
    flamby_split: bool = False,
) -> SampleTable:
    """Load TCGA-BRCA: one row per patient, survival target, natural site ``region``.

    Args:
        root: folder with ``brca.csv`` and ``sites.csv``; default the vendored copy.
        task: only ``"survival"`` (the default).
        include_other: keep the 8 patients whose region is "Other" (they are in no FLamby
            split, so they are dropped by default).
        flamby_split: add a ``split`` column with FLamby's fixed train/test fold (no val).

    Returns:
        The sample table; ``region`` (6 FLamby regions) and ``source_site`` (40 tissue source
        sites) are both natural-site columns with role ``"ignore"``.
    """
    if task not in (None, "survival"):
        raise ValueError(f"dataset 'tcga_brca' has only the 'survival' task, got {task!r}")
    folder, _ = resolve_root(root, "tcga_brca")
    brca_path = require_file(folder / "brca.csv", dataset="tcga_brca", what="the clinical table")
    sites_path = require_file(folder / "sites.csv", dataset="tcga_brca", what="the per-patient site table")
    brca = pd.read_csv(brca_path)
    sites = pd.read_csv(sites_path, dtype=str, keep_default_na=False)
    require_columns(brca, ["pid", "E", "T"], dataset="tcga_brca", path=brca_path)
    require_columns(sites, ["pid", "region", "source_site", "flamby_fold"], dataset="tcga_brca", path=sites_path)
    merged = brca.merge(sites, on="pid", how="left", validate="one_to_one")
    unmatched = merged.loc[merged["region"].isna(), "pid"]
    if len(unmatched):
        raise ValueError(f"dataset 'tcga_brca': {len(unmatched)} patient(s) of {str(brca_path)!r} are not in "
                         f"{str(sites_path)!r}, e.g. {unmatched.iloc[0]!r}")
    if not include_other:
        merged = merged[merged["region"] != "Other"].reset_index(drop=True)

    features = [c for c in brca.columns if c not in ("pid", "E", "T")]
    table = pd.DataFrame({
        "sample_id": merged["pid"].astype(str).to_numpy(),
        "time": merged["T"].astype(float).to_numpy(),
        "event": merged["E"].astype(float).round().astype(int).to_numpy(),
    })
    columns = {"sample_id": "id", "time": "time", "event": "event"}
    if flamby_split:
        table["split"] = pd.Series([v or None for v in merged["flamby_fold"]], dtype=object)
        columns["split"] = "split"
    for c in features:
        table[c] = merged[c].astype(float).to_numpy()
        columns[c] = "numeric"
    for c in _SITE_COLUMNS:
        table[c] = merged[c].astype(str).to_numpy()
        columns[c] = "ignore"
    return SampleTable(
        name="tcga_brca",
        table=table,
        schema=Schema(columns=columns, task="survival"),
        site_column="region",
        description=f"TCGA-BRCA clinical survival ({len(table)} patients, {len(features)} features), "
        f"natural site 'region' ({table['region'].nunique()} regions)",
    )

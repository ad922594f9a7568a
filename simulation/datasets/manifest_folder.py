"""A user's folder of site manifests (one ``*.csv`` per site, optional ``schema.yaml``) as one
sample table whose natural site is the file stem, so ``partition=natural`` replays the
user's own sites and any other partitioner re-carves them. Ids are the user's, unique
within each site only (``SampleTable.ids_per_site``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from client.manifest import read_manifest_folder
from client.role_inference import sort_classes
from client.schema import FILE_ROLES
from simulation.datasets.base import DATASETS, SampleTable

__all__ = ["load"]


def _typed(column: pd.Series, role: str) -> pd.Series:
    """Manifest strings as the sample table's types (validated by ``read_manifest_folder``)."""
    if role in ("numeric", "omics", "time"):
        return pd.to_numeric(column, errors="coerce").astype(float)
    if role == "event":
        return pd.to_numeric(column, errors="coerce").round().astype(int)
    values = [None if v is None or (isinstance(v, float) and np.isnan(v)) or v == "" else str(v) for v in column]
    return pd.Series(values, dtype=object, index=column.index)


@DATASETS.register("manifests")
def load(*, root: str | Path | None = None, task: str | None = None, check_files: bool = True) -> SampleTable:
    """Read and validate every manifest of ``root``, and stack them with a site column.

    Args:
        root: the folder of manifests (required).
        task: overrides the schema's task and inference.
        check_files: open every image/series file while validating.

    Returns:
        The sample table; image/series cells are absolute paths (or None), the site column
        (``site``, or ``manifest_site`` if the manifests already use that name) holds each
        row's file stem. The task and the classes are fixed to what the sites were
        validated with, so re-carved sites are read the same way.

    Raises:
        client.manifest.ManifestError: listing every problem of every manifest.
    """
    if root is None:
        raise ValueError("dataset 'manifests' needs root= the folder holding one CSV per site (and schema.yaml)")
    manifests = read_manifest_folder(root, task=task, check_files=check_files)
    schema = manifests[0].schema
    site_column = "site" if "site" not in schema.columns else "manifest_site"
    frames = []
    for m in manifests:
        frame = m.table.reset_index(drop=True).copy()
        for col in schema.columns_with(*FILE_ROLES):
            if col in frame.columns:
                paths = [m.file_path(col, i) for i in range(len(frame))]
                frame[col] = pd.Series([None if p is None else str(Path(p).resolve()) for p in paths], dtype=object)
        frame[site_column] = m.site
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    columns = {c: schema.columns.get(c, "ignore") for c in table.columns}
    columns[site_column] = "ignore"
    for col in table.columns:
        if columns[col] not in FILE_ROLES and col != site_column:
            table[col] = _typed(table[col], columns[col])
    task = schema.task or manifests[0].task
    classes = schema.classes
    if classes is None and task in ("binary", "multiclass"):
        classes = sort_classes(table[schema.label_column].dropna())
    schema = dataclasses.replace(schema, columns=columns, task=task, classes=classes)
    return SampleTable(
        name="manifests",
        table=table,
        schema=schema,
        site_column=site_column,
        description=f"manifests in {str(Path(root))!r}: {len(manifests)} site(s), {len(table)} rows, "
        f"{schema.task} task, modalities {', '.join(schema.modalities)}",
        ids_per_site=True,
        inferred=manifests[0].inferred,
    )

"""HAM10000 dermoscopy images + age, sex and body site, with 4 natural sources.

Reference: Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of
multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161
(2018). Licence CC BY-NC 4.0; see ``data/ham10000/README.md``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from client.schema import Schema
from simulation.datasets.base import DATASETS, SampleTable, require_columns, require_file, resolve_root

__all__ = ["load", "MALIGNANT", "DX_CLASSES", "LOCALIZATIONS", "SEXES"]

#: dx codes counted as malignant in the binary task (melanoma, basal cell carcinoma, AKIEC).
MALIGNANT = frozenset({"mel", "bcc", "akiec"})
DX_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
SEXES = ["female", "male"]
LOCALIZATIONS = sorted([
    "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
    "lower extremity", "neck", "scalp", "trunk", "upper extremity",
])
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _image_paths(meta: pd.DataFrame, folder: Path, images: str, csv_path: Path) -> list[str]:
    """Absolute image path per row: the ``image`` column if present, else ``<images>/<image_id>.*``."""
    if "image" in meta.columns:
        # The folder resolved once, each row joined and normalised: a resolve() per row costs
        # 0.3 s of the 0.35 s the vendored table takes to load, before the app can be submitted.
        base = str(folder.resolve())
        paths = [os.path.normpath(os.path.join(base, p)) if isinstance(p, str) and p else None for p in meta["image"]]
    else:
        image_dir = folder / images
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"dataset 'ham10000': {str(csv_path)!r} has no 'image' column and the image folder "
                f"{str(image_dir)!r} does not exist; pass images= the folder holding <image_id>.png/.jpg"
            )
        by_stem = {
            Path(f).stem: str(image_dir / f) for f in os.listdir(image_dir) if f.lower().endswith(_IMAGE_SUFFIXES)
        }
        paths = [by_stem.get(i) for i in meta["image_id"]]
    lost = [(i, p) for i, p in zip(meta["image_id"], paths) if p is None or not os.path.exists(p)]
    if lost:
        shown = ", ".join(f"{i} ({p})" for i, p in lost[:5])
        raise FileNotFoundError(f"dataset 'ham10000': {len(lost)} image(s) listed in {str(csv_path)!r} are missing: {shown}")
    return paths


def _vocabulary(values: pd.Series, known: list[str], column: str) -> list[str]:
    extra = sorted(set(values.dropna()) - set(known))
    if extra:
        warnings.warn(f"dataset 'ham10000': column {column!r} has values outside the known vocabulary: {extra}")
    return known + extra


def _image_shape(path: str) -> list[int]:
    with Image.open(path) as img:
        return [len(img.getbands()), img.height, img.width]


@DATASETS.register("ham10000")
def load(
    *, root: str | Path | None = None, task: str | None = None, metadata: str = "metadata.csv", images: str = "images"
) -> SampleTable:
    """Load HAM10000: one row per image, grouped by lesion, natural site ``dataset``.

    Args:
        root: folder with ``metadata.csv`` (HAM10000 metadata, optionally with an ``image``
            column of relative paths) and an image folder; default the vendored 32x32 copy.
        task: ``"binary"`` (default; malignant = dx in {mel, bcc, akiec}) or ``"multiclass"`` (dx).
        metadata: the metadata file name inside ``root``.
        images: the image folder inside ``root``, used when the metadata has no ``image`` column.

    Returns:
        The sample table. ``dx_type`` is never included: it leaks the label and the site.
    """
    task = task or "binary"
    if task not in ("binary", "multiclass"):
        raise ValueError(f"dataset 'ham10000': task must be 'binary' or 'multiclass', got {task!r}")
    folder, is_default = resolve_root(root, "ham10000")
    csv_path = require_file(folder / metadata, dataset="ham10000", what="the HAM10000 metadata CSV")
    meta = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    require_columns(meta, ["image_id", "lesion_id", "dx", "age", "sex", "localization"], dataset="ham10000", path=csv_path)
    if meta.empty:
        raise ValueError(f"dataset 'ham10000': {str(csv_path)!r} has no rows")
    bad_dx = sorted(set(meta["dx"]) - set(DX_CLASSES))
    if bad_dx:
        raise ValueError(f"dataset 'ham10000': {str(csv_path)!r} column 'dx' has unknown codes {bad_dx}; expected {DX_CLASSES}")

    label = meta["dx"].map(lambda d: "malignant" if d in MALIGNANT else "benign") if task == "binary" else meta["dx"]
    age = pd.to_numeric(meta["age"].replace("", np.nan), errors="coerce").astype(float)
    # README: 0.0 occurs only at vidir_modern and is probably "unknown", like the empty cells.
    age = age.where(age != 0.0)

    def categorical(column: str) -> pd.Series:
        return pd.Series([None if v in ("", "unknown") else v for v in meta[column]], dtype=object)

    sex, localization = categorical("sex"), categorical("localization")
    paths = _image_paths(meta, folder, images, csv_path)
    table = pd.DataFrame({
        "sample_id": meta["image_id"].astype(str).to_numpy(),
        "label": label.astype(str).to_numpy(),
        "group_id": meta["lesion_id"].astype(str).to_numpy(),
        "age": age.to_numpy(),
        "sex": sex,
        "localization": localization,
        "image": pd.Series(paths, dtype=object),
    })
    columns = {
        "sample_id": "id", "label": "label", "group_id": "group", "age": "numeric",
        "sex": "categorical", "localization": "categorical", "image": "image",
    }
    site_column = None
    if "dataset" in meta.columns:
        table["dataset"] = meta["dataset"].astype(str).to_numpy()
        columns["dataset"] = "ignore"
        site_column = "dataset"
    else:
        warnings.warn(f"dataset 'ham10000': {str(csv_path)!r} has no 'dataset' column, so there are no natural sites")
    schema = Schema(
        columns=columns,
        task=task,
        classes=["benign", "malignant"] if task == "binary" else list(DX_CLASSES),
        categories={
            "sex": _vocabulary(table["sex"], SEXES, "sex"),
            "localization": _vocabulary(table["localization"], LOCALIZATIONS, "localization"),
        },
        shapes={"image": [3, 32, 32] if is_default else _image_shape(paths[0])},
    )
    return SampleTable(
        name="ham10000",
        table=table,
        schema=schema,
        site_column=site_column,
        description=f"HAM10000 dermoscopy ({len(table)} images, {table['group_id'].nunique()} lesions), "
        f"{task} task, image + age/sex/localization, natural site 'dataset'",
    )

"""Train / val / test splits within one site: whole groups per split, stratified, seeded.

Splits never cut a group (a lesion's images all land in one split, or results leak),
follow the label mix (the event for survival) where the site allows it, and honour a split
the data already carries. Columns are named by the caller (from the schema's roles); the
defaults are the canonical names.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd

from client.manifest import Manifest
from client.schema import CANONICAL_NAMES, SPLITS

__all__ = ["SPLITS", "split_site", "site_seed", "with_site_splits"]


def site_seed(seed: int, site: str) -> int:
    """A per-site seed from the run seed and the site name, stable across processes.

    Python's ``hash()`` of a string changes with every interpreter start, so use SHA-256.
    """
    digest = hashlib.sha256(f"{int(seed)}:{site}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**32)


def _given_split(rows: pd.DataFrame, column: str | None, id_column: str | None) -> np.ndarray | None:
    """The existing split ``column`` if every cell is filled; None if all are empty."""
    if column is None or column not in rows.columns:
        return None
    values = rows[column]
    empty = values.isna() | (values.astype(str).str.strip() == "")
    if empty.all():
        return None
    if empty.any():
        example = f" (e.g. sample {rows[id_column][empty].iloc[0]!r})" if id_column in rows.columns else ""
        raise ValueError(f"column {column!r} is filled in {int((~empty).sum())} row(s) but empty in {int(empty.sum())}"
                         f"{example}; fill every row or none")
    split = values.astype(str).str.strip().str.lower().to_numpy()
    bad = sorted(set(split) - set(SPLITS))
    if bad:
        raise ValueError(f"column {column!r} has values {bad}; expected {list(SPLITS)}")
    return split.astype(object)


def _group_codes(rows: pd.DataFrame, column: str | None) -> np.ndarray:
    if column is None or column not in rows.columns:
        return np.arange(len(rows))
    # A row without a group id is its own group.
    keys = [("r", i) if k is None or (isinstance(k, float) and np.isnan(k)) or str(k).strip() == "" else ("g", str(k))
            for i, k in enumerate(rows[column].tolist())]
    codes, _ = pd.factorize(pd.Series(keys, dtype=object), sort=False)
    return np.asarray(codes, dtype=int)


def split_site(
    rows: pd.DataFrame,
    *,
    seed: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    label_column: str | None = CANONICAL_NAMES["label"],
    group_column: str | None = CANONICAL_NAMES["group"],
    split_column: str | None = CANONICAL_NAMES["split"],
    id_column: str | None = CANONICAL_NAMES["id"],
) -> np.ndarray:
    """Assign each row of one site to train, val or test.

    Groups (``group_column``, or each row alone) are shuffled with ``seed``, ordered largest
    first, and each goes to the split furthest below its target share within the group's
    stratum (its most common ``label_column`` value; the canonical event column when
    ``label_column`` is absent), with
    the overall shortfall breaking ties. With >= 3 groups no split is left empty; a site with
    1 group puts it in train, with 2 groups one in train and one in test.

    Args:
        rows: the site's rows.
        seed: the shuffle seed (see ``site_seed``).
        val_fraction: target share of rows in val.
        test_fraction: target share of rows in test.
        label_column: column to stratify by; falls back to the event column, then to none.
        group_column: column of group ids (rows of a group stay together), if any.
        split_column: column of a split the data already carries, honoured when filled.
        id_column: column of sample ids, named in errors.

    Returns:
        [N] object array of ``"train"`` / ``"val"`` / ``"test"``.
    """
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    given = _given_split(rows, split_column, id_column)
    if given is not None:
        return given
    n = len(rows)
    if n == 0:
        return np.empty(0, dtype=object)
    codes = _group_codes(rows, group_column)
    n_groups = int(codes.max()) + 1
    size = np.bincount(codes, minlength=n_groups)
    event = CANONICAL_NAMES["event"]
    column = label_column if label_column in rows.columns else (event if event in rows.columns else None)
    strata = rows[column].astype(str).to_numpy() if column else np.zeros(n, dtype=str)
    counts = pd.DataFrame({"g": codes, "s": strata}).groupby(["g", "s"]).size().reset_index(name="n")
    counts = counts.sort_values(["g", "n", "s"], ascending=[True, False, True]).drop_duplicates("g")
    group_stratum = counts.set_index("g")["s"].reindex(range(n_groups)).to_numpy()

    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-size[order], kind="stable")]
    target = np.array([1.0 - val_fraction - test_fraction, val_fraction, test_fraction])
    split_of = np.empty(n_groups, dtype=int)
    if n_groups <= 2:
        split_of[order] = [0, 2][:n_groups]
        return np.array(SPLITS, dtype=object)[split_of[codes]]
    total = np.zeros(3)
    per_stratum: dict[str, np.ndarray] = {}
    for g in order:
        have = per_stratum.setdefault(group_stratum[g], np.zeros(3))
        # Shortfall against the target share once this group is placed; the tie-break
        # (overall shortfall) spreads small strata over the splits.
        local = target * (have.sum() + size[g]) - have
        overall = target * (total.sum() + size[g]) - total
        s = max(range(3), key=lambda k: (round(local[k], 9), round(overall[k], 9), -k))
        split_of[g] = s
        have[s] += size[g]
        total[s] += size[g]
    _fill_empty(split_of, size, target)
    return np.array(SPLITS, dtype=object)[split_of[codes]]


def _fill_empty(split_of: np.ndarray, size: np.ndarray, target: np.ndarray) -> None:
    """Move the smallest group of the fullest split into each empty split that has a target."""
    for s in range(3):
        if target[s] == 0 or (split_of == s).any():
            continue
        counts = np.bincount(split_of, minlength=3)
        donor = int(np.argmax(np.where(counts > 1, np.bincount(split_of, weights=size, minlength=3), -1)))
        members = np.flatnonzero(split_of == donor)
        split_of[members[np.argmin(size[members])]] = s


def with_site_splits(manifest: Manifest, *, val_fraction: float = 0.15, test_fraction: float = 0.2) -> Manifest:
    """``manifest`` with its own train/val/test split when it carries no split column.

    A deployed site often has no split column. Each process of the site (one per message)
    derives the same split from the site's name, so the statistics round, every training
    round and the final evaluation see the same rows in each split. A manifest with a split
    column is returned unchanged.
    """
    schema = manifest.schema
    if schema.split_column is not None and schema.split_column in manifest.table.columns:
        return manifest
    event = schema.event_column if manifest.task == "survival" else None
    split = split_site(manifest.table, seed=site_seed(0, manifest.site), val_fraction=val_fraction,
                       test_fraction=test_fraction, label_column=schema.label_column or event,
                       group_column=schema.group_column, split_column=None, id_column=schema.id_column)  # fmt: skip
    return replace(manifest, assigned_split=np.asarray(split, dtype=object))

"""Figures of one run: learning curves, the partition, modality coverage and per-site results.

Every function reads only ``metrics.csv`` (as a DataFrame) and the run summary, writes one PNG
atomically and returns its path. Each tolerates a single method or site, NaN values, missing
confidence intervals and missing rounds: an empty panel says so instead of failing.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers or in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from client.atomic_io import atomic_open  # noqa: E402
from simulation.run_summary import RunSummary  # noqa: E402

__all__ = [
    "METHOD_ORDER",
    "metric_label",
    "method_names",
    "plot_learning_curves",
    "plot_partition",
    "plot_modalities",
    "plot_site_results",
    "plot_epsilon",
    "save_figure",
]

METHOD_ORDER = ("federated", "pooled", "local")
_METHOD_COLOURS = {"federated": "tab:blue", "pooled": "tab:orange", "local": "tab:green"}
_METRIC_NAMES = {
    "auroc": "AUROC", "auprc": "AUPRC", "balanced_accuracy": "balanced accuracy", "accuracy": "accuracy",
    "f1": "F1", "ece": "ECE", "brier": "Brier score", "loss": "loss", "c_index": "C-index",
    "mae": "MAE", "rmse": "RMSE", "r2": "R²",
}
_SPECIAL_SITES = ("__mean__", "__pooled__")
_DPI = 120


def metric_label(metric: str, higher_is_better: bool | None = None) -> str:
    """Readable name of a metric, with its direction when given (``"RMSE (lower is better)"``)."""
    name = _METRIC_NAMES.get(metric, metric.replace("_", " "))
    if higher_is_better is None:
        return name
    return f"{name} ({'higher' if higher_is_better else 'lower'} is better)"


def method_names(summary: RunSummary) -> list[str]:
    """Methods present in the summary, in the fixed order federated, pooled, local, then others."""
    present = list(summary.methods)
    return [m for m in METHOD_ORDER if m in present] + [m for m in present if m not in METHOD_ORDER]


def _colour(method: str, index: int) -> str:
    return _METHOD_COLOURS.get(method, f"C{(index + 3) % 10}")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save ``fig`` as PNG atomically (:func:`client.atomic_io.atomic_open`), then close it."""
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, dpi=_DPI, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _empty(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _clean_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` with numeric round/value columns; rows without a round are dropped."""
    needed = {"method", "round", "site", "split", "metric", "value"}
    missing = needed - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics.csv lacks the column(s) {sorted(missing)}; expected {sorted(needed)}")
    frame = metrics.copy()
    frame["round"] = pd.to_numeric(frame["round"], errors="coerce")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").replace([np.inf, -np.inf], np.nan)
    frame["site"] = frame["site"].astype(str)
    return frame.dropna(subset=["round"])


def _mean_curve(rows: pd.DataFrame) -> pd.Series:
    """Value per round: the ``__mean__`` rows if any, else the mean over the real sites."""
    mean_rows = rows[rows["site"] == "__mean__"]
    if mean_rows["value"].notna().any():
        return mean_rows.groupby("round")["value"].mean().sort_index()
    site_rows = rows[~rows["site"].isin(_SPECIAL_SITES)]
    return site_rows.groupby("round")["value"].mean().sort_index()


def _draw_curves(
    ax: plt.Axes, curves: dict[str, pd.Series], ylabel: str, title: str, *, rounds: list[float], legend: bool = True
) -> None:
    drawn = False
    for i, (method, curve) in enumerate(curves.items()):
        curve = curve.dropna()
        if curve.empty:
            continue
        ax.plot(curve.index, curve.values, marker="o", color=_colour(method, i), label=method)
        drawn = True
    if not drawn:
        _empty(ax, "no validation values")
    else:
        ax.set_xlabel("round")
        # the same round axis on every panel, so a site that missed rounds lines up with the rest
        if len(rounds) <= 15:
            ax.set_xticks(rounds)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(rounds) > 1:
            pad = 0.05 * (rounds[-1] - rounds[0])
            ax.set_xlim(rounds[0] - pad, rounds[-1] + pad)
        if legend:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def plot_learning_curves(metrics: pd.DataFrame, summary: RunSummary, out_dir: Path) -> list[Path]:
    """Validation headline metric (and loss) per round, one line per method.

    Args:
        metrics: the long-format ``metrics.csv``.
        summary: the run summary (``headline``, ``higher_is_better``, ``sites``).
        out_dir: folder for ``learning_curves.png`` and ``learning_curves_per_site.png``.

    Returns:
        The two paths written.
    """
    out_dir = Path(out_dir)
    headline = summary.headline
    label = metric_label(headline, summary.higher_is_better)
    frame = _clean_metrics(metrics)
    val = frame[frame["split"] == "val"]
    methods = [m for m in METHOD_ORDER if m in set(val["method"])]
    methods += sorted(set(val["method"]) - set(methods))
    rounds = sorted(float(r) for r in val["round"].unique())

    fig, (ax_head, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, ylabel in ((ax_head, headline, label), (ax_loss, "loss", metric_label("loss", False))):
        rows = val[val["metric"] == metric]
        curves = {m: _mean_curve(rows[rows["method"] == m]) for m in methods}
        _draw_curves(ax, curves, ylabel, f"validation {metric_label(metric)}, mean over sites", rounds=rounds)
    fig.suptitle(summary.name)
    paths = [save_figure(fig, out_dir / "learning_curves.png")]

    sites = summary.site_names() or sorted(set(val["site"]) - set(_SPECIAL_SITES))
    n = max(len(sites), 1)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False, sharey=True)
    rows = val[val["metric"] == headline]
    for k, (ax, site) in enumerate(zip(axes.flat, sites)):
        site_rows = rows[rows["site"] == site]
        curves = {m: site_rows[site_rows["method"] == m].groupby("round")["value"].mean().sort_index()
                  for m in methods}
        _draw_curves(ax, curves, label if k % ncols == 0 else "", site, rounds=rounds, legend=k == 0)
    if not sites:
        _empty(axes.flat[0], "no sites")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"validation {metric_label(headline)} per site")
    fig.tight_layout()
    paths.append(save_figure(fig, out_dir / "learning_curves_per_site.png"))
    return paths


def _partition_sites(summary: RunSummary) -> list[str]:
    partition = summary.partition
    ordered = [s for s in summary.site_names() if s in partition]
    return ordered + [s for s in partition if s not in ordered]


def plot_epsilon(metrics: pd.DataFrame, out_dir: Path) -> Path | None:
    """Each DP site's epsilon after every round (``train-epsilon`` of its replies), or None
    when the run had no DP. A line that ends before the last round is a site that stopped."""
    frame = _clean_metrics(metrics)
    rows = frame[(frame["method"] == "federated") & (frame["split"] == "train") & (frame["metric"] == "epsilon")
                 & ~frame["site"].isin(_SPECIAL_SITES)]  # fmt: skip
    if rows["value"].notna().sum() == 0:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for site, group in rows.groupby("site"):
        curve = group.groupby("round")["value"].max().sort_index()
        ax.plot(curve.index, curve.values, marker="o", markersize=3, label=site)
    ax.set_xlabel("round")
    ax.set_ylabel("epsilon (site's whole ledger)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Privacy spent per site")
    ax.legend(fontsize=8)
    return save_figure(fig, Path(out_dir) / "epsilon.png")


def plot_partition(summary: RunSummary, out_dir: Path) -> Path:
    """Samples per site (stacked train/val/test bars) and the label mix per site.

    Classification shows each class's share; survival shows the event/censored share;
    regression (no labels) says there is no label mix to show.

    Args:
        summary: the run summary (``partition``, ``task``).
        out_dir: folder for ``partition.png``.

    Returns:
        The path written.
    """
    partition = summary.partition
    sites = _partition_sites(summary)
    x = np.arange(len(sites))
    fig, (ax_n, ax_mix) = plt.subplots(1, 2, figsize=(max(9, 1.6 * len(sites) + 6), 4.2))

    bottom = np.zeros(len(sites))
    for split, colour in (("train", "tab:blue"), ("val", "tab:orange"), ("test", "tab:green")):
        counts = np.array([float(getattr(partition[s], split)) for s in sites])
        ax_n.bar(x, counts, bottom=bottom, color=colour, label=split)
        bottom += counts
    if sites:
        ax_n.set_xticks(x, sites, rotation=30, ha="right")
        ax_n.legend(fontsize="small")
    else:
        _empty(ax_n, "no partition in the summary")
    ax_n.set_ylabel("samples")
    ax_n.set_title("samples per site")

    labelled = [s for s in sites if partition[s].labels]
    keys: dict[str, None] = {}
    for s in labelled:
        keys.update(dict.fromkeys(partition[s].labels))
    survival = summary.task == "survival" or (bool(keys) and set(keys) <= {"events", "censored"})
    if labelled:
        totals = np.array([sum(float(v) for v in partition[s].labels.values()) for s in sites])
        bottom = np.zeros(len(sites))
        for i, key in enumerate(keys):
            counts = np.array([float(partition[s].labels.get(key, 0)) for s in sites])
            share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
            ax_mix.bar(x, share, bottom=bottom, color=f"C{i % 10}", label=str(key))
            bottom += share
        ax_mix.set_xticks(x, sites, rotation=30, ha="right")
        ax_mix.set_ylim(0, 1)
        ax_mix.set_ylabel("share of the site's samples")
        ax_mix.legend(fontsize="small", loc="upper right")
    else:
        _empty(ax_mix, "no labels to show (regression task)" if sites else "no partition in the summary")
    ax_mix.set_title("event share per site" if survival else "label mix per site")
    fig.suptitle(summary.name)
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "partition.png")


def plot_modalities(summary: RunSummary, out_dir: Path) -> Path:
    """Share of each site's samples that have each modality, as an annotated heatmap.

    Args:
        summary: the run summary (``partition`` with ``modalities`` counts per site).
        out_dir: folder for ``modalities.png``.

    Returns:
        The path written.
    """
    partition = summary.partition
    sites = _partition_sites(summary)
    modalities: dict[str, None] = {}
    for s in sites:
        modalities.update(dict.fromkeys(partition[s].modalities))
    names = list(modalities)
    share = np.full((len(sites), len(names)), np.nan)
    for i, s in enumerate(sites):
        counts = partition[s].modalities
        total = float(partition[s].train + partition[s].val + partition[s].test)
        total = total or max((float(v) for v in counts.values()), default=0.0)
        for j, m in enumerate(names):
            if total > 0 and m in counts:
                share[i, j] = float(counts[m]) / total

    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(names) + 3), max(3, 0.6 * len(sites) + 1.8)))
    if not sites or not names:
        _empty(ax, "no modality counts in the summary")
    else:
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(len(sites)):
            for j in range(len(names)):
                value = share[i, j]
                text = "n/a" if not np.isfinite(value) else f"{100 * value:.0f}%"
                dark = np.isfinite(value) and value > 0.6
                ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(sites)), sites)
        fig.colorbar(image, ax=ax, label="share of the site's samples")
    ax.set_title("samples with each modality")
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "modalities.png")


def plot_site_results(summary: RunSummary, out_dir: Path) -> Path:
    """Headline metric per site per method with CI error bars, and each method's site mean.

    Args:
        summary: the run summary (``methods``, ``headline``, ``higher_is_better``).
        out_dir: folder for ``site_results.png``.

    Returns:
        The path written.
    """
    headline = summary.headline
    methods = method_names(summary)
    sites = summary.site_names()
    x = np.arange(len(sites))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(sites) * max(len(methods), 1) / 2 + 4), 4.5))
    drawn = False
    for k, method in enumerate(methods):
        result = summary.methods[method]
        colour = _colour(method, k)
        offset = (k - (len(methods) - 1) / 2) * width
        for i, site in enumerate(sites):
            row = result.per_site.get(site)
            value = row.value(headline) if row is not None else None
            if not _finite(value):
                continue
            ci = row.interval(headline)
            yerr = None
            if ci is not None and len(ci) == 2 and all(_finite(c) for c in ci):
                yerr = [[max(value - ci[0], 0.0)], [max(ci[1] - value, 0.0)]]
            ax.errorbar(x[i] + offset, value, yerr=yerr, fmt="o", color=colour, capsize=4, label=method)
            drawn = True
        mean = result.mean(headline)
        if _finite(mean):
            ax.axhline(mean, color=colour, linestyle="--", linewidth=1.2, label=f"{method}: mean over sites {mean:.3f}")
            drawn = True
    if not drawn:
        _empty(ax, f"no {metric_label(headline)} values")
    else:
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize="small", loc="best")
        ax.grid(alpha=0.3, axis="y")
    if sites:
        ax.set_xticks(x, sites, rotation=30, ha="right")
    ax.set_ylabel(metric_label(headline, summary.higher_is_better))
    ax.set_title(f"test {metric_label(headline)} per site (95% CI); dashed: mean over sites")
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "site_results.png")

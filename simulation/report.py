"""The results of one run, for people: a terminal table, ``report.md`` and its figures.

The headline is the mean over the readable sites of the per-site metric: each site counts
once, as it would when deciding whether the model is good enough for *its* patients. Sites
with too few test positives or events to read are flagged (†) and shown, but kept out of
the mean. The pooled-test figure (one metric over all sites' test rows together) is shown
beside it, and called inflated only where it is higher than the mean over sites.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from client.atomic_io import atomic_write_text
from client.site_evaluation import RANK_INTERVAL_RULE, READABLE_RULE, THRESHOLD_RULE
from simulation.attack_results import attack_lines
from simulation.explanations import plot_explanations
from simulation.plots import (
    method_names,
    metric_label,
    plot_epsilon,
    plot_learning_curves,
    plot_modalities,
    plot_partition,
    plot_site_results,
)
from simulation.privacy_report import privacy_lines
from simulation.run_summary import RunSummary, SiteResult

__all__ = ["results_table", "print_results", "write_report", "write_all"]

MEAN_LABEL = "mean over sites"
POOLED_LABEL = "pooled test"
INFLATED_LABEL = "pooled test (inflated)"
#: The pooled test has no validation split of its own to choose a threshold on.
POOLED_THRESHOLD_CELL = "0.5"
FLAG = " †"
#: The terminal shows these columns (plus the threshold); report.md shows every metric.
_TERMINAL_METRICS = {"binary": ["auroc", "balanced_accuracy", "f1"], "multiclass": ["auroc", "balanced_accuracy"]}
_METRICS_COLUMNS = ["method", "round", "site", "split", "metric", "value"]


@dataclass(frozen=True)
class _Row:
    """One row of the results table, already formatted."""

    method: str
    label: str
    kind: str  # "site" | "mean" | "pooled"
    cells: list[str]


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: object, ci: object = None) -> str:
    """``0.812 [0.751, 0.864]``; ``n/a`` for a missing or non-finite value."""
    if not _finite(value):
        return "n/a"
    text = f"{value:.3f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_finite(c) for c in ci):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def _metrics(summary: RunSummary, *, terminal: bool = False) -> list[str]:
    """Table columns: ``summary.metrics``, with the headline first (fewer on a terminal)."""
    headline = summary.headline
    metrics = list(summary.metrics or [headline])
    if terminal:
        metrics = [m for m in metrics if m in _TERMINAL_METRICS.get(summary.task, metrics)]
    return [headline] + [m for m in metrics if m != headline]


def _inflated(summary: RunSummary, method: str) -> bool:
    """Whether the pooled-test figure reads better than the mean over sites for ``method``."""
    result = summary.methods.get(method)
    if result is None:
        return False
    pooled, mean = result.pooled(summary.headline), result.mean(summary.headline)
    if not (_finite(pooled) and _finite(mean)):
        return False
    return pooled > mean if summary.higher_is_better else pooled < mean


def _threshold_cell(row: SiteResult) -> str:
    return f"{row.threshold:.2f}" if _finite(row.threshold) else ""


def _count_key(summary: RunSummary) -> str | None:
    return {"binary": "n_pos", "survival": "n_events"}.get(summary.task)


def _test_counts(summary: RunSummary) -> dict[str, dict]:
    """Per site, ``n`` and the positive/event count of its test split (first method that has them)."""
    counts: dict[str, dict] = {}
    for method in method_names(summary):
        for site, row in summary.methods[method].per_site.items():
            for key in ("n", "n_pos", "n_events"):
                value = row.count(key)
                if value is not None and key not in counts.setdefault(site, {}):
                    counts[site][key] = value
    return counts


def _n_cell(counts: dict, key: str | None) -> str:
    if "n" not in counts:
        return ""
    if key is None or key not in counts:
        return str(counts["n"])
    noun = "pos" if key == "n_pos" else "events"
    return f"{counts['n']} ({counts[key]} {noun})"


def _rows(summary: RunSummary, *, terminal: bool = False) -> list[_Row]:
    """Per method: each site, then the mean over sites, then the pooled test, formatted."""
    headline, metrics, key = summary.headline, _metrics(summary, terminal=terminal), _count_key(summary)
    threshold = summary.task == "binary"
    counts = _test_counts(summary)
    sites = summary.site_names()
    n_sites = len(sites)
    rows = []
    for method in method_names(summary):
        result = summary.methods[method]
        per_site = result.per_site
        for site in [s for s in sites if s in per_site] + [s for s in per_site if s not in sites]:
            row = per_site[site]
            cells = [_fmt(row.value(m), row.interval(m) if m == headline else None) for m in metrics]
            cells += [_threshold_cell(row)] if threshold else []
            label = site + (FLAG if not row.readable else "")
            rows.append(_Row(method, label, "site", cells + [_n_cell(counts.get(site, {}), key)]))
        mean_n = result.site_mean_n
        cells = []
        for m in metrics:
            text = _fmt(result.mean(m))
            if m in mean_n and n_sites and mean_n[m] < n_sites and text != "n/a":
                text += f" ({mean_n[m]} of {n_sites} sites)"
            cells.append(text)
        rows.append(_Row(method, MEAN_LABEL, "mean", cells + [""] * (2 if threshold else 1)))
        label = INFLATED_LABEL if _inflated(summary, method) else POOLED_LABEL
        pooled_threshold = [POOLED_THRESHOLD_CELL if result.pooled_test else ""] if threshold else []
        rows.append(_Row(method, label, "pooled", [_fmt(result.pooled(m)) for m in metrics] + pooled_threshold + [""]))
    return rows


def _headers(summary: RunSummary, *, terminal: bool = False) -> list[str]:
    higher = summary.higher_is_better
    headline = summary.headline
    metric_headers = [
        f"{metric_label(m, higher)} [95% CI]" if m == headline else metric_label(m)
        for m in _metrics(summary, terminal=terminal)
    ]
    threshold = ["threshold"] if summary.task == "binary" else []
    return ["method", "site"] + metric_headers + threshold + ["test n"]


def results_table(summary: RunSummary) -> Table:
    """Per method: one row per site, the mean over sites (bold, the headline) and the pooled test.

    Args:
        summary: the run summary.

    Returns:
        A rich table; headline cells carry their 95% CI where one was computed, NaN shows ``n/a``.
    """
    table = Table(title=f"{summary.name or 'run'}: test results", show_lines=False)
    for i, header in enumerate(_headers(summary, terminal=True)):
        table.add_column(header, justify="left" if i < 2 else "right", no_wrap=i < 2)
    previous = None
    for row in _rows(summary, terminal=True):
        style = {"mean": "bold", "pooled": "dim italic"}.get(row.kind, "")
        method = row.method if row.method != previous else ""
        table.add_row(Text(method), Text(row.label, style=style), *(Text(c, style=style) for c in row.cells),
                      end_section=row.kind == "pooled")
        previous = row.method
    return table


def _base_rates(summary: RunSummary) -> dict[str, float]:
    """Per site, the share of positives (binary) or events (survival), from the partition."""
    rates = {}
    classes = summary.classes
    for site, part in summary.partition.items():
        labels = part.labels
        total = sum(float(v) for v in labels.values())
        positive = "events" if "events" in labels else (classes[-1] if len(classes) == 2 else None)
        if total > 0 and positive in labels:
            rates[site] = float(labels[positive]) / total
    return rates


def _explanation(summary: RunSummary) -> str:
    """What the headline is, which sites it leaves out, and what the pooled-test figure says here."""
    headline = metric_label(summary.headline, summary.higher_is_better)
    text = (f"Headline: {headline}, the mean over the readable sites of each site's test figure (each site counts "
            f"once); † marks a site flagged by the rule: {READABLE_RULE}. Intervals are percentile-bootstrap "
            f"95 % intervals, except that {RANK_INTERVAL_RULE}.")
    if summary.task == "binary":
        text += f" Threshold metrics use each site's own threshold, chosen by {THRESHOLD_RULE}."
    inflated = [m for m in method_names(summary) if _inflated(summary, m)]
    rates = _base_rates(summary)
    if inflated:
        noun = "event rates" if summary.task == "survival" else "base rates"
        spread = f" ({min(rates.values()):.1%} to {max(rates.values()):.1%})" if len(rates) > 1 else ""
        text += (f" The pooled test scores all sites' test rows together; it reads higher than the mean over sites "
                 f"for {', '.join(inflated)} and is inflated there: the sites' {noun} differ{spread}, so a model "
                 "that only learns which site a sample comes from scores well on it.")
    else:
        text += (" The pooled test scores all sites' test rows together; here it is not higher than the mean over "
                 "sites, so it adds no between-site inflation to read around.")
    if summary.task == "binary":
        text += (f" The pooled test's threshold metrics use {POOLED_THRESHOLD_CELL}: the pooled rows have no "
                 "validation split of their own to choose one on.")
    no_pooled = [m for m in method_names(summary) if not summary.methods[m].pooled_test]
    if "personalized" in no_pooled:
        text += (" The personalized model has no pooled test: each site keeps its own model, and only the site "
                 "scores it, on its own test rows.")
    return text


def _caveats(summary: RunSummary) -> list[str]:
    """One line per site: why it is flagged, and for which methods its headline is undefined."""
    headline = summary.headline
    notes: dict[str, list[str]] = {}
    undefined: dict[str, list[str]] = {}
    for method in method_names(summary):
        for site, row in summary.methods[method].per_site.items():
            for note in filter(None, row.note.split("; ")):
                if note not in notes.setdefault(site, []):
                    notes[site].append(note)
            if not _finite(row.value(headline)):
                undefined.setdefault(site, []).append(method)
    out = []
    for site in [s for s in summary.site_names() if s in notes or s in undefined]:
        parts = list(notes.get(site, []))
        flagged = any(site in summary.methods[m].per_site and not summary.methods[m].per_site[site].readable
                      for m in method_names(summary))  # fmt: skip
        if flagged:
            parts.append("flagged: shown with its interval, left out of the mean over sites")
        if site in undefined:
            parts.append(f"{metric_label(headline)} undefined for {', '.join(undefined[site])}")
        out.append(f"**{site}**: " + "; ".join(parts) + ".")
    return out


def print_results(summary: RunSummary, console: Console | None = None) -> None:
    """Print the results table, the headline explanation and the run's warnings.

    Args:
        summary: the run summary.
        console: where to print; a new stdout console when ``None``.
    """
    console = console or Console()
    console.print(results_table(summary))
    console.print(_explanation(summary), highlight=False)
    for caveat in _caveats(summary):
        console.print(Text("caveat: " + caveat.replace("**", ""), style="yellow"))
    for warning in summary.warnings:
        console.print(Text(f"warning: {warning}", style="bold red"))


def _md_escape(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return lines


def _results_markdown(summary: RunSummary) -> list[str]:
    rows = []
    for row in _rows(summary):
        if row.kind == "mean":
            rows.append([row.method, f"**{row.label}**"] + [f"**{c}**" if c else c for c in row.cells])
        elif row.kind == "pooled":
            rows.append([row.method, f"_{row.label}_"] + [f"_{c}_" if c else c for c in row.cells])
        else:
            rows.append([row.method, row.label] + row.cells)
    return _md_table(_headers(summary), rows)


def _partition_markdown(summary: RunSummary) -> list[str]:
    rows = []
    for site in [s for s in summary.site_names() if s in summary.partition]:
        part = summary.partition[site]
        labels = ", ".join(f"{k} {v}" for k, v in part.labels.items()) or "-"
        modalities = ", ".join(f"{k} {v}" for k, v in part.modalities.items()) or "-"
        rows.append([site, str(part.train), str(part.val), str(part.test), labels, modalities])
    if not rows:
        return ["(no partition recorded)"]
    return _md_table(["site", "train", "val", "test", "labels", "modalities"], rows)


def _link(run_dir: Path, path: Path | str, text: str) -> str:
    target = Path(path) if Path(path).is_absolute() else run_dir / path
    relative = Path(os.path.relpath(target, run_dir)).as_posix()
    note = "" if target.exists() else " (not written)"
    return f"- [{text}]({relative}){note}"


def write_report(run_dir: Path, summary: RunSummary, plots: list[Path]) -> Path:
    """Write ``run_dir/report.md``: what was run, the results, figures, files and caveats.

    Args:
        run_dir: the run folder; every link in the report is relative to it.
        summary: the run summary.
        plots: the figures to embed (paths inside ``run_dir``).

    Returns:
        The path of ``report.md``.
    """
    run_dir = Path(run_dir)
    files = {"config": "config.yaml", "metrics": "metrics.csv", "summary": "summary.json", **summary.files}
    methods = method_names(summary)
    seconds = ", ".join(
        f"{m} {summary.methods[m].seconds:.0f} s" for m in methods if _finite(summary.methods[m].seconds)
    )
    lines = [f"# {summary.name or 'fedfusion run'}", ""]
    if summary.description:
        lines += [summary.description, ""]
    lines += ["## What was run", ""]
    lines += [
        f"- dataset: {summary.dataset or '?'}; sites: {', '.join(summary.site_names()) or '?'}",
        f"- task: {summary.task}" + (f" (classes: {', '.join(summary.classes)})" if summary.classes else ""),
        f"- methods: {', '.join(methods) or 'none'}" + (f" (wall time: {seconds})" if seconds else ""),
        f"- rounds: {summary.rounds}; local epochs per round: {summary.local_epochs}",
        f"- privacy: {summary.privacy}",
        *([f"- secure aggregation: {summary.secure_aggregation} (the server saw only the sum of each round's "
           "updates, not one site's)"] if summary.secure_aggregation != "none" else []),
        f"- headline: {metric_label(summary.headline, summary.higher_is_better)}, mean over sites",
        "", "### Partition", "", *_partition_markdown(summary), "",
    ]
    privacy = privacy_lines(summary.privacy_sites, summary.rounds)
    if privacy:
        lines += ["### Differential privacy", "", *privacy, ""]
    attacked = attack_lines(summary.attacks)
    if attacked:
        lines += ["### Membership inference", "", *attacked, ""]
    lines += ["## Results (test split)", "", *_results_markdown(summary), "", _explanation(summary), ""]
    caveats = _caveats(summary)
    if caveats:
        lines += ["### Per-site caveats", "", *(f"- {c}" for c in caveats), ""]
    lines += ["## Figures", ""]
    for plot in plots:
        relative = Path(os.path.relpath(Path(plot), run_dir)).as_posix()
        lines += [f"![{Path(plot).stem.replace('_', ' ')}]({relative})", ""]
    lines += ["## Files", ""]
    names = {"config": "resolved config", "metrics": "metrics per round (CSV)", "summary": "summary (JSON)",
             "checkpoint": "checkpoint", "sites": "site manifests"}
    lines += [_link(run_dir, path, names.get(key, key)) for key, path in files.items()] + [""]
    if summary.warnings:
        lines += ["## Warnings", "", *(f"- **{w}**" for w in summary.warnings), ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def write_all(run_dir: Path, summary: RunSummary) -> list[Path]:
    """Read ``run_dir/metrics.csv``, write every figure into ``run_dir/plots/``, then ``report.md``.

    Args:
        run_dir: the run folder.
        summary: the run summary.

    Returns:
        Every path written: the figures, then ``report.md``.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.csv"
    if metrics_path.exists() and metrics_path.stat().st_size > 0:
        metrics = pd.read_csv(metrics_path, keep_default_na=False)  # a site called "NA" stays a name
    else:
        metrics = pd.DataFrame(columns=_METRICS_COLUMNS)  # no curves to draw, but still a report
    out_dir = run_dir / "plots"
    plots = [
        *plot_learning_curves(metrics, summary, out_dir),
        plot_site_results(summary, out_dir),
        plot_partition(summary, out_dir),
        plot_modalities(summary, out_dir),
    ]
    epsilon = plot_epsilon(metrics, out_dir)
    if epsilon is not None:
        plots.append(epsilon)
    explained = plot_explanations(summary.explanations, summary.modalities, out_dir)
    if explained is not None:
        plots.append(explained)
    return [*plots, write_report(run_dir, summary, plots)]

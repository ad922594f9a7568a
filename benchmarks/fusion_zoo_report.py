"""Tables of the fusion-zoo benchmark: the console table and results.md."""

from __future__ import annotations

import json

import numpy as np
from rich.console import Console
from rich.table import Table

from simulation.results import json_safe

__all__ = ["FEDERATED_LABEL", "HEADER", "table_rows", "to_markdown", "print_table"]

FEDERATED_LABEL = ("federated (the ServerApp's main and the ClientApp's handlers on an in-process grid: "
                   "no SuperLink or Ray; figures reported by the sites)")


def _fmt(mean: float, std: float | None = None, digits: int = 3) -> str:
    if mean is None or not np.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f}" if std is None or not np.isfinite(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table_rows(results: dict) -> list[list[str]]:
    """One row per (data set, head, method) for the Markdown and the console table."""
    out = []
    for key, entry in results["datasets"].items():
        h = entry["headline"]
        for r in entry["summary"]:
            # results.json stores an undefined figure as null: read it back as nan
            mean, std = (float("nan") if r[k] is None else r[k] for k in ("delta_mean", "delta_std"))
            delta = "—" if not np.isfinite(mean) else f"{mean:+.3f}"
            delta += f" ± {std:.3f}" if np.isfinite(std) else ""
            out.append([key, r["head"], r["method"], _fmt(r[f"{h}_mean"], r[f"{h}_std"]), delta,
                        _fmt(r[f"pooled_test_{h}_mean"]), _fmt(r.get("balanced_accuracy_mean")),
                        _fmt(r.get("ece_mean")), f"{r['params']:,}", _fmt(1000 * r["step_time_s"], digits=1),
                        _fmt(r["wall_s"], digits=1), str(r["seeds"])])  # fmt: skip
    return out


HEADER = ["data set", "head", "method", "headline (mean over sites)", "Δ vs best single", "pooled test",
          "bal. acc.", "ECE", "params", "step (ms)", "wall (s)", "seeds"]  # fmt: skip


def _best_line(entry: dict) -> str:
    h = entry["headline"]
    parts = [f"{m}: {b['head']} ({h} {b[h]:.3f})" for m, b in entry["best_single"].items()]
    return "best single modality — " + ("; ".join(parts) if parts else "none ran")


def to_markdown(results: dict) -> str:
    """results.md: the table, the best single modality per data set, per-site figures, the config."""
    c = results["config"]
    lines = [f"# Fusion zoo benchmark ({results['date']})", "",
             (f"Budget: {c['rounds']} rounds x {c['epochs']} local epochs (pooled: the same sample passes), "
             f"max {c['max_samples']} samples, seeds {c['seeds']}, {c['bootstrap']} bootstrap resamples. "
             f"`federated` = {FEDERATED_LABEL}. Headline = AUROC (classification) or c-index (survival), "
             "the mean over the readable sites (the README's rule) of each site's test split, mean ± std over seeds; Δ = paired per-seed "
             "difference to the best single-modality head of the same method. Step time is noisy "
             "(shared CPU)."), "", f"Command: `{c['command']}`" + (f" at {results['git_commit'][:10]}" if results.get(
                 "git_commit") else ""), "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]  # fmt: skip
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    for key, entry in results["datasets"].items():
        lines += ["", f"## {key}", "", f"Task {entry['task']}, modalities {entry['modalities']}, sites (train/test rows, last seed): "
                  + ", ".join(f"{s} {v['train']}/{v['test']}" for s, v in entry["sites"].items()), "",
                  f"**{_best_line(entry)}**", ""]  # fmt: skip
        sites = list(entry["sites"])
        lines += [f"Per-site test {entry['headline']} (mean over seeds):", "",
                  "| head | method | " + " | ".join(sites) + " | mean over sites |", "|" + "---|" * (len(sites) + 3)]
        for r in entry["summary"]:
            lines.append(f"| {r['head']} | {r['method']} | " + " | ".join(_fmt(r["per_site"].get(s, float("nan")))
                         for s in sites) + f" | {_fmt(r[entry['headline'] + '_mean'])} |")  # fmt: skip
        lines += [f"- skipped {s['head']} ({s['stage']}): {s['reason']}" for s in entry["skipped"]]
    lines += [f"- data set {s['dataset']} skipped: {s['reason']}" for s in results["skipped_datasets"]]
    lines += ["", "Config:", "", "```json", json.dumps(json_safe(c), indent=1), "```", ""]
    return "\n".join(lines)


def print_table(results: dict, console: Console) -> None:
    table = Table(title=f"fusion zoo — federated = {FEDERATED_LABEL}", show_lines=False)
    for name in HEADER:
        table.add_column(name, justify="left" if name in ("data set", "head", "method") else "right")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    for key, entry in results["datasets"].items():
        console.print(f"{key}: {_best_line(entry)}", highlight=False)

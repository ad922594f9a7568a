"""Drive one simulation: sites from public data, the federation on Flower's simulation
engine, then :mod:`simulation.scoring` (the baselines with the same budget, the scores and the
run's outputs), once per repeat. This module loads no torch: the CLI submits the app to
Flower after reading only the data's libraries, and the training stack loads after that."""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import replace
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from client.atomic_io import atomic_write_text
from client.manifest import Manifest
from simulation.attack_settings import check_attack_task
from simulation.config import SimulationConfig
from simulation.datasets import SampleTable
from simulation.flower_runner import FederationEngine, FederationError, federation_engine
from simulation.prepare import prepare_sites, schema_summary
from simulation.repeats import aggregate_repeats, paired_comparison, repeats_markdown
from simulation.run_summary import RepeatsSummary, RunSummary

__all__ = ["simulate", "APP_DIR"]

APP_DIR = Path(__file__).resolve().parents[1]  # holds pyproject.toml with [tool.flwr.app]
_ROUND = re.compile(r"\[ROUND (\d+)/(\d+)\]")


def _run_federation(engine: FederationEngine, config: SimulationConfig, run_dir: Path, sites: int, console: Console
                    ) -> float:
    start = time.monotonic()
    run_config = {"run-dir": str(run_dir), "sites-dir": str(run_dir / "sites"), "config-json": config.run.to_json()}
    with Progress(TextColumn("[bold]federated[/]"), BarColumn(), TextColumn("round {task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:  # fmt: skip
        bar = progress.add_task("federated", total=config.run.rounds)

        def on_line(line: str) -> None:
            match = _ROUND.search(line)
            if match:
                progress.update(bar, completed=int(match.group(1)) - 1)

        engine.run(app_dir=APP_DIR, run_config=run_config, num_sites=sites, on_line=on_line)
        if not (run_dir / "federated" / "done.json").exists():
            raise FederationError(f"the ServerApp did not finish; see {run_dir / 'logs' / 'flwr_run.log'}")
        progress.update(bar, completed=config.run.rounds)
    return time.monotonic() - start


def simulate(config: SimulationConfig, run_dir: Path, console: Console | None = None) -> RunSummary | RepeatsSummary:
    """Run ``config.repeats`` seeds and write the run folder; returns the summary: one
    repeat's :class:`RunSummary`, or for several the :class:`RepeatsSummary` ``summary.json`` holds.

    One repeat writes its outputs into ``run_dir``. Several write ``run_dir/repeat_<k>/``
    each (seed ``seed + k``: its own split and initialisation), and ``run_dir/summary.json``
    keeps every repeat, the mean and std of each figure and the paired comparisons.
    """
    console = console or Console()
    if config.repeats == 1:
        return _simulate_once(config, run_dir, console)
    summaries = []
    for k in range(config.repeats):
        seed = config.run.seed + k
        console.rule(f"repeat {k + 1}/{config.repeats} (seed {seed})")
        one = replace(config, repeats=1, run=replace(config.run, seed=seed))
        summaries.append(_simulate_once(one, run_dir / f"repeat_{k}", console, first_repeat=k == 0))
    return _write_repeats(config, run_dir, summaries, console)


def _write_repeats(config: SimulationConfig, run_dir: Path, summaries: list[RunSummary], console: Console
                   ) -> RepeatsSummary:
    first = summaries[0]
    aggregate = aggregate_repeats(summaries)
    federated = [m for m in ("personalized", "federated") if m in aggregate]
    others = [m for m in aggregate if m not in ("federated", "personalized")]
    paired = [paired_comparison(summaries, a, b) for a in federated for b in others]
    if "personalized" in aggregate and "federated" in aggregate:
        paired.insert(0, paired_comparison(summaries, "personalized", "federated"))
    summary = RepeatsSummary(name=config.name, dataset=config.dataset, task=first.task, headline=first.headline,
                             higher_is_better=first.higher_is_better,
                             seeds=[config.run.seed + k for k in range(len(summaries))], aggregate=aggregate,
                             paired=paired, runs=list(summaries))  # fmt: skip
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.resolved, sort_keys=False))
    atomic_write_text(run_dir / "summary.json", json.dumps(summary.to_dict(), indent=2))
    lines = [f"# {config.name}: {len(summaries)} repeats", "",
             *repeats_markdown(aggregate, paired, first.headline, len(summaries)),
             *(f"- [repeat {k} (seed {seed})](repeat_{k}/report.md)" for k, seed in enumerate(summary.seeds)), ""]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))
    console.print("\n".join(repeats_markdown(aggregate, paired, first.headline, len(summaries))), highlight=False)
    console.print(f"outputs: [bold]{run_dir}[/] (report.md, summary.json, repeat_*/)")
    return summary


def _prepare_sites(config: SimulationConfig, run_dir: Path, console: Console, *, first_repeat: bool
                   ) -> tuple[SimulationConfig, SampleTable, list[Manifest], list[str]]:
    """Write and check the site folders, printing what was read and each warning once;
    returns the config (its site count as found), the table, the manifests and the warnings."""
    warnings_list: list[str] = []  # each printed once, when it arises; the report lists them all

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, manifests = prepare_sites(config, run_dir)
        console.print(schema_summary(table, manifests), markup=False, highlight=False)
    for caught_warning in caught:
        text = f"data: {caught_warning.message}"
        warnings_list.append(text)
        console.print(f"[yellow]warning[/]: {text}")
    task_name = manifests[0].task
    check_attack_task(config.attack, task_name)  # refused now, not after the federation
    console.print(f"[bold]{config.dataset}[/]: {table.description}")
    console.print(f"task [bold]{task_name}[/]{' (inferred from the label column)' if config.run.task == 'auto' else ''}; "
                  f"{len(manifests)} sites: {', '.join(m.site for m in manifests)}")  # fmt: skip
    for m in manifests:
        for warning in m.warnings:
            warnings_list.append(f"site {m.site}: {warning}")
            console.print(f"[yellow]warning[/]: site {m.site}: {warning}")
    if config.run.num_sites != len(manifests):
        config = _with_sites(config, len(manifests))
    if config.privacy == "none":  # after the data checks, right before updates start to leave the sites
        warnings_list.append("No differential privacy (privacy=none): each site's updates leave it unprotected.")
        if first_repeat:
            console.print(f"[bold yellow]WARNING[/]: {warnings_list[-1]}")
    return config, table, manifests, warnings_list


def _simulate_once(config: SimulationConfig, run_dir: Path, console: Console, *, first_repeat: bool = True
                   ) -> RunSummary:
    """One seed: sites, the federation, the baselines, and the run folder. The privacy warning,
    the same for every repeat, is printed in the first one only (each report still lists it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.resolved, sort_keys=False))
    with federation_engine(run_dir) as engine:  # its SuperLink starts while the sites are prepared
        config, table, manifests, warnings_list = _prepare_sites(config, run_dir, console, first_repeat=first_repeat)
        seconds = _run_federation(engine, config, run_dir, len(manifests), console)
    from simulation.scoring import score_repeat  # torch, MONAI, scikit-learn: loaded after the app was submitted

    return score_repeat(config, run_dir, table, manifests, warnings_list, federated_seconds=seconds, console=console)


def _with_sites(config: SimulationConfig, sites: int) -> SimulationConfig:
    return replace(config, run=replace(config.run, num_sites=sites))

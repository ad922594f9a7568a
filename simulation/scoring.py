"""Score one repeat after its federation: the global model the sites trained, the pooled and
local-only baselines trained here with the same code, membership attacks, and the repeat's
run folder (summary, metrics, report, plots)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from client.atomic_io import atomic_write_text
from client.data import SiteDataset, default_cache_dir, load_site_dataset
from client.features import FeatureSpec
from client.manifest import Manifest
from client.train import resolve_device
from fusion_models.model import ModelSpec, build_model
from fusion_models.task import Task, make_task
from server.checkpoint import load_checkpoint
from server.final_evaluation import SITE_EVALUATION_FILE, read_site_evaluations
from server.round_selection import SELECTED_ROUND_FILE
from simulation.attack_results import ATTACK_FILE, attack_summary_line
from simulation.attacks import ShadowTraining, run_attacks
from simulation.baselines import train_local_only, train_pooled
from simulation.config import SimulationConfig
from simulation.datasets import SampleTable
from simulation.evaluation import evaluate_sites, pooled_test_metrics, summarise_method
from simulation.explanations import collect_explanations
from simulation.privacy_report import baseline_ledger_dir, privacy_lines, run_privacy
from simulation.report import print_results, write_all
from simulation.results import MEAN_SITE, MetricsLog, federated_rows, json_safe
from simulation.run_summary import MethodResult, RunSummary, SitePartition

__all__ = ["score_repeat", "TABLE_METRICS"]

TABLE_METRICS = {
    "binary": ["auroc", "auprc", "balanced_accuracy", "f1", "ece"],
    "multiclass": ["auroc", "balanced_accuracy", "f1", "accuracy", "ece"],
    "regression": ["rmse", "mae", "r2"],
    "survival": ["c_index"],
}


def score_repeat(config: SimulationConfig, run_dir: Path, table: SampleTable, manifests: list[Manifest],
                 warnings_list: list[str], *, federated_seconds: float, console: Console) -> RunSummary:
    """Score the repeat whose federation wrote ``run_dir/federated``, train and score its
    baselines, and write its run folder; ``warnings_list`` (extended here) goes into the
    report. Returns the repeat's summary."""
    seconds = {"federated": federated_seconds}
    checkpoint = load_checkpoint(run_dir / "federated" / "global.pt")
    features = FeatureSpec.from_json(checkpoint["feature_spec"])
    spec = ModelSpec.from_dict(checkpoint["model_spec"])
    task = make_task(features.task, num_classes=max(2, len(features.classes)))
    device = resolve_device(config.run.device)
    global_model = build_model(spec)
    global_model.load_state_dict(checkpoint["state_dict"])
    data = _datasets(manifests, features)

    log = MetricsLog()
    federated_rows(run_dir / "federated" / "site_metrics.jsonl", log)
    metrics = TABLE_METRICS[task.name]
    methods: dict[str, MethodResult] = {}
    reported, failures = read_site_evaluations(run_dir / "federated" / SITE_EVALUATION_FILE)
    for failure in failures:
        warnings_list.append(f"final evaluation: {failure}")
        console.print(f"[yellow]warning[/]: {warnings_list[-1]}")
    site_models = {"federated": "global", "personalized": "personalized"}
    source = "reported by the sites (Flower final evaluation round)"
    selected = run_dir / "federated" / SELECTED_ROUND_FILE
    if selected.is_file():  # personalization.select=best_val: the federation's model is its best round's
        kept = json.loads(selected.read_text())
        source += f"; the global model of round {kept['round']} of {kept['rounds']} (select=best_val)"
    for name, kind in site_models.items():
        evaluations = [e for e in reported if e.model == kind]
        if not evaluations:
            continue
        pooled = pooled_test_metrics(lambda site: global_model, data["test"], task, device=device) if kind == "global" else {}
        methods[name] = replace(summarise_method(evaluations, metrics=metrics, pooled=pooled),
                                seconds=round(seconds["federated"], 1),
                                source=source)  # fmt: skip
        log.add_summary(name, config.run.rounds, methods[name])
    for name in config.baselines:
        model_for, seconds[name], steps = _baseline(name, config, data, spec, task, log, device, console, run_dir)
        evaluations = evaluate_sites(model_for, data["val"], data["test"], task, model_name=name, device=device,
                                     n_boot=config.run.bootstrap, seed=config.run.seed)  # fmt: skip
        evaluations = [replace(e, train_steps=steps[e.site]) for e in evaluations]
        pooled = pooled_test_metrics(model_for, data["test"], task, device=device)
        methods[name] = replace(summarise_method(evaluations, metrics=metrics, pooled=pooled),
                                seconds=round(seconds[name], 1),
                                source="simulation only: scored centrally with the sites' evaluation code")  # fmt: skip
        log.add_summary(name, config.run.rounds, methods[name])
    explanations = collect_explanations(global_model, data["test"], device=device)
    attacks = _attack(config, run_dir, global_model, data, task, spec, device, console)
    _add_round_means(log)
    log.save(run_dir / "metrics.csv")

    files = {"config": "config.yaml", "metrics": "metrics.csv", "summary": "summary.json",
             "checkpoint": "federated/global.pt", "sites": "sites/", "logs": "logs/"}  # fmt: skip
    if attacks:
        files["attacks"] = ATTACK_FILE
    summary = RunSummary(
        name=config.name, dataset=config.dataset, description=table.description, task=task.name,
        headline=task.headline, higher_is_better=task.higher_is_better, classes=[str(c) for c in features.classes],
        rounds=config.run.rounds, local_epochs=config.run.train.epochs, privacy=config.privacy,
        secure_aggregation=config.run.secure_aggregation.name,
        privacy_sites=run_privacy(config.run.privacy, run_dir, config.baselines, config.run.central_privacy),
        partition=_partition_summary(manifests, task.name), sites=[m.site for m in manifests],
        metrics=metrics, methods=methods, warnings=warnings_list, modalities=list(features.modalities),
        explanations=explanations, attacks=attacks, files=files,
    )  # fmt: skip
    atomic_write_text(run_dir / "summary.json", summary.to_json())
    write_all(run_dir, summary)
    print_results(replace(summary, warnings=[]), console)  # the warnings were printed as they arose
    if warnings_list:
        console.print(f"{len(warnings_list)} warning(s) printed above; report.md lists them")
    for line in privacy_lines(summary.privacy_sites, config.run.rounds):
        console.print(line, markup=False, highlight=False)
    if attacks:
        console.print(attack_summary_line(attacks), markup=False, highlight=False)
    console.print(f"outputs: [bold]{run_dir}[/] (report.md, metrics.csv, summary.json, plots/)")
    return summary


def _partition_summary(manifests: list[Manifest], task: str) -> dict[str, SitePartition]:
    out = {}
    for m in manifests:
        table, schema = m.table, m.schema
        labels: dict[str, int] = {}
        if task in ("binary", "multiclass"):
            counts = table[schema.label_column].value_counts().sort_index()
            labels = {str(k): int(v) for k, v in counts.items()}
        elif task == "survival":
            events = int(table[schema.event_column].astype(float).sum())
            labels = {"events": events, "censored": int(len(table) - events)}
        modalities = {
            mod: int(len(table)) if mod == "tabular" else int(table[m.schema.modality_columns(mod)].notna().any(axis=1).sum())
            for mod in m.schema.modalities
        }
        out[m.site] = SitePartition(**{s: int(m.split_mask(s).sum()) for s in ("train", "val", "test")},
                                    labels=labels, modalities=modalities)  # fmt: skip
    return out


def _datasets(manifests: list[Manifest], spec: FeatureSpec) -> dict[str, dict[str, SiteDataset]]:
    return {
        split: {m.site: load_site_dataset(m, spec, split=split, cache_dir=default_cache_dir(m)) for m in manifests}
        for split in ("train", "val", "test")
    }


def _baseline(name: str, config: SimulationConfig, data, spec: ModelSpec, task: Task, log: MetricsLog,
              device: torch.device, console: Console, run_dir: Path):  # fmt: skip
    """Train one baseline; returns (site -> model, seconds, steps per site)."""
    def on_round(server_round: int, site: str, metrics: dict[str, float]) -> None:
        log.add(method=name, round=server_round, site=site, split="val", metrics=metrics)

    start = time.monotonic()
    with console.status(f"[bold]{name}[/] baseline: {config.run.rounds} x {config.run.train.epochs} epochs"):
        trainer = train_pooled if name == "pooled" else train_local_only
        trained = trainer(data["train"], data["val"], spec, task, config.run.train, rounds=config.run.rounds,
                          seed=config.run.seed, device=device, on_round=on_round, privacy=config.run.privacy,
                          ledger_dir=baseline_ledger_dir(run_dir, name),
                          select=config.run.personalization.select)  # fmt: skip
    if name == "pooled":
        model, steps = trained
        return (lambda site: model), time.monotonic() - start, {site: steps for site in data["test"]}
    return (lambda site: trained[site][0]), time.monotonic() - start, {site: n for site, (_, n) in trained.items()}


def _add_round_means(log: MetricsLog) -> None:
    """Mean over sites of every per-round validation figure, for the learning curves."""
    frame = log.frame()
    val = frame[(frame["split"] == "val") & (frame["site"] != MEAN_SITE)]
    for (method, server_round, metric), group in val.groupby(["method", "round", "metric"]):
        values = group["value"].to_numpy(dtype=float)
        if np.isfinite(values).any():
            log.add(method=method, round=int(server_round), site=MEAN_SITE, split="val",
                    metrics={metric: float(np.nanmean(values))})  # fmt: skip


def _attack(config: SimulationConfig, run_dir: Path, model: torch.nn.Module, data, task: Task, spec: ModelSpec,
            device: torch.device, console: Console) -> dict[str, Any] | None:  # fmt: skip
    """``attack=``: membership inference on the final global model at every site, written to
    ``attacks.json`` (simulation only: the attacker holds the sites' rows); None without one."""
    if not config.attack.enabled:
        return None
    training = ShadowTraining(spec=spec, train=config.run.train, rounds=config.run.rounds, seed=config.run.seed,
                              privacy=config.run.privacy)  # fmt: skip
    with console.status(f"[bold]attack[/] {config.attack.name}: membership inference on the global model"):
        report = run_attacks(config.attack, model, data, task, training=training, device=device,
                             model_name="final global model (federated/global.pt)").to_dict()  # fmt: skip
    atomic_write_text(run_dir / ATTACK_FILE, json.dumps(json_safe(report), indent=2))
    return report

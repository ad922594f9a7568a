"""Fusion zoo benchmark: every registered fusion head, pooled and federated, on the bundled
data sets and on synthetic data with a modality missing, at one fixed budget per data set.

The data path is a simulation's: :func:`simulation.prepare.prepare_sites` writes and validates
the site manifests, the feature spec comes from the sites' statistics, and evaluation is
:func:`simulation.evaluation.summarise_method` (per site, mean over readable sites, pooled
test). The federated arm is the ServerApp's own ``main`` with the real ClientApp handlers on
an :class:`simulation.inprocess_grid.InProcessGrid` (no SuperLink or Ray, which would cost
more than a head's run): the same statistics round, :func:`client.round.train_round` at every
site, per-module aggregation and site-side final evaluation as ``fedfusion simulate``. The
pooled arm trains through the same :func:`client.round.train_round`.

Usage: ``python -m benchmarks.fusion_zoo --datasets synthetic ham10000 --seeds 0 1 2``;
``--quick`` is a smoke-test budget. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from hydra import compose, initialize_config_dir
from rich.console import Console

from benchmarks.fusion_zoo_report import FEDERATED_LABEL, print_table, to_markdown
from benchmarks.provenance import git_commit, uncommitted_changes
from client.app import app as client_app
from client.atomic_io import atomic_write_text
from client.data import SiteDataset, default_cache_dir, load_site_dataset
from client.features import FeatureSpec, merge_statistics, site_statistics
from client.train import make_loader, resolve_device
from fusion_models.fusion import FUSIONS
from fusion_models.model import ModelSpec, MultimodalModel, build_model
from fusion_models.task import Task, make_task
from server.app import main as server_main
from server.checkpoint import load_checkpoint
from server.final_evaluation import SITE_EVALUATION_FILE, read_site_evaluations
from server.model_setup import make_model_spec
from server.settings import RunSettings
from simulation.baselines import train_pooled
from simulation.cli import CONFIG_DIR
from simulation.config import SimulationConfig
from simulation.evaluation import evaluate_sites, pooled_test_metrics, summarise_method
from simulation.inprocess_grid import run_server_in_process
from simulation.prepare import prepare_sites
from simulation.results import json_safe
from simulation.scoring import TABLE_METRICS

__all__ = ["DATASETS", "FEDERATED_LABEL", "expand_heads", "main", "parse_args", "train_federated"]

DATASETS = ("ham10000", "eicu", "gse7390_breast", "synthetic")
METHODS = ("pooled", "federated")
SCHEMA_VERSION = 1
# Per-data-set Hydra overrides: GSE7390 has no natural sites, so it is split iid into 3.
_DATASET_OVERRIDES = {"gse7390_breast": ["num_sites=3"]}
_QUICK = {"seeds": [0], "rounds": 1, "epochs": 0.5, "max_samples": 240, "bootstrap": 0}
_DEFAULTS = {"seeds": [0, 1, 2], "rounds": 10, "epochs": 0.5, "max_samples": 3000, "bootstrap": 100}


@dataclass(frozen=True)
class Variant:
    """One data set as benchmarked: a name for the table and the Hydra overrides that make it."""

    key: str
    dataset: str
    overrides: tuple[str, ...]
    missing: dict[str, float]


@dataclass
class Sites:
    """One prepared variant for one seed: the splits of every site, the feature spec, the task."""

    config: SimulationConfig
    features: FeatureSpec
    task: Task
    data: dict[str, dict[str, SiteDataset]]
    manifests: dict[str, Path]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` fills every budget option not given explicitly."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.fusion_zoo", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), help=f"any of {', '.join(DATASETS)}")
    p.add_argument("--heads", nargs="+", default=None,
                   help="registered fusion names (default: all); 'single' = one per modality, or 'single:image'")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2")
    p.add_argument("--rounds", type=int, default=None, help="federated rounds (pooled: the same sample passes); default 10")
    p.add_argument("--epochs", type=float, default=None, help="local epochs per round; default 0.5")
    p.add_argument("--max-samples", type=int, default=None,
                   help="keep this many samples (whole groups); synthetic generates this many; default 3000")
    p.add_argument("--missing", nargs="+", type=float, default=[0.0, 0.3, 0.6],
                   help="synthetic: fractions of samples missing --missing-modality")
    p.add_argument("--missing-modality", default="image", help="synthetic: the modality made missing")
    p.add_argument("--bootstrap", type=int, default=None, help="resamples for per-site intervals; default 100")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override for every run, e.g. model=resnet or train.batch_size=32")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fusion_zoo"))
    p.add_argument("--quick", action="store_true", help="smoke-test budget: 1 seed, 1 round, 240 samples")
    args = p.parse_args(argv)
    for key, value in (_QUICK if args.quick else _DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        p.error(f"unknown datasets {unknown}; known: {list(DATASETS)}")
    if args.rounds < 1 or args.epochs <= 0:
        p.error("--rounds must be >= 1 and --epochs > 0")
    return args


def variants(args: argparse.Namespace) -> list[Variant]:
    """The benchmarked data sets; synthetic once per missing fraction."""
    out = []
    for name in args.datasets:
        base = (f"data={name}", *_DATASET_OVERRIDES.get(name, []))
        if name != "synthetic":
            out.append(Variant(key=name, dataset=name, overrides=base, missing={}))
            continue
        m = args.missing_modality
        for fraction in args.missing:
            missing = {m: fraction} if fraction > 0 else {}
            # `+key.sub=value` adds to the YAML's empty mapping (Hydra refuses to replace it whole).
            extra = (f"+data.params.missing.{m}={fraction}",) if missing else ()
            out.append(Variant(key=f"synthetic/{m}_missing={fraction:g}", dataset=name, missing=missing,
                               overrides=(*base, *extra, f"data.params.n_samples={args.max_samples}")))  # fmt: skip
    return out


def compose_config(variant: Variant, args: argparse.Namespace, seed: int) -> SimulationConfig:
    """The simulation config of one variant and seed, composed as ``fedfusion simulate`` would."""
    # The heads are compared on the federated (global) model: no site fine-tunes its own.
    overrides = [*variant.overrides, "personalization=none", f"rounds={args.rounds}", f"train.epochs={args.epochs}",
                 f"seed={seed}", f"max_samples={args.max_samples}", *args.override]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return SimulationConfig.from_cfg(compose(config_name="config", overrides=overrides))


def prepare(config: SimulationConfig, run_dir: Path) -> Sites:
    """Manifests, federated feature statistics and the datasets of every split of every site."""
    _, manifests = prepare_sites(config, run_dir)
    stats = [site_statistics(m) for m in manifests]
    features = merge_statistics(stats, schema=manifests[0].schema, task=manifests[0].task)
    task = make_task(features.task, num_classes=max(2, len(features.classes)))
    data = {split: {m.site: load_site_dataset(m, features, split=split, cache_dir=default_cache_dir(m))
                    for m in manifests} for split in ("train", "val", "test")}  # fmt: skip
    return Sites(config=config, features=features, task=task, data=data, manifests={m.site: m.path for m in manifests})


def expand_heads(requested: list[str] | None, modalities: list[str]) -> list[tuple[str, str, str | None]]:
    """(label, registered name, single's modality) per head; ``single`` becomes one per modality."""
    out = []
    for name in requested or FUSIONS.names():
        base, _, modality = name.partition(":")
        if base == "single":
            out += [(f"single:{m}", "single", m) for m in ([modality] if modality else modalities)]
        else:
            out.append((name, name, None))
    return out


def fusion_config(name: str, modality: str | None) -> dict[str, Any]:
    """``{"name": name, **configs/fusion/<name>.yaml}`` (plus ``modality`` for ``single``)."""
    path = CONFIG_DIR / "fusion" / f"{name}.yaml"
    options = dict(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    options["name"] = name
    if modality is not None:
        options["modality"] = modality
    return options


def _check_applies(fusion: dict[str, Any], modalities: list[str]) -> None:
    """Refuse a head whose config swaps in the encoder of a modality the data lacks (early
    fusion into the image network): without it the head would silently run as plain concat."""
    absent = sorted(set(fusion.get("encoders") or {}) - set(modalities))
    if absent:
        raise ValueError(f"its config replaces the {absent} encoder (early fusion) but the data has only "
                         f"{modalities}; without it the head would be another head")  # fmt: skip


def _check_builds(spec: ModelSpec, sites: Sites) -> None:
    """Build the model and run one training-loss backward pass; raises what the head raises."""
    model = build_model(spec, seed=0)
    dataset = next(d for d in sites.data["train"].values() if len(d))
    batch = next(iter(make_loader(dataset, batch_size=4, shuffle=False, seed=0)))
    outputs = model(batch)
    loss = sites.task.loss(outputs, batch["label"]) + model.auxiliary_loss(outputs, batch["label"])
    loss.backward()


def _trainable(model: MultimodalModel) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def train_federated(settings: RunSettings, sites: Sites, run_dir: Path) -> tuple[list, dict[str, float], MultimodalModel]:
    """The ServerApp's ``main`` over an in-process grid of the sites' ClientApps.

    Returns what the sites reported for the global model in the final evaluation round, ``{"steps", "train_s"}``
    (optimisation steps over all sites, read from their replies, and the wall time of the
    whole federation), and the final global model the ServerApp checkpointed.
    """
    run_config = {"config-json": settings.to_json(), "run-dir": str(run_dir)}
    nodes = {i + 1: {"manifest": str(path)} for i, path in enumerate(sites.manifests.values())}
    start = time.perf_counter()
    run_server_in_process(server_main, client_app, nodes, run_config)
    train_s = time.perf_counter() - start
    evaluations, failures = read_site_evaluations(run_dir / "federated" / SITE_EVALUATION_FILE)
    if failures:
        raise RuntimeError(f"sites failed the final evaluation: {failures}")
    # a site reports its personalised model too when personalisation is on: keep the global one
    evaluations = [e for e in evaluations if e.model == "global"]
    steps = sum(float(entry.get("train-steps", 0.0)) for entry in map(json.loads, (run_dir / "federated" / "site_metrics.jsonl")
                                                                         .read_text().splitlines()) if entry["kind"] == "train")  # fmt: skip
    checkpoint = load_checkpoint(run_dir / "federated" / "global.pt")
    model = build_model(ModelSpec.from_dict(checkpoint["model_spec"]))
    model.load_state_dict(checkpoint["state_dict"])
    return evaluations, {"steps": steps, "train_s": train_s}, model


def run_head(label: str, spec: ModelSpec, fusion: dict[str, Any], sites: Sites, *, seed: int, bootstrap: int,
             device: torch.device, work_dir: Path) -> list[dict]:  # fmt: skip
    """Train one head pooled and federated on one seed's sites; one result row per method.

    ``fusion`` is the head's config as the ServerApp gets it: with its ``encoders`` (FiLM and
    HyperFusion swap in a conditioned image encoder), which ``spec.fusion`` no longer holds.
    """
    run, task = sites.config.run, sites.task
    metrics = TABLE_METRICS[task.name]
    params = _trainable(build_model(spec, seed=seed))
    rows = []
    for method in METHODS:
        start = time.perf_counter()
        if method == "pooled":
            model, steps = train_pooled(sites.data["train"], {}, spec, task, run.train, rounds=run.rounds, seed=seed,
                                        device=device)  # fmt: skip
            timing = {"train_s": time.perf_counter() - start, "steps": float(steps)}
            evaluations = evaluate_sites(lambda site, model=model: model, sites.data["val"], sites.data["test"], task,
                                         model_name="pooled", device=device, n_boot=bootstrap, seed=seed)  # fmt: skip
        else:
            settings = replace(run, bootstrap=bootstrap, num_sites=len(sites.manifests),
                               model=replace(run.model, fusion=dict(fusion)))  # fmt: skip
            evaluations, timing, model = train_federated(settings, sites, work_dir / f"{label.replace(':', '_')}_{seed}")
            if model.spec.to_dict() != spec.to_dict():
                raise RuntimeError(f"the ServerApp built another model than the benchmark's spec for {label}")
        pooled = pooled_test_metrics(lambda site, model=model: model, sites.data["test"], task, device=device)
        summary = summarise_method(evaluations, metrics=metrics, pooled=pooled)
        rows.append({"head": label, "method": method, "seed": seed, "params": params, "steps": int(timing["steps"]),
                     "step_time_s": timing["train_s"] / max(timing["steps"], 1.0),
                     "wall_s": time.perf_counter() - start, **summary.to_dict()})  # fmt: skip
    return rows


def _stats(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    # One seed has no spread: nan, so that the table shows the value alone.
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")


def summarise(runs: list[dict], task: Task) -> tuple[list[dict], dict[str, dict]]:
    """Mean ± std over seeds per (head, method), and the paired difference to the best single head."""
    metrics, headline = TABLE_METRICS[task.name], task.headline
    sign = 1.0 if task.higher_is_better else -1.0
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        by_key.setdefault((r["head"], r["method"]), []).append(r)
    best: dict[str, dict] = {}
    for method in METHODS:
        singles = {h: _stats([r["site_mean"][headline] for r in rs])[0] for (h, m), rs in by_key.items()
                   if m == method and h.startswith("single:")}  # fmt: skip
        singles = {h: v for h, v in singles.items() if np.isfinite(v)}
        if singles:
            head = max(singles, key=lambda h: sign * singles[h])
            best[method] = {"head": head, headline: singles[head]}
    rows = []
    for (head, method), rs in by_key.items():
        row: dict[str, Any] = {"head": head, "method": method, "seeds": len(rs), "params": rs[0]["params"]}
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = _stats([r["site_mean"][m] for r in rs])
            row[f"pooled_test_{m}_mean"], _ = _stats([r["pooled_test"][m] for r in rs])
        reference = {r["seed"]: r["site_mean"][headline] for r in by_key.get((best.get(method, {}).get("head"), method), [])}
        row["delta_mean"], row["delta_std"] = _stats([r["site_mean"][headline] - reference[r["seed"]]
                                                      for r in rs if r["seed"] in reference])  # fmt: skip
        row["step_time_s"], _ = _stats([r["step_time_s"] for r in rs])
        row["wall_s"], _ = _stats([r["wall_s"] for r in rs])
        sites = sorted({s for r in rs for s in r["per_site"]})
        row["per_site"] = {s: _stats([r["per_site"][s][headline] for r in rs if s in r["per_site"]])[0] for s in sites}
        rows.append(row)
    rows.sort(key=lambda r: (METHODS.index(r["method"]), -sign * np.nan_to_num(r[f"{headline}_mean"], nan=-np.inf)))
    return rows, best


def run_variant(variant: Variant, args: argparse.Namespace, device: torch.device, console: Console) -> dict:
    """Every head on every seed of one variant; heads that cannot run on it are recorded."""
    runs, skipped, entry, task = [], {}, {}, None
    for seed in args.seeds:
        config = compose_config(variant, args, seed)
        with tempfile.TemporaryDirectory(prefix="fusion_zoo_") as tmp:
            sites = prepare(config, Path(tmp))
            task, features = sites.task, sites.features
            entry = {"dataset": variant.dataset, "task": task.name, "headline": task.headline,
                     "higher_is_better": task.higher_is_better, "metrics": TABLE_METRICS[task.name],
                     "modalities": features.modalities, "missing": variant.missing, "overrides": list(variant.overrides),
                     "sites": {s: {"train": len(sites.data["train"][s]), "test": len(d)} for s, d in sites.data["test"].items()},
                     "rounds": config.run.rounds, "local_epochs": config.run.train.epochs,
                     "batch_size": config.run.train.batch_size, "lr": config.run.train.lr}  # fmt: skip
            for label, name, modality in expand_heads(args.heads, features.modalities):
                if label in skipped:
                    continue
                fusion = fusion_config(name, modality)
                try:
                    _check_applies(fusion, features.modalities)
                    spec = make_model_spec(features, replace(config.run.model, fusion=fusion))
                    _check_builds(spec, sites)
                except Exception as error:  # noqa: BLE001 - a head that does not fit this data is recorded, not fatal
                    skipped[label] = {"head": label, "stage": "build", "reason": f"{type(error).__name__}: {error}"}
                    console.print(f"[yellow]skip[/] {variant.key} {label}: {skipped[label]['reason']}")
                    continue
                with console.status(f"{variant.key} seed {seed} [bold]{label}[/]"):
                    try:
                        rows = run_head(label, spec, fusion, sites, seed=seed, bootstrap=args.bootstrap,
                                        device=device, work_dir=Path(tmp) / "runs")  # fmt: skip
                    except Exception as error:  # noqa: BLE001 - one broken head must not end a long benchmark
                        skipped[label] = {"head": label, "stage": "train", "seed": seed,
                                          "reason": f"{type(error).__name__}: {error}",
                                          "traceback": traceback.format_exc(limit=4)}  # fmt: skip
                        console.print(f"[red]failed[/] {variant.key} {label}: {skipped[label]['reason']}")
                        continue
                runs += rows
                line = ", ".join(f"{r['method']} {r['site_mean'][task.headline]:.3f}" for r in rows)
                console.print(f"{variant.key} seed {seed} {label}: {line}", highlight=False)
    runs = [r for r in runs if r["head"] not in skipped]
    summary, best = summarise(runs, task) if runs else ([], {})
    return {**entry, "best_single": best, "summary": summary, "skipped": list(skipped.values()), "runs": runs}


def main(argv: list[str] | None = None, console: Console | None = None) -> dict:
    """Run the benchmark and write ``<out>/results.json`` and ``<out>/results.md``; returns the results."""
    args = parse_args(argv)
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update(command="python -m benchmarks.fusion_zoo " + " ".join(sys.argv[1:] if argv is None else argv),
                  device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                  python=platform.python_version(), heads_registered=FUSIONS.names())  # fmt: skip
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "benchmark": "fusion_zoo",
                               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "git_commit": git_commit(), "uncommitted_changes": uncommitted_changes(),
                               "versions": {pkg: version(pkg) for pkg in ("torch", "flwr", "monai", "opacus")},
                               "federated": FEDERATED_LABEL, "config": config, "datasets": {},
                               "skipped_datasets": []}  # fmt: skip
    for variant in variants(args):
        try:
            results["datasets"][variant.key] = run_variant(variant, args, device, console)
        except (ValueError, KeyError, FileNotFoundError, RuntimeError, OSError) as error:
            results["skipped_datasets"].append({"dataset": variant.key, "reason": f"{type(error).__name__}: {error}"})
            console.print(f"[yellow]skip data set[/] {variant.key}: {error}")
    results["wall_s"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.json", json.dumps(json_safe(results), indent=1))
    atomic_write_text(args.out / "results.md", to_markdown(results))
    print_table(results, console)
    console.print(f"wall time {results['wall_s']} s; wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return results


if __name__ == "__main__":
    main()

"""Federated utility benchmark: does joining the federation pay every site?

Runs ``fedfusion simulate`` (real Flower SuperLink, site-side evaluation) for each recipe
over ``--repeats`` seeds and compares, repeat by repeat, the federated and personalised
models against pooled and local-only training, and recipes against each other.

Usage: ``python -m benchmarks.federated_utility --repeats 3``; results go to
``benchmarks/results/federated_utility/{results.json,results.md}`` with the command, the
package versions and the git commit. ``--reuse RECIPE=RUN_DIR`` reads a recipe's repeats from
the ``summary.json`` of a run this benchmark wrote before instead of running it again (the
runs are deterministic at a commit; results.json names the folder it came from).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from rich.console import Console

from benchmarks.provenance import git_commit
from client.atomic_io import atomic_write_text
from server.default_config import CONFIG_DIR
from simulation.config import SimulationConfig
from simulation.repeats import paired_comparison, repeats_markdown
from simulation.results import json_safe
from simulation.run import simulate
from simulation.run_summary import PairedComparison, RepeatsSummary

__all__ = ["RECIPES", "main"]

#: name -> Hydra overrides; every recipe runs on the same seeds, so recipes pair by seed.
RECIPES: dict[str, list[str]] = {
    "fedavg": ["train.label_skew=none", "personalization=none"],
    "logit_adjust+finetune": ["train.label_skew=logit_adjust", "personalization=finetune"],
    "logit_adjust+finetune3": ["train.label_skew=logit_adjust", "personalization=finetune", "personalization.epochs=3"],
    "default": [],
    "default+finetune6": ["personalization.epochs=6"],
    # as many local passes as the local-only baseline makes (40 rounds x 0.25 epochs)
    "default+finetune10": ["personalization.epochs=10"],  # the default from 2026-12-05 to 2026-12-08
    # twice the local-only baseline's passes, from the global model (the default since 2026-12-08)
    "default+finetune20": ["personalization.epochs=20"],
    # every method keeps its best snapshot on validation: the fine-tuning pass (the global model
    # included), the federation's round and the baselines' round
    "default+select_best_val": ["personalization.select=best_val"],
    "default+fedavgm": ["strategy=fedavgm"],
    "default+fedadam": ["strategy=fedadam"],
    "default+fedprox": ["strategy=fedprox"],
    # SGD with momentum at the sites (and in the baselines): a site's step scales with its
    # gradient, where a fresh AdamW moves every weight by about lr whatever the site's loss
    "default+sgd_lr0.01": ["train.optimizer=sgd", "train.lr=0.01"],
    "default+sgd_lr0.03": ["train.optimizer=sgd", "train.lr=0.03"],
    "default+sgd_lr0.1": ["train.optimizer=sgd", "train.lr=0.1"],
    # the averaged step moves about as far as one site's few steps: take it twice (FedAvgM
    # without momentum at server lr 2), or with a milder server momentum than Hsu et al.'s 0.9
    "default+server_lr2": ["strategy=fedavgm", "strategy.server_lr=2.0", "strategy.momentum=0.0"],
    "default+fedavgm_m0.5": ["strategy=fedavgm", "strategy.momentum=0.5"],
    # the same sample passes with fewer, longer rounds (more local work between aggregations)
    "default+epochs0.5_rounds20": ["train.epochs=0.5", "rounds=20"],
    "default+epochs1_rounds10": ["train.epochs=1", "rounds=10"],
    # Cox partial likelihood over larger batches (larger risk sets per step; TCGA sites hold 50-400 rows)
    "default+batch256": ["train.batch_size=256"],
    # larger steps alone: on TCGA a site's round is one batch of 256 (sites hold 51-311 training
    # rows), so the federation makes 40 AdamW steps in all, each moving a weight by about lr
    "default+lr0.003_only": ["train.lr=0.003"],
    "default+lr0.01_only": ["train.lr=0.01"],
    "logit_adjust+ditto": ["train.label_skew=logit_adjust", "personalization=ditto"],
    "logit_adjust+fedper": ["train.label_skew=logit_adjust", "personalization=fedper"],
    # DP-SGD at every site (Opacus), epsilon 5 for the planned run, against "default" without DP.
    # C, lr and batch are pinned: privacy=dp's own defaults came out of these runs; results
    # before that name this recipe "default+dp_eps5" (then the defaults).
    "default+dp_eps5_clip1": ["privacy=dp", "privacy.target_epsilon=5", "privacy.max_grad_norm=1.0", "train.lr=0.001",
                              "train.batch_size=64"],
    # privacy=dp as configured (configs/privacy/dp.yaml: C 0.1, batch 256, lr 0.012 since
    # 2026-12-07), against "default+batch256_lr0.012" without DP. Results before then ran it at
    # that day's defaults, batch 64 and lr 0.003: "default+dp_eps5_clip0.1" now.
    "default+dp_eps5": ["privacy=dp", "privacy.target_epsilon=5"],
    # its noise sized with the PRV accountant (a tighter epsilon for the same sigma), at the
    # batch and lr it was measured with
    "default+dp_eps5_prv": ["privacy=dp", "privacy.target_epsilon=5", "privacy.accountant=prv", "train.batch_size=64",
                            "train.lr=0.003"],
    # C 1 with 4x larger Poisson batches (fewer, less noisy steps) and a larger step size
    "default+dp_eps5_batch256": ["privacy=dp", "privacy.target_epsilon=5", "privacy.max_grad_norm=1.0",
                                 "train.batch_size=256", "train.lr=0.003"],
    # the non-private run of the clip0.1 recipes' step size: their reference. It fine-tunes for
    # privacy=dp's 3 passes (personalization.epochs' default before 2026-12-05), so that only DP differs
    "default+lr0.003": ["train.lr=0.003", "personalization.epochs=3"],
    # the default until 2026-12-05 (the reference of results before then named "default")
    "default+finetune3": ["personalization.epochs=3"],
    # a smaller clipping bound with a larger step size (the noise std is sigma * C)
    "default+dp_eps5_clip0.1": ["privacy=dp", "privacy.target_epsilon=5", "privacy.max_grad_norm=0.1", "train.lr=0.003",
                                "train.batch_size=64"],
    "default+dp_eps5_clip0.1_lr0.001": ["privacy=dp", "privacy.target_epsilon=5", "privacy.max_grad_norm=0.1",
                                        "train.lr=0.001", "train.batch_size=64"],
    "default+dp_eps5_clip0.01": ["privacy=dp", "privacy.target_epsilon=5", "privacy.max_grad_norm=0.01", "train.lr=0.003",
                                 "train.batch_size=64"],
    "default+dp_eps5_clip0.1_batch256": ["privacy=dp", "privacy.target_epsilon=5", "privacy.max_grad_norm=0.1",
                                         "train.batch_size=256", "train.lr=0.003"],
    # 4x larger Poisson batches with a 4x larger step size, so that the local passes move the
    # weights as far as batch 64 at lr 0.003 with fewer, less noisy steps (sigma * C / batch
    # falls about 2.7x at epsilon 5); the second is its non-private reference
    "default+dp_eps5_clip0.1_batch256_lr0.012": ["privacy=dp", "privacy.target_epsilon=5", "privacy.max_grad_norm=0.1",
                                                 "train.batch_size=256", "train.lr=0.012"],
    "default+batch256_lr0.012": ["train.batch_size=256", "train.lr=0.012", "personalization.epochs=3"],
    # twice the fine-tuning passes (the personal model's steps fell 4x with batch 256); under DP
    # they are in the noise plan, so every round's noise grows too; the second is the reference
    "default+dp_eps5_finetune6": ["privacy=dp", "privacy.target_epsilon=5", "personalization.epochs=6"],
    "default+batch256_lr0.012_finetune6": ["train.batch_size=256", "train.lr=0.012", "personalization.epochs=6"],
    # twice the Poisson batch again, lr scaled with it: at epsilon 5 over the planned run, q * sqrt(steps) / sigma
    # (the signal over the noise summed over the rounds, lr proportional to the batch) rises 6-12 % at every site
    # (vienna_dias samples its 286 rows whole: q 1); the second is the reference
    "default+dp_eps5_batch512_lr0.024": ["privacy=dp", "privacy.target_epsilon=5", "train.batch_size=512",
                                         "train.lr=0.024"],
    "default+batch512_lr0.024": ["train.batch_size=512", "train.lr=0.024", "personalization.epochs=3"],
    # fewer trainable parameters: the image encoder's conv stack kept at its random initial
    # weights (only its projection trains), without and with DP at the clip0.1 recipe
    "frozen_features+lr0.003": ["encoder.image.frozen=[features]", "train.lr=0.003"],
    "frozen_features+dp_eps5_clip0.1": ["encoder.image.frozen=[features]", "privacy=dp", "privacy.target_epsilon=5",
                                        "privacy.max_grad_norm=0.1", "train.lr=0.003", "train.batch_size=64"],
    # fewer trainable parameters: the tabular encoder and head alone, without and with DP
    "tabular": ["fusion=single", "fusion.modality=tabular"],
    "tabular+dp_eps5": ["fusion=single", "fusion.modality=tabular", "privacy=dp", "privacy.target_epsilon=5",
                        "privacy.max_grad_norm=1.0", "train.lr=0.001", "train.batch_size=64"],
}
_DATASETS = {"ham10000": ["data=ham10000"], "tcga_brca": ["data=tcga_brca"]}


def _config(overrides: list[str]) -> SimulationConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return SimulationConfig.from_cfg(compose(config_name="config", overrides=overrides))


def _cross_recipe(runs: dict[str, RepeatsSummary], method: str) -> list[PairedComparison]:
    """Each recipe's ``method`` against the first recipe's, paired by seed."""
    names = list(runs)
    out = []
    for name in names[1:]:
        merged = []
        for a, b in zip(runs[name].runs, runs[names[0]].runs):
            if method in a.methods and method in b.methods:
                merged.append(replace(a, methods={f"{name}:{method}": a.methods[method],
                                                  f"{names[0]}:{method}": b.methods[method]}))  # fmt: skip
        if merged:
            out.append(paired_comparison(merged, f"{name}:{method}", f"{names[0]}:{method}"))
    return out


def _reused(p: argparse.ArgumentParser, pairs: list[str], recipes: list[str]) -> dict[str, Path]:
    out = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or name not in recipes:
            p.error(f"--reuse {pair!r}: expected RECIPE=RUN_DIR with RECIPE one of --recipes {recipes}")
        out[name] = Path(folder)
    return out


def _read_repeats(p: argparse.ArgumentParser, run_dir: Path, name: str, repeats: int) -> RepeatsSummary:
    path = run_dir / "summary.json"
    if not path.is_file():
        p.error(f"--reuse {name}={run_dir}: {path} does not exist")
    summary = RepeatsSummary.load(path)
    if summary.repeats != repeats:
        p.error(f"--reuse {name}={run_dir}: {path} holds {summary.repeats} repeats, not --repeats {repeats}")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every recipe on every data set; write results.json and results.md; returns the results."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.federated_utility", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["ham10000"], choices=sorted(_DATASETS))
    p.add_argument("--recipes", nargs="+", default=list(RECIPES)[:2], choices=sorted(RECIPES),
                   help="the first is the reference the others are paired with")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="extra Hydra override")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/federated_utility"))
    p.add_argument("--runs-dir", type=Path, default=Path("outputs/benchmarks/federated_utility"),
                   help="where each simulation's run folder goes (large: site manifests and caches)")
    p.add_argument("--reuse", action="append", default=[], metavar="RECIPE=RUN_DIR",
                   help="read RECIPE's repeats from RUN_DIR/summary.json (a run of this benchmark) instead of running it")
    args = p.parse_args(argv)
    reuse = _reused(p, args.reuse, args.recipes)
    if args.repeats < 2:
        p.error("--repeats must be >= 2: the benchmark pairs methods across repeats")
    console = Console(width=None if sys.stdout.isatty() else 160)
    results: dict[str, Any] = {
        "benchmark": "federated_utility", "schema_version": 1,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.federated_utility " + " ".join(sys.argv[1:] if argv is None else argv),
        "git_commit": git_commit(), "python": platform.python_version(),
        "versions": {pkg: version(pkg) for pkg in ("torch", "flwr", "monai", "opacus")},
        "recipes": {name: RECIPES[name] for name in args.recipes}, "datasets": {},
    }  # fmt: skip
    lines = [f"# Federated utility ({args.repeats} repeats)", "", f"`{results['command']}` at {results['git_commit'][:10]}", ""]
    for dataset in args.datasets:
        runs: dict[str, RepeatsSummary] = {}
        extra: dict[str, dict[str, Any]] = {}  # per recipe: wall_s and overrides, written beside its figures
        for name in args.recipes:
            overrides = [*_DATASETS[dataset], *RECIPES[name], f"repeats={args.repeats}", *args.override]
            if name in reuse:
                runs[name] = _read_repeats(p, reuse[name], name, args.repeats)
                extra[name] = {"wall_s": None, "overrides": overrides, "reused_from": str(reuse[name])}
                continue
            start = time.monotonic()
            run_dir = args.runs_dir / dataset / name.replace("+", "_")
            summary = simulate(_config(overrides), run_dir, console)
            if not isinstance(summary, RepeatsSummary):
                p.error(f"{name}: ran one repeat (--override repeats=1?); the benchmark pairs methods across repeats")
            runs[name] = summary
            extra[name] = {"wall_s": round(time.monotonic() - start, 1), "overrides": overrides}
        seeds = {name: list(r.seeds) for name, r in runs.items()}
        if len({tuple(v) for v in seeds.values()}) > 1:
            p.error(f"{dataset}: the recipes ran different seeds {seeds}; they pair by seed")
        cross = [c for method in ("federated", "personalized") for c in _cross_recipe(runs, method)]
        results["datasets"][dataset] = {
            "recipes": {n: {"aggregate": {m: a.to_dict() for m, a in r.aggregate.items()},
                            "paired": [c.to_dict() for c in r.paired], "seeds": list(r.seeds), **extra[n]}
                        for n, r in runs.items()},
            "cross_recipe": [c.to_dict() for c in cross],
        }  # fmt: skip
        for name, r in runs.items():
            ran = extra[name]
            took = f"read from {ran['reused_from']}" if "reused_from" in ran else f"{ran['wall_s']:.0f} s"
            lines += [f"## {dataset}: {name} (`{' '.join(ran['overrides'])}`, {took})", "",
                      *repeats_markdown(r.aggregate, r.paired, r.headline, r.repeats)]  # fmt: skip
        if cross:
            lines += [f"## {dataset}: recipes paired by seed", "",
                      *repeats_markdown({}, cross, runs[args.recipes[0]].headline, args.repeats)]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.json", json.dumps(json_safe(results), indent=1))
    atomic_write_text(args.out / "results.md", "\n".join(lines))
    console.print("\n".join(lines), highlight=False)
    return results


if __name__ == "__main__":
    main()

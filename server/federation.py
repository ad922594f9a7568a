"""What the ServerApp runs after the statistics round (``server.statistics_round``): the
schema the sites agree on, modality-aware rounds with an atomic checkpoint and per-site
metrics after each, then a final evaluation round at the sites. ``server.app`` imports this
module while the sites compute their statistics."""

from __future__ import annotations

import json
import math
import time
from logging import INFO
from pathlib import Path

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from client import messages as keys
from client.atomic_io import atomic_write_text
from client.features import merge_statistics
from client.messages import RoundConfig
from client.schema import Schema
from client.settings import dp_refusals
from client.site_schema import rare_classes_of_counts
from fusion_models.model import build_model
from fusion_models.task import make_task
from server.central_accounting import CENTRAL_PRIVACY_FILE
from server.checkpoint import save_checkpoint
from server.final_evaluation import SITE_EVALUATION_FILE, run_final_evaluation, write_site_evaluations
from server.model_setup import make_model_spec
from server.round_selection import SELECTED_ROUND_FILE, BestRound
from server.settings import RunSettings
from server.strategies import build_strategy

__all__ = ["run", "agree_on_schema"]


def agree_on_schema(stats: list[dict]) -> tuple[Schema, str]:
    """Every site must share the schema (column -> role) and the task, and inferred classes
    must pass the rare-class rule over all sites' counts; returns the schema and the task."""
    first = stats[0]
    schema = Schema.from_dict(first["schema"], source=f"site {first['site']}")
    for other in stats[1:]:
        mine, theirs = first["schema"]["columns"], other["schema"]["columns"]
        if theirs != mine:
            differ = sorted(c for c in set(mine) | set(theirs) if mine.get(c) != theirs.get(c))
            detail = "; ".join(f"{c!r}: {mine.get(c, 'absent')} at {first['site']}, {theirs.get(c, 'absent')} at "
                               f"{other['site']}" for c in differ[:10])  # fmt: skip
            raise ValueError(f"sites {first['site']!r} and {other['site']!r} read their columns differently ({detail}); "
                             "give every site the same schema.yaml declaring these columns")  # fmt: skip
        if other["task"] != first["task"]:
            labels = {s["site"]: sorted(s.get("label_counts", {})) for s in (first, other)}
            raise ValueError(f"site {first['site']!r} infers task {first['task']!r} but {other['site']!r} infers "
                             f"{other['task']!r} (labels: {labels}); correct the label cells or declare the task and "
                             "classes in every site's schema.yaml")  # fmt: skip
    if first["task"] in ("binary", "multiclass") and schema.classes is None:
        rare = rare_classes_of_counts({s["site"]: s.get("label_counts", s.get("labels", {})) for s in stats})
        if rare:
            raise ValueError("rare classes across the sites:\n  " + "\n  ".join(rare))
    return schema, first["task"]


def _check_private(model, task: str, settings) -> None:
    """Refuse a DP run before round 1 if DP-SGD cannot make it private (the task is known
    only now) or Opacus cannot wrap the model (``settings``: the run settings); the message
    names each problem and its fix."""
    from opacus.validators import ModuleValidator

    problems = dp_refusals(task=task, train=settings.train, personalization=settings.personalization)
    problems += [f"Opacus cannot wrap the model: {error}" for error in ModuleValidator.validate(model.train(), strict=False)]
    if problems:
        raise ValueError("privacy=dp: " + "; ".join(problems))
    log(INFO, "fedfusion: DP-SGD at every site (%s, C=%s, %s accountant, grad-sample mode %s)",
        "target epsilon %s" % settings.privacy.target_epsilon if settings.privacy.target_epsilon is not None
        else "sigma %s" % settings.privacy.noise_multiplier, settings.privacy.max_grad_norm,
        settings.privacy.accountant, settings.privacy.grad_sample_mode)  # fmt: skip


def run(grid: Grid, context: Context, *, settings: RunSettings, nodes: list[int], stats: list[dict]) -> None:
    """Run the federation of ``settings`` (the run config's, see ``settings_from_run_config``)
    over ``nodes``, whose statistics round (``server.statistics_round``) gave ``stats``."""
    run_dir = Path(str(context.run_config.get("run-dir", "")) or f"outputs/flwr-run-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    federated_dir = run_dir / "federated"
    federated_dir.mkdir(parents=True, exist_ok=True)

    schema, inferred_task = agree_on_schema(stats)
    task = inferred_task if settings.task == "auto" else settings.task
    features = merge_statistics(stats, schema=schema, task=task)
    atomic_write_text(federated_dir / "site_statistics.json", json.dumps(stats, indent=1))
    atomic_write_text(federated_dir / "feature_spec.json", features.to_json())
    model_spec = make_model_spec(features, settings.model)
    model = build_model(model_spec, seed=settings.seed)
    log(INFO, "fedfusion: %d sites, task %s, modalities %s", len(stats), task, features.modalities)
    if settings.privacy.enabled:
        _check_private(model, task, settings)

    site_log = (federated_dir / "site_metrics.jsonl").open("a")

    selection = None
    if settings.personalization.select == "best_val":
        headline = make_task(task, num_classes=max(2, len(features.classes)))
        selection = BestRound(headline.headline, higher_is_better=headline.higher_is_better)

    def record_site(server_round: int, kind: str, site: str, metrics: MetricRecord) -> None:
        if selection is not None:
            selection.site_figures(server_round, kind, metrics)
        # A figure a site could not compute (nan) is written as null: the log stays valid JSON.
        values = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in dict(metrics).items()}
        site_log.write(json.dumps({"round": server_round, "kind": kind, "site": site, **values}) + "\n")
        site_log.flush()

    def save_global(arrays: ArrayRecord, server_round: int) -> None:
        save_checkpoint(federated_dir / "global.pt", state_dict=arrays.to_torch_state_dict(), round=server_round,
                        model_spec=model_spec.to_dict(), feature_spec=features.to_json(),
                        settings=json.loads(settings.to_json()))  # fmt: skip

    def checkpoint_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        # Flower calls this with the global arrays after every round: the server holds no
        # data, so instead of central evaluation it saves the global state.
        if selection is not None:
            selection.global_arrays(server_round, arrays)
        save_global(arrays, server_round)
        atomic_write_text(federated_dir / "progress.json", json.dumps({"round": server_round, "rounds": settings.rounds}))
        return None

    personalization = settings.personalization
    strategy = build_strategy(settings.strategy, on_site_metrics=record_site, num_nodes=len(nodes),
                              central_privacy=settings.central_privacy,
                              central_privacy_file=federated_dir / CENTRAL_PRIVACY_FILE,
                              local_modules=personalization.keep_modules if personalization.name == "fedper" else (),
                              rounds=settings.rounds, secure_aggregation=settings.secure_aggregation,
                              weight_scale=max([1.0, *(float(s["n"]) for s in stats)]))  # fmt: skip
    round_config = RoundConfig(task=task, feature_spec=features.to_json(), model_spec=json.dumps(model_spec.to_dict()),
                               seed=settings.seed, device=settings.device, train=settings.train, split="val",
                               bootstrap=settings.bootstrap, personalization=settings.personalization,
                               privacy=settings.privacy, rounds=settings.rounds)  # fmt: skip
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=settings.rounds,
            train_config=round_config.to_record(),
            evaluate_config=round_config.to_record(),
            evaluate_fn=checkpoint_round,
        )
    finally:
        site_log.close()
    # Flower's result holds no arrays when no round aggregated anything (every site declined
    # or failed): the final model is then the initial one.
    final = result.arrays if len(result.arrays) else ArrayRecord(model.state_dict())
    final_round = settings.rounds
    if selection is not None:
        if selection.arrays is not None:
            final, final_round = selection.arrays, selection.round
            if final_round != settings.rounds:  # the last round's is global.pt already
                save_global(final, final_round)  # global.pt is the federation's model: the selected round's
        atomic_write_text(federated_dir / SELECTED_ROUND_FILE, json.dumps(
            {"rule": "best_val", "round": final_round, "rounds": settings.rounds, "metric": selection.key,
             "mean_over_sites": selection.score}))  # fmt: skip
        log(INFO, "fedfusion: select=best_val kept round %s of %s (mean site %s %s)", final_round, settings.rounds,
            selection.key, selection.score)  # fmt: skip
    evaluations, failures = run_final_evaluation(
        grid, nodes, final, round_config.to_record(**{keys.SERVER_ROUND: settings.rounds})
    )
    write_site_evaluations(federated_dir / SITE_EVALUATION_FILE, evaluations, failures, round=settings.rounds)
    atomic_write_text(federated_dir / "done.json", json.dumps({"rounds": settings.rounds}))

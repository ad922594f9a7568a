"""DP-SGD step-time benchmark: the time of one training step with DP-SGD over the time of the
same step without, same model, same batch, for each Opacus per-sample-gradient mode.

The DP step is the project's own: :class:`client.privacy.DPRound` wraps the model, an AdamW
optimiser and a loader exactly as :func:`client.round.train_round` does at a DP site (the
``ew`` mode through its tensor-argument wrapper), then steps on a fixed batch. The non-DP step
is the same model (same seed) with a plain AdamW. Models are the default HAM10000 pair (a
32x32 dermoscopy image and the 20-wide tabular record) with the small CNN or MONAI's
DenseNet121 2D under ``concat``, and every fusion head (its YAML's settings) on the small CNN.

Usage: ``python -m benchmarks.dp_step_time`` (``--steps``, ``--batch-size``, ``--label``,
``--only NAME``). Results: ``benchmarks/results/dp_step_time/<label>.json`` and a Markdown
table on stdout; each time is the median over ``--steps`` timed steps after 3 warm-up steps,
on ``torch.get_num_threads()`` threads. A second table splits each step into its phases
(:data:`PHASES`): where the DP step's extra time goes. A mode that fails on a model is
recorded with its error.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.provenance import git_commit, uncommitted_changes
from client.features import FeatureSpec
from client.privacy import DPPlan, DPRound
from client.train import batch_loss
from fusion_models.model import ModelSpec, build_model
from fusion_models.task import make_task
from server.model_setup import make_model_spec
from server.settings import ModelSettings

__all__ = ["MODES", "PHASES", "main", "models", "time_model"]

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
RESULTS = REPO / "benchmarks" / "results" / "dp_step_time"
MODES = ("hooks", "functorch", "ew", "ghost")
IMAGE_SHAPE = (3, 32, 32)
# The default HAM10000 features: a 32x32 RGB image and age, sex and localisation.
FEATURES = FeatureSpec.from_json(json.dumps({
    "task": "binary", "classes": ["benign", "malignant"], "numeric": {"age": [51.5, 16.3]},
    "categorical": {"sex": ["female", "male"],
                    "localization": ["abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
                                     "lower extremity", "neck", "scalp", "trunk", "upper extremity"]},
    "omics": {}, "files": {"image": "image"}, "shapes": {"image": list(IMAGE_SHAPE)},
    "modalities": ["image", "tabular"], "spec_version": 1,
}))  # fmt: skip
TARGET = 1.5
TASK = make_task("binary")


def _yaml(group: str, name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / group / f"{name}.yaml").read_text())


def _spec(fusion: str, image_encoder: str) -> ModelSpec:
    """The spec the ServerApp would build (``make_model_spec``) for the default HAM10000 features."""
    settings = ModelSettings(encoders={"image": _yaml("encoder/image", image_encoder),
                                       "tabular": _yaml("encoder/tabular", "mlp")},
                             fusion=_yaml("fusion", fusion), feature_dim=64, modality_dropout=0.0)  # fmt: skip
    return make_model_spec(FEATURES, settings)


def models() -> dict[str, ModelSpec]:
    """Benchmark name -> model spec: both image encoders under concat, then every fusion head."""
    names = sorted(p.stem for p in (CONFIGS / "fusion").glob("*.yaml"))
    specs = {"cnn_small+concat": _spec("concat", "cnn_small"), "densenet121+concat": _spec("concat", "densenet121")}
    specs.update({f"cnn_small+{name}": _spec(name, "cnn_small") for name in names if name != "concat"})
    return specs


def _batch(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = FEATURES.tabular_width
    return {"image": torch.randn(n, *IMAGE_SHAPE, generator=g), "tabular": torch.randn(n, width, generator=g),
            "present": torch.ones(n, 2, dtype=torch.bool), "target": (torch.rand(n, generator=g) < 0.2).float()}  # fmt: skip


class _Rows(torch.utils.data.Dataset):
    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch["target"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.batch.items()}


#: The phases of a step, in order: for DP, "backward" includes the per-sample gradients and
#: "clip+noise" is Opacus' ``pre_step`` (per-sample clipping, summing, noise, the accountant).
PHASES = ("forward", "backward", "clip+noise", "optimizer")


def _median_phases(step: Callable[[], dict[str, float]], steps: int) -> tuple[float, dict[str, float]]:
    """(median seconds per step, median seconds of each phase) over ``steps`` timed steps after 3 warm-up ones."""
    for _ in range(3):
        step()
    totals, phases = [], {}
    for _ in range(steps):
        start = time.perf_counter()
        parts = step()
        totals.append(time.perf_counter() - start)
        for phase, seconds in parts.items():
            phases.setdefault(phase, []).append(seconds)
    return statistics.median(totals), {phase: statistics.median(v) for phase, v in phases.items()}


def _timed(parts: dict[str, float], phase: str, start: float) -> float:
    now = time.perf_counter()
    parts[phase] = now - start
    return now


def time_model(spec: ModelSpec, *, batch_size: int, steps: int, modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    """Median seconds per step without DP and in each mode, and each mode's ratio to no DP."""
    batch = _batch(batch_size, seed=0)
    inputs = {k: v for k, v in batch.items() if k != "target"}
    model = build_model(spec, seed=0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def plain_step() -> dict[str, float]:
        parts: dict[str, float] = {}
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, TASK, model(inputs), batch["target"])
        start = _timed(parts, "forward", start)
        loss.backward()
        start = _timed(parts, "backward", start)
        optimizer.step()
        _timed(parts, "optimizer", start)
        return parts

    no_dp_s, no_dp_phases = _median_phases(plain_step, steps)
    result: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters()), "no_dp_s": no_dp_s,
                              "no_dp_phases_s": no_dp_phases, "modes": {}}  # fmt: skip
    rows = _Rows(_batch(batch_size * 8, seed=1))
    loader = torch.utils.data.DataLoader(rows, batch_size=batch_size)
    for mode in modes:
        plan = DPPlan(noise_multiplier=1.0, sample_rate=1 / len(loader), steps=steps + 3, max_grad_norm=1.0,
                      delta=1e-5, accountant="rdp", grad_sample_mode=mode)  # fmt: skip
        dp_model = build_model(spec, seed=0).train()
        dp_round = DPRound(plan, history=[])
        try:
            forward, dp_optimizer, _ = dp_round.attach(dp_model, torch.optim.AdamW(dp_model.parameters(), lr=1e-3),
                                                       loader)  # fmt: skip

            def dp_step(forward=forward, dp_optimizer=dp_optimizer, dp_model=dp_model,
                        dp_round=dp_round) -> dict[str, float]:  # (defaults bind each mode's objects)
                parts: dict[str, float] = {}
                start = time.perf_counter()
                dp_optimizer.zero_grad(set_to_none=True)
                loss = batch_loss(dp_model, TASK, forward(inputs), batch["target"], dp=dp_round)  # as training does
                start = _timed(parts, "forward", start)
                loss.backward()
                start = _timed(parts, "backward", start)
                stepped = dp_optimizer.pre_step()  # what DPOptimizer.step does, timed in its two parts
                start = _timed(parts, "clip+noise", start)
                if stepped:
                    dp_optimizer.original_optimizer.step()
                _timed(parts, "optimizer", start)
                return parts

            seconds, phases = _median_phases(dp_step, steps)
            result["modes"][mode] = {"dp_s": seconds, "ratio": seconds / result["no_dp_s"], "phases_s": phases}
        except Exception as error:  # noqa: BLE001 - a mode Opacus cannot run on this model: recorded, not hidden
            result["modes"][mode] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
        finally:
            dp_round.close()
    return result


def _table(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| model | parameters | no DP (ms) | " + " | ".join(f"{m} (ms, ×)" for m in MODES) + " |",
             "|---|---|---|" + "---|" * len(MODES)]  # fmt: skip
    for name, r in results.items():
        cells = []
        for mode in MODES:
            m = r["modes"].get(mode, {})
            cells.append(f"{m['dp_s'] * 1e3:.1f} ({m['ratio']:.2f}×)" if "dp_s" in m else "fails")
        lines.append(f"| {name} | {r['parameters']:,} | {r['no_dp_s'] * 1e3:.1f} | " + " | ".join(cells) + " |")
    return lines


def _phase_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """Where a step's time goes: each phase's median (ms) without DP and in each mode that ran."""
    lines = ["| model | mode | " + " | ".join(f"{p} (ms)" for p in PHASES) + " | step (ms) |",
             "|---|---|" + "---|" * (len(PHASES) + 1)]  # fmt: skip
    for name, r in results.items():
        rows = [("no DP", r.get("no_dp_phases_s", {}), r["no_dp_s"])]
        rows += [(mode, m["phases_s"], m["dp_s"]) for mode, m in r["modes"].items() if "phases_s" in m]
        for mode, phases, total in rows:
            cells = [f"{phases[p] * 1e3:.1f}" if p in phases else "–" for p in PHASES]
            lines.append(f"| {name} | {mode} | " + " | ".join(cells) + f" | {total * 1e3:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--label", default="cpu")
    parser.add_argument("--only", action="append", default=[], help="benchmark only these models (repeatable)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    specs = {k: v for k, v in models().items() if not args.only or k in args.only}
    results = {}
    for name, spec in specs.items():
        results[name] = time_model(spec, batch_size=args.batch_size, steps=args.steps)
        best = min((m["ratio"] for m in results[name]["modes"].values() if "ratio" in m), default=float("nan"))
        print(f"{name}: no DP {results[name]['no_dp_s'] * 1e3:.1f} ms/step, best DP mode {best:.2f}x", flush=True)
    lines, phase_lines = _table(results), _phase_table(results)
    print("\n".join(lines) + "\n\nWhere the time goes (median of each phase):\n" + "\n".join(phase_lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.label}.json"
    payload = {
        "label": args.label, "command": "python -m benchmarks.dp_step_time " + " ".join(sys.argv[1:] if argv is None else argv),
        "batch_size": args.batch_size, "steps": args.steps, "image_shape": list(IMAGE_SHAPE), "target_ratio": TARGET,
        "threads": torch.get_num_threads(), "results": results, "table": lines, "phase_table": phase_lines,
        "versions": {p: version(p) for p in ("torch", "opacus", "monai")} | {"python": platform.python_version()},
        "commit": git_commit(), "uncommitted_changes": uncommitted_changes(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    out.write_text(json.dumps(payload, indent=1))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

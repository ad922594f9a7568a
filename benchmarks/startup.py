"""Start-up benchmark: how long a small real ``fedfusion simulate`` takes to reach its first
round, and how long each round after it takes.

Each repeat runs the real command in a subprocess (the SuperLink, ``flwr run``, the simulation
engine and the ClientApps all start from nothing) and watches the run folder from outside:

- ``ready``: ``flower_run_config.toml`` appears, so the CLI has imported, loaded the data,
  written and validated the manifests, and submits the app (the SuperLink, the Ray head and
  ``flwr run`` start when the repeat begins, before the CLI reads its config);
- ``statistics done``: ``federated/site_statistics.json`` is written, after the SuperLink,
  ``flwr run``, the simulation engine (Ray), the ServerApp, the ClientApps and the statistics
  round: round 1 starts here;
- ``first round done``: ``federated/progress.json`` first says round 1 (the ServerApp writes
  it after the round's training, validation and checkpoint);
- ``per round``: the median time between later rounds' ``progress.json``;
- ``total``: the command, including the final evaluation, the scoring and the run folder.

Times come from the files' modification times, written by the ServerApp as things happen
(Flower's streamed log arrives in bursts). Each run also records, from the SuperLink's access
log, when ``flwr run`` submitted the app and when the engine process asked for its task
(``steps_s``), to see which step between ``ready`` and ``statistics done`` moved, and where
the host's CPU time went from the start to round 1 (``cpu_to_first_round_s``: the run's
process tree, other processes, the hypervisor's steal, idle; :mod:`benchmarks.host_cpu`),
so that a slow run on a shared machine can be told from slow code, and the same split per
phase (``cpu_by_phase_s``: until ready, ready to statistics, statistics to round 1), which
shows where the two cores wait on one process.

Usage: ``python -m benchmarks.startup --label before`` (``--repeats``, ``--rounds``,
``--max-samples``, ``--keep-runs`` to keep the run folders, extra Hydra overrides after
``--``). A warm-up run first fills the shared cache of decoded images (``$FEDFUSION_CACHE``,
here a folder of the benchmark's own), so the repeats measure a warm cache, as every run
after a user's first one does. Results go to
``benchmarks/results/startup/<label>.json``; the figures quoted are the minimum over repeats,
because the machine is shared and other work only ever adds time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.host_cpu import HostCpu, between
from benchmarks.provenance import git_commit, uncommitted_changes

__all__ = ["time_run", "main", "PHASES"]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "startup"
#: phase -> what it measures, in the order of the table.
PHASES = {
    "ready_s": "imports, data, manifests (until the app is submitted)",
    "statistics_done_s": "SuperLink, flwr run, Ray, ServerApp, ClientApps, statistics round",
    "first_round_done_s": "round 1 trained, validated and checkpointed",
    "per_round_s": "median time per later round",
    "total_s": "the whole command (final evaluation, scoring, report included)",
}
SHARED_MACHINE_NOTE = ("measured on a machine shared with other engineers running benchmarks; each figure is the "
                       "minimum over repeats, since other work only adds time")  # fmt: skip


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _round_of(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["round"])
    except (OSError, ValueError, KeyError):
        return None  # not written yet, or caught between write and rename


# The SuperLink's access log: when `flwr run` submitted the app, and when the engine process,
# started by SuperExec, first asked for its task (it has imported Flower by then).
_LOG_STEPS = {"submitted_s": "/v1/control/start-run", "engine_started_s": "/v1/runtime/pull-task-input"}
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def _log_steps(superlink_log: Path, wall_start: float) -> dict[str, float | None]:
    """Seconds from the command's start to each of ``_LOG_STEPS`` (None when not logged)."""
    found: dict[str, float | None] = dict.fromkeys(_LOG_STEPS)
    try:
        lines = superlink_log.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        stamp = _STAMP.match(line)
        for key, request in _LOG_STEPS.items():
            if stamp and found[key] is None and request in line:
                at = datetime.fromisoformat(stamp.group(1)).replace(tzinfo=timezone.utc).timestamp()
                found[key] = at - wall_start
    return found


def time_run(overrides: list[str], run_dir: Path, env: dict[str, str], *, timeout_s: float = 900.0) -> dict[str, Any]:
    """Run ``fedfusion simulate`` once and time its phases from outside (see the module doc).

    Args:
        overrides: Hydra overrides; must give ``rounds`` >= 3 (round 1 and a later one).
        run_dir: the run folder (``hydra.run.dir``); its ``logs/`` and ``federated/`` are watched.
        env: the environment of the command.
        timeout_s: the run is stopped and an error raised after this long.

    Returns:
        Seconds since the command started, per phase, and when each round was checkpointed.
    """
    command = [sys.executable, "-m", "simulation.cli", "simulate", *overrides, f"hydra.run.dir={run_dir}"]
    output = run_dir.parent / f"{run_dir.name}.out"
    submitted = run_dir / "flower_run_config.toml"
    stats_file, progress = run_dir / "federated" / "site_statistics.json", run_dir / "federated" / "progress.json"
    start, wall_start = time.monotonic(), time.time()
    ready, rounds, cpu, marks = None, {}, None, []
    host = HostCpu()
    with output.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            while process.poll() is None:
                now = time.monotonic() - start
                if now > timeout_s:
                    raise RuntimeError(f"the run passed {timeout_s:.0f} s; see {output}")
                if ready is None and submitted.exists():
                    ready = now
                    marks.append(("to_ready", host.split(process.pid)))
                if len(marks) == 1 and stats_file.exists():
                    marks.append(("ready_to_statistics", host.split(process.pid)))
                done, stamp = _round_of(progress), _mtime(progress)
                if done is not None and stamp is not None:
                    rounds.setdefault(done, stamp - wall_start)
                    if done == 1 and cpu is None:
                        cpu = host.split(process.pid)
                        marks.append(("statistics_to_first_round", cpu))
                time.sleep(0.02)
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
    total = time.monotonic() - start
    if process.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` exited with {process.returncode}; see {output}")
    statistics_done = _mtime(stats_file)
    if statistics_done is None or 1 not in rounds:
        raise RuntimeError(f"{stats_file} or round 1 in {progress} was never written; see {output}")
    later = [rounds[k + 1] - rounds[k] for k in sorted(rounds) if k + 1 in rounds]
    return {
        "ready_s": ready,
        "statistics_done_s": statistics_done - wall_start,
        "first_round_done_s": rounds[1],
        "per_round_s": statistics.median(later) if later else float("nan"),
        "total_s": total,
        "rounds_done_s": {str(k): v for k, v in sorted(rounds.items())},
        "steps_s": _log_steps(run_dir / "logs" / "superlink.log", wall_start),
        "cpu_to_first_round_s": cpu,
        "cpu_by_phase_s": between(marks),
    }


def _table(summary: dict[str, dict[str, float]], label: str) -> str:
    lines = [f"| phase ({label}) | min (s) | median (s) | max (s) | what |", "|---|---|---|---|---|"]
    for key, what in PHASES.items():
        row = summary[key]
        cells = " | ".join(f"{row[k]:.1f}" for k in ("min", "median", "max"))
        lines.append(f"| {key.removesuffix('_s')} | {cells} | {what} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time ``--repeats`` runs after ``--warmup`` and write ``<label>.json``; returns the record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="current", help="the results file's name")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted runs first (they fill the cache)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-samples", type=int, default=2000)
    parser.add_argument("--keep-runs", action="store_true", help="keep the run folders (printed) instead of removing them")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides (after --)")
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be >= 3: the first round and at least one more are timed")
    overrides = [f"max_samples={args.max_samples}", f"rounds={args.rounds}", "baselines=[]", *args.overrides]

    work = Path(tempfile.mkdtemp(prefix="fedfusion-startup-"))
    env = {**os.environ, "FEDFUSION_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    load_before = os.getloadavg()
    runs = []
    try:
        for k in range(args.warmup + args.repeats):
            counted = k >= args.warmup
            result = time_run(overrides, work / f"run_{k}", env)
            cpu = result["cpu_to_first_round_s"] or {}
            print(f"{'run' if counted else 'warm-up'} {k + 1}: " + ", ".join(
                f"{key.removesuffix('_s')} {result[key]:.1f} s" for key in PHASES) + "; CPU s to round 1: "
                + ", ".join(f"{k} {v}" for k, v in cpu.items()) + "; idle core-s by phase: "
                + ", ".join(f"{phase} {split['idle']}" for phase, split in result["cpu_by_phase_s"].items()),
                flush=True)  # fmt: skip
            if counted:
                runs.append(result)
    finally:
        if args.keep_runs:
            print(f"run folders kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = {key: {"min": min(r[key] for r in runs), "median": statistics.median(r[key] for r in runs),
                     "max": max(r[key] for r in runs)} for key in PHASES}  # fmt: skip
    steps = {key: statistics.median(values) for key in _LOG_STEPS
             if (values := [r["steps_s"][key] for r in runs if r["steps_s"][key] is not None])}  # fmt: skip
    record = {
        "label": args.label,
        "command": "python -m benchmarks.startup " + " ".join(argv if argv is not None else sys.argv[1:]),
        "simulate_overrides": overrides,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "phases": PHASES,
        "summary": summary,
        "steps_median_s": steps,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "platform": platform.platform(), "note": SHARED_MACHINE_NOTE},  # fmt: skip
        "versions": {p: version(p) for p in ("flwr", "torch", "ray", "monai", "hydra-core")} | {
            "python": platform.python_version()},  # fmt: skip
        "commit": git_commit(),
        "uncommitted_changes": uncommitted_changes(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.label}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(_table(summary, args.label))
    print(f"{SHARED_MACHINE_NOTE}.\nwritten: {path}")
    return record


if __name__ == "__main__":
    main()

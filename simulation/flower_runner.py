"""Run the ServerApp and ClientApps on Flower's simulation engine, as separate processes:
a Ray head node (:mod:`simulation.ray_head`) and a SuperLink in simulation mode that this process
owns, and ``flwr run`` against them (its process started with them, see
:mod:`simulation.flwr_run_waiter`). ``fedfusion simulate`` starts all three before it reads its
config (:func:`prestart_federation`); the run's :func:`federation_engine` takes them over.

Every process started here is stopped by its pid (its whole process group), also when the
run fails or is interrupted, and Flower's state lives in a temporary FLWR_HOME.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import tomli_w

from simulation.app_bundle import stage_app
from simulation.flwr_run_waiter import PrestartedFlwrRun
from simulation.ports import free_port
from simulation.processes import FederationError, stop_by_environment, stop_process_group, venv_bin, wait_until_listening
from simulation.ray_head import RayHead

__all__ = ["FederationError", "FederationEngine", "federation_engine", "client_cpus", "flower_environment",
           "prestart_federation", "discard_prestarted"]  # fmt: skip

#: Flower's setting for SuperExec's wait between two asks for work (``flwr.supercore.superexec``).
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
SUPEREXEC_POLL_S = 0.1


def flower_environment(flwr_home: Path, *, ray_address: str | None = None) -> dict[str, str]:
    """Environment for Flower processes: private FLWR_HOME, no telemetry, no runtime installs;
    with ``ray_address``, the simulation engine joins that Ray cluster instead of starting one."""
    env = os.environ.copy()
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            # The SuperLink would otherwise `uv sync` the project, fetching a CUDA torch build.
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_DISABLE_USAGE_STATS": "1",
            # Ray would start a worker per core for tasks; the ClientApp actor needs a worker
            # with Flower's runtime_env anyway, so those only compete with it for the cores.
            "RAY_prestart_worker_first_driver": "0",
            # SuperExec asks the SuperLink for a submitted run every second (Flower's default),
            # so the engine process started on average 0.5 s after the submission.
            SUPEREXEC_POLL_ENV: str(SUPEREXEC_POLL_S),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if ray_address is not None:
        env["RAY_ADDRESS"] = ray_address  # ray.init() without an address reads it
    # Flower starts its helpers (flower-superexec, flwr-serverapp) by name: find this venv's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env



class _SimulationSuperLink:
    """A SuperLink in simulation mode on loopback, started at construction; :meth:`connection`
    waits until it listens. ``flwr run`` reaches it by the connection name this writes to
    ``flwr_home/config.toml``."""

    name = "fedfusion-local"

    def __init__(self, flwr_home: Path, log_file: Path, *, ray_address: str | None = None) -> None:
        self.port, control_port = free_port(), free_port()
        self.log_file = log_file
        command = [
            venv_bin("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--control-api-address", f"127.0.0.1:{control_port}",
            "--disable-runtime-dependency-installation",
        ]  # fmt: skip
        config = {"superlink": {"default": self.name, self.name: {"address": f"127.0.0.1:{self.port}", "insecure": True}}}
        (flwr_home / "config.toml").write_text(tomli_w.dumps(config))
        with log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=flower_environment(flwr_home, ray_address=ray_address), stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def connection(self) -> str:
        """The connection name for ``flwr run``, once the SuperLink listens."""
        wait_until_listening(self.port, self.process, self.log_file)
        return self.name


#: Fewest cores per simulated ClientApp actor in a short run. Each actor is a process that
#: imports torch, MONAI and the app (about 7 s of CPU) before its first message, on the same
#: cores as Ray and the ServerApp. On 2 cores (benchmarks/startup.py, 2,000 HAM10000 samples,
#: 4 sites) one actor reached the end of round 1 in 25.7 s against 35.5 s for two, but each
#: later round took about 0.5 s longer (sites in turn instead of two at a time).
MIN_CPUS_PER_ACTOR = 4
#: Above this many rounds the per-round cost of fewer actors outweighs their faster start
#: (break-even measured at about 24 rounds): such runs get one actor per core, up to one per site.
SHORT_RUN_ROUNDS = 20


def client_cpus(num_sites: int, *, rounds: int | None = None, cpu_count: int | None = None) -> int:
    """Cores each ClientApp actor asks Ray for (``client-resources-num-cpus``); Ray then runs
    ``cpu_count // client_cpus`` actors at once, between 1 and ``num_sites``.

    Args:
        num_sites: simulated SuperNodes.
        rounds: the run's rounds; ``None`` or at most ``SHORT_RUN_ROUNDS`` is a short run.
        cpu_count: cores of the machine (default ``os.cpu_count()``).
    """
    total = max(1, cpu_count or os.cpu_count() or 1)
    per_actor = MIN_CPUS_PER_ACTOR if rounds is None or rounds <= SHORT_RUN_ROUNDS else 1
    actors = max(1, min(num_sites, total // per_actor))
    return max(1, total // actors)


class FederationEngine:
    """Flower's simulation engine for one run folder: a Ray head and a SuperLink started when
    the engine is (see :func:`federation_engine`), and :meth:`run`, which submits the app."""

    def __init__(self, run_dir: Path, flwr_home: Path, superlink: _SimulationSuperLink, ray_head: RayHead,
                 flwr_run: PrestartedFlwrRun) -> None:  # fmt: skip
        self.run_dir, self.flwr_home, self.superlink, self.ray_head = run_dir, flwr_home, superlink, ray_head
        self.flwr_run = flwr_run
        self.submitted = False

    def run(
        self,
        *,
        app_dir: Path,
        run_config: dict[str, str | int | float | bool],
        num_sites: int,
        on_line: Callable[[str], None] | None = None,
        timeout_s: float = 3600.0,
    ) -> None:
        """Run one federated training on the engine and wait for it to finish.

        Args:
            app_dir: the project folder holding ``pyproject.toml`` with ``[tool.flwr.app]``; its
                ``fab-include`` files are staged apart first (``simulation.app_bundle``).
            run_config: values for ``[tool.flwr.app.config]`` (passed as a TOML file).
            num_sites: simulated SuperNodes, one per site manifest.
            on_line: called with each line ``flwr run --stream`` prints.
            timeout_s: the run is stopped after this long.
        """
        self.submitted = True
        config_file = self.run_dir / "flower_run_config.toml"
        config_file.write_text(tomli_w.dumps(run_config))
        rounds = json.loads(str(run_config.get("config-json") or "{}")).get("rounds")
        cpus = client_cpus(num_sites, rounds=rounds)
        staged = stage_app(app_dir, self.flwr_home / "app")
        self.ray_head.wait_listening()
        args = [
            "run", str(staged), self.superlink.connection(),
            "--run-config", str(config_file),
            "--federation-config", f"num-supernodes={num_sites} client-resources-num-cpus={cpus}",
            "--stream",
        ]  # fmt: skip
        _stream(self.flwr_run.start(args), self.run_dir / "logs" / "flwr_run.log", on_line, timeout_s)


class _Started:
    """A run's FLWR_HOME, Ray head, SuperLink and waiting ``flwr run`` process, started at
    construction with their logs in ``log_dir`` (default: the FLWR_HOME, for processes
    started before the run folder is known; :meth:`stop` then copies the logs over)."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.flwr_home = Path(tempfile.mkdtemp(prefix="fedfusion-flwr-"))
        self.log_dir = log_dir or self.flwr_home
        self.ray_head: RayHead | None = None
        self.superlink: _SimulationSuperLink | None = None
        self.flwr_run: PrestartedFlwrRun | None = None
        try:
            self.ray_head = RayHead(flower_environment(self.flwr_home), self.log_dir / "ray_head.log")
            self.superlink = _SimulationSuperLink(self.flwr_home, self.log_dir / "superlink.log",
                                                  ray_address=self.ray_head.address)  # fmt: skip
            self.flwr_run = PrestartedFlwrRun(flower_environment(self.flwr_home))
        except BaseException:
            self.stop()
            raise

    def _logging(self) -> list[tuple[RayHead | _SimulationSuperLink, str]]:
        """The started processes that write a log, with the log's file name."""
        named = ((self.ray_head, "ray_head.log"), (self.superlink, "superlink.log"))
        return [(process, name) for process, name in named if process is not None]

    def log_to(self, log_dir: Path) -> None:
        """Name ``log_dir``'s copies in error messages; :meth:`stop` writes them there."""
        for process, name in self._logging():
            process.log_file = log_dir / name

    def stop(self) -> None:
        """Stop the ``flwr run`` process, the SuperLink (its engine leaves the cluster first),
        then the Ray head, then any process left with this FLWR_HOME, all by pid; copy logs
        written elsewhere to where :meth:`log_to` said."""
        try:
            if self.flwr_run is not None and self.flwr_run.process.returncode is None:  # not reaped by a run
                stop_process_group(self.flwr_run.process)
            if self.superlink is not None:
                stop_process_group(self.superlink.process)
        finally:
            if self.ray_head is not None:
                self.ray_head.stop()
            # every process started here has this FLWR_HOME in its environment, also one left orphaned
            stop_by_environment(f"FLWR_HOME={self.flwr_home}")
            for process, name in self._logging():
                written = self.log_dir / name
                if process.log_file != written and written.exists():
                    process.log_file.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(written, process.log_file)
            shutil.rmtree(self.flwr_home, ignore_errors=True)


#: Processes :func:`prestart_federation` started for this process's next federation.
_waiting: _Started | None = None


def prestart_federation() -> None:
    """Start the next federation's Ray head, SuperLink and ``flwr run`` process now, before the
    caller has read its config: their start-up then uses the core that the caller's own imports
    leave idle, and SuperExec (which the SuperLink starts, and which starts the engine) is up
    sooner. :func:`federation_engine` takes them; :func:`discard_prestarted` stops them if none does.
    If they fail to start, nothing is kept: :func:`federation_engine` starts its own and reports why."""
    global _waiting
    if _waiting is None:
        try:
            _waiting = _Started()
        except Exception:  # noqa: BLE001 - reported where the run needs them, with the run's logs
            _waiting = None


def discard_prestarted() -> None:
    """Stop prestarted processes that no federation took (the command failed before one)."""
    global _waiting
    if _waiting is not None:
        waiting, _waiting = _waiting, None
        waiting.stop()


@contextmanager
def federation_engine(run_dir: Path) -> Iterator[FederationEngine]:
    """Start a Ray head, a SuperLink and the ``flwr run`` process for a run in ``run_dir`` now
    (or take those :func:`prestart_federation` started), so that they start while the caller
    prepares the sites; all stopped by their pids on exit, also after an error.
    Their logs go to ``run_dir/logs``, which is removed again when nothing was submitted (a
    run that failed on its data leaves no Flower logs to read)."""
    global _waiting
    log_dir = run_dir / "logs"
    fresh_logs = not log_dir.exists()
    log_dir.mkdir(parents=True, exist_ok=True)
    started, _waiting = (_waiting, None) if _waiting is not None else (_Started(log_dir), None)
    started.log_to(log_dir)
    engine = None
    try:
        assert started.ray_head and started.superlink and started.flwr_run
        engine = FederationEngine(run_dir, started.flwr_home, started.superlink, started.ray_head, started.flwr_run)
        yield engine
    finally:
        started.stop()
        if fresh_logs and (engine is None or not engine.submitted):
            shutil.rmtree(log_dir, ignore_errors=True)


def _stream(
    process: subprocess.Popen, log_path: Path, on_line: Callable[[str], None] | None, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    with log_path.open("w") as log:
        try:
            for line in process.stdout or ():
                log.write(line)
                log.flush()
                if on_line is not None:
                    on_line(line.rstrip("\n"))
                if time.monotonic() > deadline:
                    raise FederationError(f"the federated run passed its {timeout_s:.0f} s limit; see {log_path}")
            if process.wait() != 0:
                raise FederationError(f"`flwr run` exited with code {process.returncode}; see {log_path}")
        finally:
            stop_process_group(process)

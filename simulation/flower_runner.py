"""Run the ServerApp and ClientApps on Flower's simulation engine, as separate processes:
a Ray head node and a SuperLink in simulation mode that this process owns, and ``flwr run``
against them (its process started with them, see :mod:`simulation.flwr_run_waiter`).

Every process started here is stopped by its pid (its whole process group), also when the
run fails or is interrupted, and Flower's state lives in a temporary FLWR_HOME.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
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

__all__ = ["FederationError", "FederationEngine", "federation_engine", "client_cpus", "flower_environment",
           "stop_process_group", "stop_pid", "alive", "descendants"]  # fmt: skip

_STARTUP_TIMEOUT_S = 60.0


class FederationError(RuntimeError):
    """The federated run failed; the message says where its logs are."""


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
            "PYTHONUNBUFFERED": "1",
        }
    )
    if ray_address is not None:
        env["RAY_ADDRESS"] = ray_address  # ray.init() without an address reads it
    # Flower starts its helpers (flower-superexec, flwr-serverapp) by name: find this venv's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def descendants(pid: int) -> list[int]:
    """Pids of every living descendant of ``pid`` (from /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: it exists and is not a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pids: list[int], grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)


def stop_process_group(process: subprocess.Popen, *, grace_s: float = 10.0) -> None:
    """Stop ``process`` and every process it started, by pid: Flower detaches its helpers into
    new sessions, so a process-group kill alone would leave them running."""
    family = descendants(process.pid)
    if process.poll() is None:
        _signal([process.pid], signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    family += [p for p in descendants(process.pid) if p not in family]
    _signal(family, signal.SIGTERM)
    _wait_gone(family, grace_s)
    _signal([process.pid, *family], signal.SIGKILL)
    process.wait()


def stop_pid(pid: int, *, grace_s: float = 10.0) -> list[int]:
    """Stop a process that is not our child (a detached SuperLink) and its descendants, by
    pid: SIGTERM first, SIGKILL after ``grace_s``. Returns the pids that were signalled."""
    family = descendants(pid)
    _signal([pid], signal.SIGTERM)
    _wait_gone([pid], grace_s)
    family += [p for p in descendants(pid) if p not in family]
    _signal(family, signal.SIGTERM)
    _wait_gone(family, grace_s)
    _signal([pid, *family], signal.SIGKILL)
    _wait_gone([pid, *family], 2.0)
    return [pid, *family]


def _wait_until_listening(port: int, process: subprocess.Popen, log_file: Path, *, what: str = "the SuperLink") -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FederationError(f"{what} exited with code {process.returncode}; see {log_file}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise FederationError(f"{what} did not listen on 127.0.0.1:{port} within {_STARTUP_TIMEOUT_S:.0f} s; see {log_file}")


#: The head's other listening servers, given ports from :func:`free_port` like the GCS.
_RAY_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--runtime-env-agent-port",
                   "--metrics-export-port", "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port")  # fmt: skip


class _RayHead:
    """A one-node Ray cluster for the simulation engine, started at construction.

    Flower's engine would start Ray itself (six processes, 3-4 s on 2 cores) only after the
    SuperLink, ``flwr run`` and its own imports, and stop it again at the end (about 4 s).
    Started here beside the SuperLink, Ray comes up while the sites are prepared; the engine
    joins it through ``RAY_ADDRESS`` and, at the end, only disconnects.
    """

    def __init__(self, flwr_home: Path, log_file: Path) -> None:
        self.port, self.log_file = free_port(), log_file
        # Ray's own temp folder, short: its Unix socket paths must stay under 108 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="fedfusion-ray-"))
        command = [
            # no --node-ip-address: `ray start` resolves 127.0.0.1 to the node's address anyway
            _bin("ray"), "start", "--head", "--block", "--port", str(self.port),
            # as many cores as client_cpus() shares out among the ClientApp actors
            "--num-cpus", str(os.cpu_count() or 1),
            # Ray's client server is not used, but `ray start` always runs one: a free port, not 10001
            "--include-dashboard", "false", "--ray-client-server-port", str(free_port()), "--disable-usage-stats",
            # Ray would pick these itself from the ephemeral range, which its own connections share
            *(arg for flag in _RAY_PORT_FLAGS for arg in (flag, str(free_port()))),
            "--temp-dir", str(self.temp_dir),
        ]  # fmt: skip
        with log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=flower_environment(flwr_home), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    @property
    def address(self) -> str:
        """The cluster's GCS address, for ``RAY_ADDRESS``."""
        return f"127.0.0.1:{self.port}"

    def wait_listening(self) -> None:
        """Wait until the head's GCS listens (the first of its processes, well before the rest
        are up; the engine's ``ray.init`` waits for those). Raises :class:`FederationError` if
        the head exits first, since the engine would then wait for it forever."""
        _wait_until_listening(self.port, self.process, self.log_file, what="the Ray head node")

    def stop(self) -> None:
        """Stop the head and every Ray process under it, by pid; remove its temp folder."""
        try:
            stop_process_group(self.process)
        finally:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


class _SimulationSuperLink:
    """A SuperLink in simulation mode on loopback, started at construction; :meth:`connection`
    waits until it listens. ``flwr run`` reaches it by the connection name this writes to
    ``flwr_home/config.toml``."""

    name = "fedfusion-local"

    def __init__(self, flwr_home: Path, log_file: Path, *, ray_address: str | None = None) -> None:
        self.port, control_port = free_port(), free_port()
        self.log_file = log_file
        command = [
            _bin("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
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
        _wait_until_listening(self.port, self.process, self.log_file)
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

    def __init__(self, run_dir: Path, flwr_home: Path, superlink: _SimulationSuperLink, ray_head: _RayHead,
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


@contextmanager
def federation_engine(run_dir: Path) -> Iterator[FederationEngine]:
    """Start a Ray head, a SuperLink and the ``flwr run`` process for a run in ``run_dir`` now,
    so that they start while the caller prepares the sites; all stopped by their pids on exit,
    also after an error.
    Their logs go to ``run_dir/logs``, which is removed again when nothing was submitted (a
    run that failed on its data leaves no Flower logs to read)."""
    log_dir = run_dir / "logs"
    fresh_logs = not log_dir.exists()
    log_dir.mkdir(parents=True, exist_ok=True)
    flwr_home = Path(tempfile.mkdtemp(prefix="fedfusion-flwr-"))
    engine = None
    try:
        ray_head = _RayHead(flwr_home, log_dir / "ray_head.log")
        try:
            superlink = _SimulationSuperLink(flwr_home, log_dir / "superlink.log", ray_address=ray_head.address)
            flwr_run = PrestartedFlwrRun(flower_environment(flwr_home))
            try:
                engine = FederationEngine(run_dir, flwr_home, superlink, ray_head, flwr_run)
                yield engine
            finally:
                if flwr_run.process.returncode is None:  # not yet reaped by the run
                    stop_process_group(flwr_run.process)
                stop_process_group(superlink.process)  # then: its engine leaves the cluster
        finally:
            ray_head.stop()
    finally:
        shutil.rmtree(flwr_home, ignore_errors=True)
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

"""Run the ServerApp and ClientApps on Flower's simulation engine, as separate processes:
a SuperLink in simulation mode that this process owns, and ``flwr run`` against it.

Every process started here is stopped by its pid (its whole process group), also when the
run fails or is interrupted, and Flower's state lives in a temporary FLWR_HOME.
"""

from __future__ import annotations

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

__all__ = ["FederationError", "run_federation", "flower_environment", "free_port", "stop_process_group", "descendants"]

_STARTUP_TIMEOUT_S = 60.0


class FederationError(RuntimeError):
    """The federated run failed; the message says where its logs are."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_environment(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower processes: private FLWR_HOME, no telemetry, no runtime installs."""
    env = os.environ.copy()
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            # The SuperLink would otherwise `uv sync` the project, fetching a CUDA torch build.
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_DISABLE_USAGE_STATS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
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
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in family):
        time.sleep(0.2)
    _signal([process.pid, *family], signal.SIGKILL)
    process.wait()


def _wait_until_listening(port: int, process: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FederationError(f"the SuperLink exited with code {process.returncode}; see {log_file}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise FederationError(f"the SuperLink did not listen on 127.0.0.1:{port} within {_STARTUP_TIMEOUT_S:.0f} s; see {log_file}")


@contextmanager
def simulation_superlink(flwr_home: Path, log_dir: Path) -> Iterator[str]:
    """Start a SuperLink in simulation mode on loopback; yields the connection name to use."""
    http_port, control_port = free_port(), free_port()
    log_file = log_dir / "superlink.log"
    command = [
        _bin("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
        "--host", "127.0.0.1", "--port", str(http_port),
        "--control-api-address", f"127.0.0.1:{control_port}",
        "--disable-runtime-dependency-installation",
    ]  # fmt: skip
    connection = "fedfusion-local"
    config = {"superlink": {"default": connection, connection: {"address": f"127.0.0.1:{http_port}", "insecure": True}}}
    (flwr_home / "config.toml").write_text(tomli_w.dumps(config))
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command, env=flower_environment(flwr_home), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_until_listening(http_port, process, log_file)
        yield connection
    finally:
        stop_process_group(process)


def run_federation(
    *,
    app_dir: Path,
    run_dir: Path,
    run_config: dict[str, str | int | float | bool],
    num_sites: int,
    on_line: Callable[[str], None] | None = None,
    timeout_s: float = 3600.0,
) -> None:
    """Run one federated training on the simulation engine and wait for it to finish.

    Args:
        app_dir: the project folder holding ``pyproject.toml`` with ``[tool.flwr.app]``.
        run_dir: the run's output folder; Flower's logs go to ``run_dir/logs``.
        run_config: values for ``[tool.flwr.app.config]`` (passed as a TOML file).
        num_sites: simulated SuperNodes, one per site manifest.
        on_line: called with each line ``flwr run --stream`` prints.
        timeout_s: the run is stopped after this long.
    """
    log_dir = run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    flwr_home = Path(tempfile.mkdtemp(prefix="fedfusion-flwr-"))
    config_file = run_dir / "flower_run_config.toml"
    config_file.write_text(tomli_w.dumps(run_config))
    cpus = max(1, (os.cpu_count() or 1) // min(num_sites, os.cpu_count() or 1))
    try:
        with simulation_superlink(flwr_home, log_dir) as connection:
            command = [
                _bin("flwr"), "run", str(app_dir), connection,
                "--run-config", str(config_file),
                "--federation-config", f"num-supernodes={num_sites} client-resources-num-cpus={cpus}",
                "--stream",
            ]  # fmt: skip
            _stream(command, flwr_home, log_dir / "flwr_run.log", on_line, timeout_s)
    finally:
        shutil.rmtree(flwr_home, ignore_errors=True)


def _stream(
    command: list[str], flwr_home: Path, log_path: Path, on_line: Callable[[str], None] | None, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, env=flower_environment(flwr_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, start_new_session=True,
        )  # fmt: skip
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

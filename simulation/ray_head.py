"""The Ray head node the simulation engine joins: one node, started by this process beside the
SuperLink and stopped by its pid (see :class:`RayHead`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from simulation.ports import free_port
from simulation.processes import stop_process_group, venv_bin, wait_until_listening

__all__ = ["RayHead", "ACTOR_PRELOAD_MODULES", "without_client_server"]


def without_client_server(ray_params: Any, head: bool) -> None:
    """``ray start``'s hook (``RAY_START_HOOK``): leave out Ray's client server, which ``ray
    start`` runs on every head (about 0.7 s of a core at start-up) and nothing here connects to."""
    ray_params.ray_client_server_port = None


START_HOOK = f"{__name__}.{without_client_server.__name__}"
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

#: The head's listening servers besides the GCS, given ports from :func:`free_port` like it.
_RAY_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--runtime-env-agent-port",
                   "--metrics-export-port", "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port")  # fmt: skip

#: What a ClientApp imports before its first training step (``torch._dynamo`` at torch's first
#: optimizer): about 5 s of one core together.
ACTOR_PRELOAD_MODULES = ("torch", "torch._dynamo", "monai", "sklearn.metrics")


class RayHead:
    """A one-node Ray cluster for the simulation engine, started at construction.

    Flower's engine would start Ray itself (six processes, 3-4 s on 2 cores) only after the
    SuperLink, ``flwr run`` and its own imports, and stop it again at the end (about 4 s).
    Started here beside the SuperLink, Ray comes up while the sites are prepared; the engine
    joins it through ``RAY_ADDRESS`` and, at the end, only disconnects.

    The head runs what a simulation needs, no more (no autoscaler monitor, no client server),
    and each of its workers imports :data:`ACTOR_PRELOAD_MODULES` as soon as it starts: the
    ClientApp actor's worker starts while the ServerApp loads, and would otherwise begin these
    imports only at its first training message, with the other core idle.
    """

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        """Start ``ray start --head`` with ``env`` (Flower's, :func:`simulation.flower_runner.flower_environment`)
        and its output in ``log_file``."""
        self.port, self.log_file = free_port(), log_file
        # Ray's own temp folder, short: its Unix socket paths must stay under 108 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="fedfusion-ray-"))
        command = [
            # no --node-ip-address: `ray start` resolves 127.0.0.1 to the node's address anyway
            venv_bin("ray"), "start", "--head", "--block", "--port", str(self.port),
            # as many cores as client_cpus() shares out among the ClientApp actors
            "--num-cpus", str(os.cpu_count() or 1),
            "--include-dashboard", "false", "--disable-usage-stats",
            # Ray would pick these itself from the ephemeral range, which its own connections share
            *(arg for flag in _RAY_PORT_FLAGS for arg in (flag, str(free_port()))),
            "--temp-dir", str(self.temp_dir),
            # the autoscaler's monitor: a Python process with nothing to scale on one fixed node
            "--no-monitor",
        ]  # fmt: skip
        # `ray start` imports the hook: from this checkout, also when fedfusion is not installed
        pythonpath = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        env = {
            **env,
            "PYTHONPATH": pythonpath,
            "RAY_START_HOOK": START_HOOK,
            # Ray's raylet setting: each worker imports these after it connects, before its first task
            "RAY_preload_python_modules": ",".join(ACTOR_PRELOAD_MODULES),
        }
        with log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT,
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
        wait_until_listening(self.port, self.process, self.log_file, what="the Ray head node")

    def stop(self) -> None:
        """Stop the head and every Ray process under it, by pid; remove its temp folder."""
        try:
            stop_process_group(self.process)
        finally:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

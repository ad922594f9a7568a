"""The Ray head node (simulation/ray_head.py): it fails loudly when it exits, runs only what a
simulation needs, and its workers import the training stack before their first task."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from simulation import ray_head
from simulation.flower_runner import flower_environment
from simulation.processes import FederationError, alive, descendants
from simulation.ray_head import ACTOR_PRELOAD_MODULES, RayHead
from tests.simulation.test_simulate_e2e import kill_leftovers


def test_a_ray_head_that_exits_fails_the_run_instead_of_leaving_the_engine_waiting(tmp_path, monkeypatch):
    real_bin = ray_head.venv_bin
    monkeypatch.setattr(ray_head, "venv_bin", lambda name: "false" if name == "ray" else real_bin(name))
    head = RayHead(flower_environment(tmp_path), tmp_path / "ray_head.log")
    try:
        with pytest.raises(FederationError, match=r"the Ray head node exited with code 1; see .*ray_head\.log"):
            head.wait_listening()
    finally:
        head.stop()
    assert not head.temp_dir.exists()


# A driver that joins the head as Flower's engine does (ray.init with a runtime_env) and starts
# one actor, which reports what its worker had imported before the actor's first line ran.
_DRIVER = """
import json, sys, ray
ray.init(runtime_env={"env_vars": {"FEDFUSION_PROBE": "1"}})

@ray.remote(num_cpus=1)
class Probe:
    def __init__(self, names):
        self.loaded = [name for name in names if name in sys.modules]

    def loaded_before_init(self):
        return self.loaded

print(json.dumps(ray.get(Probe.remote(sys.argv[1:]).loaded_before_init.remote())))
ray.shutdown()
"""


@pytest.mark.slow
def test_the_head_runs_no_client_server_nor_monitor_and_its_workers_preload_the_training_stack(tmp_path, monkeypatch):
    marker = uuid.uuid4().hex
    monkeypatch.setenv("FEDFUSION_TEST_RUN", marker)
    head = RayHead(flower_environment(tmp_path), tmp_path / "ray_head.log")
    try:
        head.wait_listening()
        driver = subprocess.run([sys.executable, "-c", _DRIVER, *ACTOR_PRELOAD_MODULES, "wave"],
                                env={**flower_environment(tmp_path), "RAY_ADDRESS": head.address},
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert driver.returncode == 0, driver.stderr[-3000:]
        # `wave` (audio files) is no preload and nothing imports it: the probe does not list every name
        assert json.loads(driver.stdout.splitlines()[-1]) == list(ACTOR_PRELOAD_MODULES)
        processes = [head.process.pid, *descendants(head.process.pid)]
        commands = [_command(pid) for pid in processes]
        assert head.process.poll() is None, head.log_file.read_text()[-3000:]
        assert any("raylet" in command for command in commands), commands
        assert not [c for c in commands if "ray.util.client.server" in c or "autoscaler/_private/monitor.py" in c]
    finally:
        head.stop()
    assert not any(alive(pid) for pid in processes)
    assert not kill_leftovers(f"FEDFUSION_TEST_RUN={marker}")


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

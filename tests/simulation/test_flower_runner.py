"""The Flower runner's pieces: actor sizing, the Ray head the simulation engine joins, and the
processes started before the CLI reads its config."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from simulation import flower_runner, ports
from simulation.flower_runner import client_cpus, discard_prestarted, federation_engine, prestart_federation
from simulation.processes import alive, descendants
from tests.simulation.test_processes import start_orphan
from tests.simulation.test_simulate_e2e import kill_leftovers


@pytest.mark.parametrize(
    ("cpu_count", "num_sites", "rounds", "cpus", "actors"),
    [(1, 4, 3, 1, 1), (2, 4, 3, 2, 1), (2, 4, None, 2, 1), (4, 4, 20, 4, 1), (8, 4, 3, 4, 2), (16, 4, 3, 4, 4),
     (16, 2, 3, 8, 2), (64, 3, 3, 21, 3),
     (2, 4, 40, 1, 2), (16, 4, 40, 4, 4), (1, 4, 40, 1, 1)],  # long runs: one actor per core, at most one per site
)  # fmt: skip
def test_short_runs_start_one_actor_per_four_cores_never_more_than_sites(cpu_count, num_sites, rounds, cpus, actors):
    assert client_cpus(num_sites, rounds=rounds, cpu_count=cpu_count) == cpus
    assert cpu_count // cpus == actors  # what Ray runs at once


def _listening_ports(pids: list[int]) -> set[int]:
    """TCP ports the processes ``pids`` listen on, from /proc/net/tcp{,6} and their open files."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return found


@pytest.mark.slow
def test_the_engine_joins_the_ray_head_which_is_stopped_with_all_its_processes(tmp_path, monkeypatch):
    marker = uuid.uuid4().hex
    monkeypatch.setenv("FEDFUSION_TEST_RUN", marker)
    with federation_engine(tmp_path / "run") as engine:
        head = engine.ray_head
        head.wait_listening()
        superlink_env = Path(f"/proc/{engine.superlink.process.pid}/environ").read_bytes().split(b"\0")
        assert f"RAY_ADDRESS={head.address}".encode() in superlink_env
        # inherited by SuperExec, which the SuperLink starts: it asks for a submitted run this often
        assert f"{flower_runner.SUPEREXEC_POLL_ENV}={flower_runner.SUPEREXEC_POLL_S}".encode() in superlink_env
        # a driver joins the cluster as Flower's engine does: ray.init() with RAY_ADDRESS set
        join = "import ray; ray.init(); print(ray.cluster_resources()['CPU']); ray.shutdown()"
        joined = subprocess.run([sys.executable, "-c", join], env={**os.environ, "RAY_ADDRESS": head.address},
                                capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
        assert float(joined.stdout.split()[-1]) == os.cpu_count()
        ray_processes = [head.process.pid, *descendants(head.process.pid)]
        # `ray start --block` kills the rest and exits when one of its processes dies
        assert head.process.poll() is None, head.log_file.read_text()[-3000:]
        assert len(ray_processes) >= 4  # the head, GCS, raylet and Ray's Python helpers
        # every server of the head on a port handed out below the ephemeral range, none Ray's pick
        ephemeral_low = int(ports.EPHEMERAL_RANGE_FILE.read_text().split()[0])
        listening = _listening_ports(ray_processes)
        assert head.port in listening
        assert all(ports.LOWEST_PORT <= port < ephemeral_low for port in listening), sorted(listening)
    assert not any(alive(pid) for pid in ray_processes)
    assert not head.temp_dir.exists()
    assert not kill_leftovers(f"FEDFUSION_TEST_RUN={marker}")


def _family(engine_or_started) -> list[int]:
    pids = [engine_or_started.ray_head.process.pid, engine_or_started.superlink.process.pid,
            engine_or_started.flwr_run.process.pid]  # fmt: skip
    return pids + [child for pid in pids for child in descendants(pid)]


@pytest.mark.slow
def test_a_federation_takes_the_prestarted_processes_and_keeps_their_logs(tmp_path, monkeypatch):
    marker = uuid.uuid4().hex
    monkeypatch.setenv("FEDFUSION_TEST_RUN", marker)
    try:
        prestart_federation()
        waiting = flower_runner._waiting
        assert waiting is not None
        with federation_engine(tmp_path / "run") as engine:
            assert flower_runner._waiting is None
            assert engine.superlink is waiting.superlink and engine.flwr_run is waiting.flwr_run
            assert engine.superlink.log_file == tmp_path / "run" / "logs" / "superlink.log"
            engine.superlink.connection()  # listening, its log written under the FLWR_HOME
            family = _family(engine)
            engine.submitted = True  # a submitted run keeps its logs
        assert not any(alive(pid) for pid in family)
        assert not waiting.flwr_home.exists()
        assert "SuperLink" in (tmp_path / "run" / "logs" / "superlink.log").read_text()
        assert (tmp_path / "run" / "logs" / "ray_head.log").exists()
    finally:
        discard_prestarted()
        assert not kill_leftovers(f"FEDFUSION_TEST_RUN={marker}")


@pytest.mark.slow
def test_prestarted_processes_no_federation_took_are_stopped(monkeypatch):
    marker = uuid.uuid4().hex
    monkeypatch.setenv("FEDFUSION_TEST_RUN", marker)
    prestart_federation()
    waiting = flower_runner._waiting
    family = _family(waiting)
    # a process of the federation whose parent exited: no one's descendant, found by its FLWR_HOME
    orphan = start_orphan({**os.environ, "FLWR_HOME": str(waiting.flwr_home)})
    discard_prestarted()
    assert flower_runner._waiting is None
    assert not any(alive(pid) for pid in [*family, orphan])
    assert not Path(waiting.flwr_home).exists()
    assert not kill_leftovers(f"FEDFUSION_TEST_RUN={marker}")

"""The Flower runner's pieces: actor sizing, stopping a detached process by pid, and the Ray
head the simulation engine joins."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from simulation import flower_runner, ports
from simulation.flower_runner import FederationError, alive, client_cpus, descendants, federation_engine, stop_pid
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


def test_stop_pid_stops_a_process_that_is_not_our_child_and_its_children(tmp_path):
    # A detached parent (its own session, like flwr's local SuperLink) whose child would outlive it.
    sleeper = "import time; time.sleep(300)"
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(300)"
    # the parent must not hold the launcher's captured stdout, or run() would wait for it to exit
    launch = (f"import subprocess, sys; "
              f"print(subprocess.Popen([sys.executable, '-c', {parent!r}], start_new_session=True, "
              f"stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")
    launcher = subprocess.run([sys.executable, "-c", launch], capture_output=True, text=True, check=True)
    pid = int(launcher.stdout)
    deadline = time.monotonic() + 60  # a loaded machine starts Python slowly
    while not _children(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = _children(pid)
    assert child, "the detached parent did not start its child"
    stopped = stop_pid(pid, grace_s=10)
    assert pid in stopped and child[0] in stopped
    assert not alive(pid) and not alive(child[0])


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


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def test_a_ray_head_that_exits_fails_the_run_instead_of_leaving_the_engine_waiting(tmp_path, monkeypatch):
    real_bin = flower_runner._bin
    monkeypatch.setattr(flower_runner, "_bin", lambda name: "false" if name == "ray" else real_bin(name))
    head = flower_runner._RayHead(tmp_path, tmp_path / "ray_head.log")
    try:
        with pytest.raises(FederationError, match=r"the Ray head node exited with code 1; see .*ray_head\.log"):
            head.wait_listening()
    finally:
        head.stop()
    assert not head.temp_dir.exists()


@pytest.mark.slow
def test_the_engine_joins_the_ray_head_which_is_stopped_with_all_its_processes(tmp_path, monkeypatch):
    marker = uuid.uuid4().hex
    monkeypatch.setenv("FEDFUSION_TEST_RUN", marker)
    with federation_engine(tmp_path / "run") as engine:
        head = engine.ray_head
        head.wait_listening()
        superlink_env = Path(f"/proc/{engine.superlink.process.pid}/environ").read_bytes().split(b"\0")
        assert f"RAY_ADDRESS={head.address}".encode() in superlink_env
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

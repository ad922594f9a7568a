"""Start-up waits and stopping by pid for the processes a run starts (SuperLink, Ray head,
``flwr run``): Flower and Ray detach their helpers into new sessions, so each is found through
``/proc`` and signalled by its pid, never by its name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["FederationError", "venv_bin", "descendants", "alive", "stop_process_group", "stop_pid",
           "processes_with_environment", "stop_by_environment", "wait_until_listening"]  # fmt: skip

STARTUP_TIMEOUT_S = 60.0


class FederationError(RuntimeError):
    """The federated run failed; the message says where its logs are."""


def venv_bin(name: str) -> str:
    """The path of this venv's command ``name`` (Flower's and Ray's), else ``name`` for PATH."""
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


def processes_with_environment(entry: str) -> list[int]:
    """Pids of running processes (other than this one) whose environment holds ``entry``, a whole
    ``NAME=value`` line: ``FLWR_HOME=/tmp/a`` does not match ``FLWR_HOME=/tmp/ab``."""
    wanted, found = entry.encode(), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if wanted in (proc / "environ").read_bytes().split(b"\0") and alive(int(proc.name)):
                found.append(int(proc.name))
        except OSError:  # gone, or another user's
            continue
    return found


def stop_by_environment(entry: str, *, grace_s: float = 5.0) -> list[int]:
    """Stop, by pid, every process whose environment holds ``entry`` (SIGTERM, SIGKILL after
    ``grace_s``) and return their pids: those whose parent exited first are no longer anyone's
    descendants, so :func:`stop_process_group` cannot find them (a Ray process started while
    ``ray start`` was being stopped, say)."""
    pids = processes_with_environment(entry)
    _signal(pids, signal.SIGTERM)
    _wait_gone(pids, grace_s)
    _signal(pids, signal.SIGKILL)
    _wait_gone(pids, 2.0)
    return pids


def wait_until_listening(port: int, process: subprocess.Popen, log_file: Path, *, what: str = "the SuperLink") -> None:
    """Wait until ``process`` listens on loopback ``port``; :class:`FederationError` (naming ``log_file``)
    if it exits first or is not listening within :data:`STARTUP_TIMEOUT_S`."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FederationError(f"{what} exited with code {process.returncode}; see {log_file}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise FederationError(f"{what} did not listen on 127.0.0.1:{port} within {STARTUP_TIMEOUT_S:.0f} s; see {log_file}")

"""Where the host's CPU time went during a timed window, from Linux's ``/proc``: the process
tree under test, everything else, the hypervisor (steal) and idle.

A timing on a shared 2-core machine only means something together with what else ran: a
run that ended late while other processes held a core says nothing about the code, and one
that ended late with the cores idle does. :class:`HostCpu` snapshots ``/proc/stat`` at the
start; :meth:`HostCpu.split` takes a second snapshot and the tree's CPU time at that moment.
On a system without ``/proc`` every figure is ``None``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HostCpu", "tree_cpu_s", "between"]

PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _host_ticks() -> dict[str, int] | None:
    """The first line of ``/proc/stat``: busy (user, nice, system, irq, softirq), idle (idle, iowait) and steal ticks."""
    try:
        fields = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait, "steal": steal}


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its reaped children), or ``None`` once it is gone."""
    try:
        after_name = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ppid, utime, stime, cutime, cstime = int(after_name[1]), *(int(v) for v in after_name[11:15])
    return ppid, (utime + stime + cutime + cstime) / _TICK


def tree_cpu_s(root: int) -> float | None:
    """CPU seconds of ``root`` and every live descendant, each with its reaped children's."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None:
            parents[int(entry.name)], cpu[int(entry.name)] = found
    if root not in cpu:
        return None
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


class HostCpu:
    """The host's CPU ticks at construction; :meth:`split` says where they went since."""

    def __init__(self) -> None:
        self.start = _host_ticks()
        self.own_start = os.times()

    def split(self, root: int) -> dict[str, float | None]:
        """Seconds of CPU since construction: ``tree`` (``root`` and its descendants, as far
        as they are still alive or reaped), ``others`` (the rest of the busy time, this
        process's own polling excluded), ``steal`` and ``idle``, summed over the cores."""
        now, tree = _host_ticks(), tree_cpu_s(root)
        if self.start is None or now is None or tree is None:
            return {"tree": tree, "others": None, "steal": None, "idle": None}
        used = {k: (now[k] - self.start[k]) / _TICK for k in now}
        own = sum(a - b for a, b in zip(os.times()[:2], self.own_start[:2]))
        return {"tree": round(tree, 2), "others": round(max(used["busy"] - tree - own, 0.0), 2),
                "steal": round(used["steal"], 2), "idle": round(used["idle"], 2)}  # fmt: skip


def between(marks: list[tuple[str, dict[str, float | None]]]) -> dict[str, dict[str, float | None]]:
    """Per phase, the CPU seconds of each kind spent since the previous mark: ``marks`` are
    ``(phase, split)`` in time order, each split cumulative from the same :class:`HostCpu`."""
    phases: dict[str, dict[str, float | None]] = {}
    previous: dict[str, float | None] = {}
    for phase, split in marks:
        phases[phase] = {kind: None if value is None or (previous and previous.get(kind) is None)
                         else round(value - (previous.get(kind) or 0.0), 2)
                         for kind, value in split.items()}  # fmt: skip
        previous = split
    return phases

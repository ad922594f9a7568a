"""The SuperLink that ``flwr run . local`` leaves running: find it by its command line and stop
it by pid (``fedfusion superlink [status|stop]``); flwr 1.42 starts it detached and prints no pid."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from simulation.processes import stop_pid

__all__ = ["LocalSuperLink", "find_local_superlinks", "superlink_command"]


# The managed SuperLink of `flwr run . local` (address ":local:" in $FLWR_HOME/config.toml):
# flwr 1.42 starts it detached, on these ports, and prints no pid.
_LOCAL_PORT_ENV, _LOCAL_PORT_DEFAULT = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091"


@dataclass(frozen=True)
class LocalSuperLink:
    """A running ``flower-superlink`` that ``flwr run . local`` started."""

    pid: int
    port: int
    log_file: Path | None

    def describe(self) -> str:
        log = f"; log {self.log_file}" if self.log_file else ""
        return f"local SuperLink: pid {self.pid}, 127.0.0.1:{self.port}{log}"


def _flwr_home() -> Path:
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr").expanduser()


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def find_local_superlinks(*, flwr_home: Path | None = None, port: int | None = None) -> list[LocalSuperLink]:
    """The managed local SuperLinks of ``flwr_home`` (default ``$FLWR_HOME``) on ``port``
    (default ``$FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` or 39091), found by their command line."""
    home = (flwr_home or _flwr_home()).resolve()
    port = port or int(os.environ.get(_LOCAL_PORT_ENV, _LOCAL_PORT_DEFAULT))
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _argv(int(entry.name))
        if not any(Path(a).name == "flower-superlink" for a in argv[:2]):
            continue
        options = dict(zip(argv, argv[1:]))
        log_file = Path(options["--log-file"]) if "--log-file" in options else None
        if options.get("--port") == str(port) and log_file is not None and log_file.resolve().parent.parent == home:
            found.append(LocalSuperLink(pid=int(entry.name), port=port, log_file=log_file))
    return found


def superlink_command(args: list[str]) -> int:
    """``fedfusion superlink [status|stop]``: show or stop the SuperLink ``flwr run . local`` left running."""
    action = args[0] if args else "status"
    if action not in ("status", "stop") or len(args) > 1:
        print("usage: fedfusion superlink [status|stop]   (the SuperLink `flwr run . local` started for "
              "$FLWR_HOME, on $FLWR_LOCAL_SUPERLINK_HTTP_API_PORT or 39091)", file=sys.stderr)  # fmt: skip
        return 2
    links = find_local_superlinks()
    if not links:
        port = os.environ.get(_LOCAL_PORT_ENV, _LOCAL_PORT_DEFAULT)
        print(f"no local SuperLink of FLWR_HOME={_flwr_home()} runs on port {port}")
        return 0
    for link in links:
        if action == "status":
            print(link.describe())
        else:
            stopped = stop_pid(link.pid)
            print(f"stopped the local SuperLink (pid {link.pid}) and {len(stopped) - 1} helper process(es)")
    return 0

"""A ``flwr`` CLI process started before its command is known.

Importing Flower's CLI takes about 1 s on 2 cores, and ``flwr run`` can only be given its
arguments once the sites are prepared (the run config and the number of SuperNodes come from
them). Started beside the SuperLink, this process imports the CLI while the sites are
prepared, then reads its arguments from stdin and runs Flower's own ``flwr`` entry point
(``flwr.cli.app:app``, what the ``flwr`` console script calls) with them.
"""

from __future__ import annotations

import json
import subprocess
import sys

__all__ = ["WaitingFlwr"]

# Runs in the child. A stdin closed before any command (the run failed on its data) exits 0.
_CHILD = """\
import json, sys
from flwr.cli.app import app
line = sys.stdin.readline()
if not line:
    sys.exit(0)
sys.argv = ["flwr", *json.loads(line)]
sys.exit(app())
"""


class WaitingFlwr:
    """A Python process of this environment with Flower's CLI imported, waiting for the
    arguments of one ``flwr`` command (see :meth:`start`); its output goes to ``stdout``."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.started = False

    def start(self, arguments: list[str]) -> subprocess.Popen:
        """Run ``flwr <arguments>`` in the waiting process; returns the process, whose stdout
        is the command's output. Its stdin is closed: the command reads no input."""
        if self.started:
            raise RuntimeError("this flwr process already ran a command")
        self.started = True
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(arguments) + "\n")
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # it died importing Flower: its output says why, and its exit code is not 0
        return self.process

    def close(self) -> None:
        """Let a process that was never given a command exit (it reads end of input)."""
        if not self.started and self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()

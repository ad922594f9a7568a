"""Where a benchmark's figures come from: the git commit they were measured at, and whether
tracked files differed from it (untracked files, such as earlier result files, do not count)."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git_commit", "uncommitted_changes"]

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git_commit() -> str:
    """The commit HEAD points to, or ``"unknown"`` outside a git checkout."""
    return _git("rev-parse", "HEAD")


def uncommitted_changes() -> bool:
    """Whether tracked files differ from HEAD (``True`` too when git cannot tell)."""
    return bool(_git("status", "--porcelain", "--untracked-files=no"))

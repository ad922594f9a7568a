"""``fedfusion cache [show|clear]``: where decoded files are cached, how much it holds, and
emptying it (entries are rebuilt on the next run that needs them)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from client.data import CACHE_ENV, shared_cache_dir

__all__ = ["cache_entries", "cache_command"]

# What client/data.py writes: <modality>-<24 hex>.npz, and atomic_open's temporary files.
_ENTRY = re.compile(r"^(\.[a-z]+-[0-9a-f]{24}\.npz\..*\.tmp|[a-z]+-[0-9a-f]{24}\.npz)$")


def cache_entries(folder: Path) -> list[Path]:
    """The cache files in ``folder``, and nothing else a user may keep there."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _ENTRY.match(p.name))


def cache_command(args: list[str]) -> int:
    """Show the shared cache (default) or clear it; returns the exit code."""
    action = args[0] if args else "show"
    if action not in ("show", "clear") or len(args) > 1:
        print(f"usage: fedfusion cache [show|clear]   (the folder is ${CACHE_ENV}, else ~/.cache/fedfusion)",
              file=sys.stderr)  # fmt: skip
        return 2
    folder = shared_cache_dir()
    entries = cache_entries(folder)
    size = sum(p.stat().st_size for p in entries)
    if action == "show":
        print(f"cache: {folder} ({len(entries)} entries, {size / 1e6:.1f} MB); set ${CACHE_ENV} to move it, "
              "`fedfusion cache clear` to empty it")  # fmt: skip
        return 0
    for path in entries:
        path.unlink(missing_ok=True)
    print(f"cleared {len(entries)} entries ({size / 1e6:.1f} MB) from {folder}")
    return 0

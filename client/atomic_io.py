"""Atomic file writes: write a temporary file beside the target, then rename it over the
target, so a crash never leaves a half-written manifest, checkpoint, cache or report."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_open", "atomic_write_text"]


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, fsync: bool = False, newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file in ``path``'s folder; on a clean exit it replaces ``path``.

    Args:
        path: the file to write.
        mode: ``"w"`` (UTF-8 text) or ``"wb"``.
        fsync: flush to disk before the rename (checkpoints, ledgers).
        newline: passed to ``open`` in text mode (``""`` for CSV writers).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only, with mode 'w' or 'wb'; got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    text = {"encoding": "utf-8", "newline": newline} if mode == "w" else {}
    try:
        with os.fdopen(handle, mode, **text) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)

"""A site's privacy ledger: every DP-SGD release it ever made, on its own disk.

``<ledger_dir>/<site>/ledger.jsonl`` holds one JSON line per release (one round of DP-SGD
whose result left the site): run id, round, local steps, sample rate, noise multiplier,
delta, accountant and the site's epsilon after the release. The accountant's history is
rebuilt from these lines, so epsilon composes over the whole history: a new round, a killed
and restarted site process, or a second run against the same ledger never resets it.

The file is rewritten whole for every release (temporary file, fsync, rename, then an fsync
of the folder), so a crash leaves the old ledger or the new one, never half a line. A ledger
that does not parse (a corrupted line, a truncated last line, an empty file) is refused with
its file and line; it is never reset, because a reset would silently give the budget back.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from client.atomic_io import atomic_open

__all__ = ["LEDGER_FILE", "LedgerEntry", "LedgerError", "PrivacyLedger", "epsilon_of", "merged_history"]

LEDGER_FILE = "ledger.jsonl"
_LOCK_FILE = ".ledger.lock"
_SCHEMA_VERSION = 1

# (noise multiplier, sample rate, steps): Opacus' accountant history format.
History = list[tuple[float, float, int]]


class LedgerError(ValueError):
    """A ledger that cannot be trusted: the message names the file, the line and the fix."""


@dataclass(frozen=True)
class LedgerEntry:
    """One release: a round of DP-SGD at one site whose result left the site.

    Args:
        run_id: the run that asked for the round (Flower's run id, or ``baseline-<name>``).
        round: the server round.
        release: ``round`` (the weights a round sends) or ``finetune`` (the personal model
            whose test figures the final evaluation sends).
        site: the site's name.
        steps: DP-SGD steps (Poisson-sampled batches) of the round.
        sample_rate: Poisson sampling rate q of every step.
        noise_multiplier: sigma of every step.
        max_grad_norm: per-sample clipping bound C.
        delta: the delta ``epsilon`` is stated at.
        accountant: ``rdp`` or ``prv``, the accountant ``epsilon`` comes from.
        epsilon: the site's epsilon after this release, over its whole ledger.
        grad_sample_mode: the Opacus per-sample-gradient mode that ran.
        recorded_at: UTC time of the record, ISO 8601.
        schema_version: the line's format.
    """

    run_id: str
    round: int
    release: str
    site: str
    steps: int
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant: str
    epsilon: float
    grad_sample_mode: str
    recorded_at: str
    schema_version: int = _SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "ledger entry") -> "LedgerEntry":
        """Check and build one entry; a missing key, an unknown key, the wrong kind of value
        or another schema version is an error naming ``where`` and the key."""
        if not isinstance(data, dict):
            raise LedgerError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("schema_version") != _SCHEMA_VERSION:
            raise LedgerError(f"{where}: schema_version {data.get('schema_version')!r}, expected {_SCHEMA_VERSION}")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise LedgerError(f"{where}: missing keys {missing}")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise LedgerError(f"{where}: unknown keys {unknown}")
        kinds = {"run_id": str, "release": str, "site": str, "accountant": str, "grad_sample_mode": str, "recorded_at": str,
                 "round": int, "steps": int, "schema_version": int}  # fmt: skip
        for name in names:
            value, kind = data[name], kinds.get(name, float)
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok:
                raise LedgerError(f"{where}: {name} must be {'a finite number' if kind is float else kind.__name__}, "
                                  f"got {value!r}")  # fmt: skip
        if data["steps"] < 0 or not 0 < data["sample_rate"] <= 1 or data["noise_multiplier"] <= 0:
            raise LedgerError(f"{where}: steps >= 0, sample_rate in (0, 1] and noise_multiplier > 0 expected; got "
                              f"{data['steps']}, {data['sample_rate']}, {data['noise_multiplier']}")  # fmt: skip
        return cls(**{n: float(data[n]) if kinds.get(n, float) is float else data[n] for n in names})


def merged_history(history: History) -> History:
    """``history`` with consecutive entries of equal (sigma, q) merged, as Opacus' accountant
    merges its own steps; the epsilon is the same, the accountant's work smaller."""
    merged: History = []
    for sigma, q, steps in history:
        if merged and merged[-1][:2] == (sigma, q):
            merged[-1] = (sigma, q, merged[-1][2] + steps)
        elif steps > 0:
            merged.append((sigma, q, steps))
    return merged


def epsilon_of(history: History, *, accountant: str, delta: float) -> float:
    """Epsilon at ``delta`` of the DP-SGD steps in ``history``, from Opacus' ``accountant``."""
    if not history:
        return 0.0
    from opacus.accountants import create_accountant  # here: ~0.8 s of import a run without DP skips

    engine = create_accountant(accountant)
    engine.history = merged_history(history)
    return float(engine.get_epsilon(delta=delta))


class PrivacyLedger:
    """The releases of one site, read from and appended to ``<ledger_dir>/<site>/ledger.jsonl``.

    Open it with :meth:`open` (which refuses a ledger it cannot parse), hold :meth:`lock`
    while a round trains, and :meth:`append` the release before the reply leaves the site.

    Args:
        path: the ledger file.
        site: the site it belongs to.
        entries: what the file holds.
    """

    def __init__(self, path: Path, site: str, entries: list[LedgerEntry]) -> None:
        self.path = Path(path)
        self.site = site
        self._entries = list(entries)

    @classmethod
    def open(cls, ledger_dir: str | Path, site: str) -> "PrivacyLedger":
        """The ledger of ``site`` under ``ledger_dir`` (empty when it has none yet)."""
        path = Path(ledger_dir) / site / LEDGER_FILE
        return cls(path, site, read_ledger(path, site=site))

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    def history(self) -> History:
        """The accountant history of every release so far, as (sigma, q, steps) tuples."""
        return merged_history([(e.noise_multiplier, e.sample_rate, e.steps) for e in self._entries])

    def epsilon(self, *, accountant: str, delta: float, extra: History = ()) -> float:
        """Epsilon of the whole ledger at ``delta``, plus the steps in ``extra`` if given."""
        return epsilon_of([*self.history(), *extra], accountant=accountant, delta=delta)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the site's ledger lock: two processes of one site cannot both check the
        budget, train and append (each would spend what the other thinks is left)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / _LOCK_FILE, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                on_disk = read_ledger(self.path, site=self.site)
                if on_disk != self._entries:  # another process released since we read it
                    self._entries = on_disk
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(self, entry: LedgerEntry) -> None:
        """Add one release: the file is rewritten atomically and fsynced, folder included."""
        if entry.site != self.site:
            raise LedgerError(f"{self.path}: entry for site {entry.site!r} in the ledger of {self.site!r}")
        lines = [json.dumps(e.to_dict(), sort_keys=True) for e in [*self._entries, entry]]
        with atomic_open(self.path, "w", fsync=True) as f:
            f.write("\n".join(lines) + "\n")
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a power cut
        finally:
            os.close(directory)
        self._entries.append(entry)


def read_ledger(path: Path, *, site: str | None = None) -> list[LedgerEntry]:
    """Every entry of the ledger at ``path`` ([] when there is no file); refuses, naming the
    file and line, a ledger that is empty, truncated, corrupted or another site's."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    fix = ("restore it from a backup; never delete or edit a ledger to go on, that would give the spent "
           "budget back")  # fmt: skip
    if not raw:
        raise LedgerError(f"{path}: the ledger is empty (0 bytes) but a ledger is only created with a release; it "
                          f"was truncated: {fix}")  # fmt: skip
    if not raw.endswith(b"\n"):
        line = raw.count(b"\n") + 1
        raise LedgerError(f"{path}, line {line}: the last line is truncated (no newline at the end): {fix}")
    entries = []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").split("\n")[:-1], start=1):
        where = f"{path}, line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise LedgerError(f"{where}: not valid JSON ({error.msg} at column {error.colno}): {fix}") from None
        try:
            entry = LedgerEntry.from_dict(data, where=where)
        except LedgerError as error:
            raise LedgerError(f"{error}: {fix}") from None
        if site is not None and entry.site != site:
            raise LedgerError(f"{where}: a release of site {entry.site!r} in the ledger of site {site!r}: {fix}")
        entries.append(entry)
    return entries

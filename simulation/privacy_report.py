"""``fedfusion privacy report LEDGER_DIR``: every site's releases, with each epsilon
recomputed from the ledger's own records by Opacus' accountant, so anyone can check the
figure without trusting the run that wrote it.

A ledger folder holds ``<site>/ledger.jsonl`` per site (see :mod:`client.ledger`). For line
k the accountant's history is rebuilt from lines 1..k, (noise multiplier, sample rate,
steps) each, and its epsilon at that line's delta compared with the epsilon recorded.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from client.ledger import LEDGER_FILE, LedgerEntry, LedgerError, epsilon_of, read_ledger
from client.privacy import ledger_root
from client.settings import PrivacySettings
from server.central_accounting import CENTRAL_PRIVACY_FILE
from server.settings import CentralDPSettings

__all__ = ["SiteLedger", "read_ledgers", "recompute", "privacy_summary", "report_lines", "main", "run_privacy",
           "baseline_ledger_dir", "central_summary", "privacy_lines"]

_TOLERANCE = 1e-6  # relative: the same accountant on the same history gives the same figure


@dataclass(frozen=True)
class SiteLedger:
    """One site's releases and the epsilon recomputed after each."""

    site: str
    path: Path
    entries: list[LedgerEntry]
    recomputed: list[float]

    @property
    def mismatches(self) -> list[int]:
        """1-based lines whose recorded epsilon the accountant does not reproduce."""
        return [i + 1 for i, (e, r) in enumerate(zip(self.entries, self.recomputed))
                if not math.isclose(e.epsilon, r, rel_tol=_TOLERANCE, abs_tol=1e-9)]  # fmt: skip


def recompute(entries: list[LedgerEntry]) -> list[float]:
    """Epsilon after each release, from the releases up to it, at its accountant and delta."""
    history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in entries]
    return [epsilon_of(history[: k + 1], accountant=e.accountant, delta=e.delta) for k, e in enumerate(entries)]


def read_ledgers(ledger_dir: str | Path) -> list[SiteLedger]:
    """Every ``<site>/ledger.jsonl`` under ``ledger_dir``, checked and recomputed."""
    root = Path(ledger_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such ledger folder (expected <folder>/<site>/{LEDGER_FILE})")
    found = []
    for path in sorted(root.glob(f"*/{LEDGER_FILE}")):
        entries = read_ledger(path, site=path.parent.name)
        found.append(SiteLedger(site=path.parent.name, path=path, entries=entries, recomputed=recompute(entries)))
    return found


def privacy_summary(ledger_dir: str | Path) -> dict[str, Any]:
    """Per site: releases, the last round trained, sigma, q, delta, accountant, mode and the
    final epsilon (recorded and recomputed); ``{}`` when there is no ledger folder."""
    if not Path(ledger_dir).is_dir():
        return {}
    out = {}
    for ledger in read_ledgers(ledger_dir):
        if not ledger.entries:
            continue
        last = ledger.entries[-1]
        rounds = [e.round for e in ledger.entries if e.release == "round"]
        out[ledger.site] = {
            "releases": len(ledger.entries), "last_round": max(rounds) if rounds else None,
            "rounds_trained": len(rounds), "epsilon": last.epsilon, "epsilon_recomputed": ledger.recomputed[-1],
            "delta": last.delta, "noise_multiplier": last.noise_multiplier, "sample_rate": last.sample_rate,
            "max_grad_norm": last.max_grad_norm, "accountant": last.accountant,
            "grad_sample_mode": last.grad_sample_mode, "runs": sorted({e.run_id for e in ledger.entries}),
            "mismatches": ledger.mismatches, "ledger": str(ledger.path),
        }  # fmt: skip
    return out


def report_lines(ledger_dir: str | Path) -> tuple[list[str], bool]:
    """The report as text lines, and whether every recorded epsilon was reproduced."""
    ledgers = read_ledgers(ledger_dir)
    if not ledgers:
        return [f"{ledger_dir}: no <site>/{LEDGER_FILE} found"], False
    lines, ok = [], True
    header = (f"{'line':>4}  {'run':<20} {'round':>5} {'release':<8} {'steps':>5} {'q':>8} {'sigma':>8} {'C':>6} "
              f"{'delta':>9} {'acct':<4} {'mode':<9} {'epsilon':>9} {'recomputed':>10}")  # fmt: skip
    for ledger in ledgers:
        lines += ["", f"site {ledger.site} ({ledger.path}): {len(ledger.entries)} releases", header]
        for k, (e, again) in enumerate(zip(ledger.entries, ledger.recomputed), start=1):
            flag = "" if k not in ledger.mismatches else "  MISMATCH"
            lines.append(f"{k:>4}  {e.run_id[:20]:<20} {e.round:>5} {e.release:<8} {e.steps:>5} {e.sample_rate:>8.4g} "
                         f"{e.noise_multiplier:>8.4g} {e.max_grad_norm:>6.3g} {e.delta:>9.3g} {e.accountant:<4} "
                         f"{e.grad_sample_mode:<9} {e.epsilon:>9.4f} {again:>10.4f}{flag}")  # fmt: skip
        if ledger.entries:
            last = ledger.entries[-1]
            verdict = "reproduced" if not ledger.mismatches else f"NOT reproduced on lines {ledger.mismatches}"
            lines.append(f"  epsilon {ledger.recomputed[-1]:.4f} at delta {last.delta:.3g} ({last.accountant}), "
                         f"{verdict}")  # fmt: skip
        ok = ok and not ledger.mismatches
    return lines, ok


USAGE = """usage: fedfusion privacy report LEDGER_DIR

Print every site's DP-SGD releases from LEDGER_DIR/<site>/ledger.jsonl and recompute each
epsilon from the records with Opacus' accountant. Exit status 1 if a recorded epsilon is not
reproduced, 2 if a ledger is missing, corrupted or truncated."""


def main(argv: list[str]) -> int:
    """``fedfusion privacy report LEDGER_DIR``; returns the exit status."""
    if len(argv) != 2 or argv[0] != "report":
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        lines, ok = report_lines(argv[1])
    except (LedgerError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if ok else 1


def run_privacy(settings: PrivacySettings, run_dir: Path, baselines: tuple[str, ...],
                central: CentralDPSettings | None = None) -> dict[str, Any]:
    """What a simulation records about DP: under DP-SGD the settings, and per method and site
    the final epsilon, delta, sigma, grad-sample mode and the last round trained, from the
    ledgers; under client-level DP (``central``) the server's record (:func:`central_summary`)."""
    if central is not None and central.enabled:
        return {"name": central.name, "central": central_summary(Path(run_dir) / "federated" / CENTRAL_PRIVACY_FILE)}
    if not settings.enabled:
        return {"name": "none"}
    out: dict[str, Any] = {"name": settings.name, "settings": asdict(settings),
                           "federated": privacy_summary(ledger_root(settings, state_dir=None, run_dir=str(run_dir)))}
    for name in baselines:
        out[name] = privacy_summary(baseline_ledger_dir(run_dir, name))
    return out


def central_summary(path: Path) -> dict[str, Any]:
    """The server's client-level DP record (``federated/central_privacy.json``, written by
    :mod:`server.central_accounting`): the mechanism, the final epsilon and the clipping per
    round; ``{}`` when the file is missing."""
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
        rounds = record["rounds"]
        out = {key: record[key] for key in ("noise_multiplier", "sample_rate", "delta", "epsilon")}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a client-level DP record ({error})") from error
    settings = record.get("settings") or {}
    out.update(
        rounds=len(rounds), target_epsilon=settings.get("target_epsilon"), clipping=settings.get("clipping", "fixed"),
        initial_clipping_norm=settings.get("initial_clipping_norm"),
        final_clipping_norm=rounds[-1]["next_clipping_norm"] if rounds else None,
        updates_aggregated=sum(int(r["aggregated"]) for r in rounds), updates_clipped=sum(int(r["clipped"]) for r in rounds),
        file=str(path),
    )  # fmt: skip
    return out


def baseline_ledger_dir(run_dir: Path, name: str) -> Path:
    """The ledgers of a DP baseline (``pooled``, ``local``): always inside the run folder,
    so an alternative world never spends a real site's lasting budget."""
    return Path(run_dir) / "privacy_baselines" / name


def privacy_lines(privacy: dict[str, Any], rounds: int) -> list[str]:
    """Markdown lines: per method and site, epsilon (delta), sigma, mode, and when it stopped;
    under client-level DP the server's epsilon and its mechanism."""
    if privacy.get("name", "none") == "none":
        return []
    if "central" in privacy:
        return _central_lines(privacy["central"])
    settings = privacy["settings"]
    how = (f"target epsilon {settings['target_epsilon']:g} for the planned run" if settings.get("target_epsilon")
           else f"fixed sigma {settings['noise_multiplier']:g}")  # fmt: skip
    budget = settings["budget"] if settings.get("budget") is not None else settings.get("target_epsilon")
    lines = [(f"DP-SGD (Opacus) at every site and in every baseline: {how}, C = {settings['max_grad_norm']:g}, "
              f"{settings['accountant']} accountant, grad-sample mode {settings['grad_sample_mode']}, lifetime "
              f"budget {budget}."), "",
             "| method | site | epsilon | delta | sigma | q | grad-sample mode | rounds trained | stopped early |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for method, sites in privacy.items():
        if method in ("name", "settings"):
            continue
        for site, row in sites.items():
            last = row.get("last_round")
            stopped = "no" if last is not None and last >= rounds else f"last trained in round {last}"
            lines.append(f"| {method} | {site} | {row['epsilon']:.3f} | {row['delta']:.2g} | {row['noise_multiplier']:.3g} "
                         f"| {row['sample_rate']:.3g} | {row['grad_sample_mode']} | {row['rounds_trained']} | {stopped} |")  # fmt: skip
    lines.append("")
    lines.append("Epsilon covers the weights each site sends (sample-level, its training split); not the feature "
                 "statistics sent before round 1, the sample counts, nor figures on validation and test rows. "
                 "Check it: `fedfusion privacy report <ledger folder>`.")  # fmt: skip
    return lines


def _central_lines(central: dict[str, Any]) -> list[str]:
    if not central:
        return ["Client-level DP at the server (privacy=central_dp): no record was written "
                f"(federated/{CENTRAL_PRIVACY_FILE} is missing), so no epsilon can be stated."]  # fmt: skip
    epsilon = "infinite" if central["epsilon"] is None else f"{central['epsilon']:.3f}"
    target = f" (sized for a target of {central['target_epsilon']:g})" if central.get("target_epsilon") else ""
    clipping = (f"fixed clipping at C = {central['initial_clipping_norm']:g}" if central["clipping"] == "fixed" else
                f"adaptive clipping, C from {central['initial_clipping_norm']:g} to {central['final_clipping_norm']:.4g}")
    return [f"Client-level DP at the server (privacy=central_dp): epsilon **{epsilon}** at delta "
            f"{central['delta']:.2g} after {central['rounds']} rounds{target}, Opacus' RDP accountant, noise "
            f"multiplier {central['noise_multiplier']:.4g}, site sample rate {central['sample_rate']:g}, {clipping}; "
            f"{central['updates_clipped']} of {central['updates_aggregated']} site updates were clipped.", "",
            "The unit of privacy is a whole site (all its records, every round); the server sees each raw update. "
            f"Per round: `{Path(central['file']).parent.name}/{Path(central['file']).name}`."]  # fmt: skip

"""Figures that survive a second seed: means and spreads over repeats, and paired
comparisons of methods within each repeat (same split, same initialisation)."""

from __future__ import annotations

import numpy as np

from simulation.run_summary import MethodSpread, PairedComparison, RunSummary, SiteWins, Spread

__all__ = ["aggregate_repeats", "paired_comparison", "repeats_markdown"]


def _stats(values: list[float]) -> Spread:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return Spread(mean=float("nan"), std=float("nan"), n=0)
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")
    return Spread(mean=float(np.mean(finite)), std=std, n=len(finite))


def aggregate_repeats(summaries: list[RunSummary]) -> dict[str, MethodSpread]:
    """Per method: mean and std over repeats of each site-mean metric, and of each site's headline."""
    out: dict[str, MethodSpread] = {}
    first = list(summaries[0].methods)
    methods = sorted({m for s in summaries for m in s.methods}, key=lambda m: first.index(m) if m in first else 99)
    headline = summaries[0].headline
    for method in methods:
        runs = [s.methods[method] for s in summaries if method in s.methods]
        metrics = sorted({k for r in runs for k in r.site_mean})
        sites = sorted({site for r in runs for site in r.per_site})
        out[method] = MethodSpread(
            site_mean={m: _stats([r.mean(m) for r in runs]) for m in metrics},
            site_mean_all={m: _stats([r.site_mean_all.get(m, float("nan")) for r in runs]) for m in metrics},
            per_site={site: _stats([r.per_site[site].value(headline) for r in runs if site in r.per_site])
                      for site in sites},  # fmt: skip
            readable={site: all(r.per_site[site].readable for r in runs if site in r.per_site) for site in sites},
        )
    return out


def paired_comparison(summaries: list[RunSummary], first: str, second: str) -> PairedComparison:
    """``first`` against ``second`` on the headline, repeat by repeat.

    Returns the per-repeat differences of the site mean with their mean and std, and per
    site how many repeats each method won (ties counted apart).
    """
    headline = summaries[0].headline
    sign = 1.0 if summaries[0].higher_is_better else -1.0
    diffs: list[float] = []
    sites: dict[str, dict[str, int | bool]] = {}
    for s in summaries:
        a, b = s.methods.get(first), s.methods.get(second)
        if a is None or b is None:
            continue
        diffs.append(a.mean(headline) - b.mean(headline))
        for site in a.per_site:
            if site not in b.per_site:
                continue
            x, y = a.per_site[site].value(headline), b.per_site[site].value(headline)
            wins = sites.setdefault(site, {"first": 0, "second": 0, "ties": 0, "readable": True})
            wins["readable"] = wins["readable"] and a.per_site[site].readable
            if not (np.isfinite(x) and np.isfinite(y)) or x == y:
                wins["ties"] += 1
            else:
                wins["first" if sign * (x - y) > 0 else "second"] += 1
    spread = _stats(diffs)
    return PairedComparison(first=first, second=second, metric=headline, differences=diffs, mean=spread.mean,
                            std=spread.std, n=spread.n,
                            per_site={s: SiteWins(**w) for s, w in sites.items()})  # fmt: skip


def _fmt(stats: Spread | None) -> str:
    if stats is None or not stats.n:
        return "n/a"
    return f"{stats.mean:.3f}" + (f" ± {stats.std:.3f}" if np.isfinite(stats.std) else "")


def repeats_markdown(aggregate: dict[str, MethodSpread], paired: list[PairedComparison], headline: str, repeats: int
                     ) -> list[str]:
    """Markdown tables: each method's site mean ± std over repeats, per-site means, paired wins."""
    lines: list[str] = []
    if aggregate:
        sites = sorted({site for a in aggregate.values() for site in a.per_site})
        flag = {site: any(not a.readable.get(site, True) for a in aggregate.values()) for site in sites}
        header = ["method", f"mean over readable sites ({repeats} repeats)", "mean over all sites"]
        header += [f"{s}{' †' if flag[s] else ''}" for s in sites]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, a in aggregate.items():
            cells = [method, f"**{_fmt(a.site_mean.get(headline))}**", _fmt(a.site_mean_all.get(headline))]
            cells += [_fmt(a.per_site.get(s)) for s in sites]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Values are {headline}, mean ± std over repeats. † flagged: too few test positives to read "
                  "in at least one repeat (shown, not in the mean).", ""]
    if paired:
        lines += ["| comparison | Δ site mean (mean ± std) | per site: wins / losses / ties or n/a |", "|---|---|---|"]
        for p in paired:
            wins = "; ".join(f"{site}{' †' if not w.readable else ''} {w.first}/{w.second}/{w.ties}"
                             for site, w in sorted(p.per_site.items()))  # fmt: skip
            lines.append(f"| {p.first} − {p.second} | {_fmt(Spread(p.mean, p.std, p.n))} | {wins} |")
        lines.append("")
    return lines

"""``fedfusion sweep``: a Hydra multirun of ``fedfusion simulate``, gathered into one table and
two plots: utility against epsilon and membership-inference success against epsilon, the
swept methods side by side.

``fedfusion sweep privacy.target_epsilon=inf,10,5,1 fusion=concat,gmu,hyperfusion attack=loss``
runs every combination through :func:`simulation.run.simulate` (each in its own folder of
the Hydra sweep folder) and writes ``sweep.csv``, ``sweep.md`` and ``plots/`` there.

- ``privacy.target_epsilon=inf`` is **no DP**: that job runs with ``privacy=none`` (its other
  ``privacy.*`` overrides dropped), since DP-SGD at epsilon infinity is plain SGD and
  ``privacy=dp`` refuses an infinite target. It keeps the DP jobs' ``train.lr``,
  ``train.batch_size`` and ``personalization.epochs`` (``privacy=dp`` brings its own
  defaults), so only the mechanism changes. The table says so in its ``privacy`` column.
- Sweeping ``privacy.*`` keys without ``privacy=`` adds ``privacy=dp``; without ``attack=``
  the sweep adds ``attack=loss`` (a sweep measures leakage; ``attack=none`` opts out).
- A job that fails is a row marked failed (its folder keeps ``FAILED.txt``); the others go on.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only

import matplotlib.pyplot as plt
import yaml

from client.atomic_io import atomic_open, atomic_write_text
from simulation.plots import metric_label, save_figure
from simulation.run_summary import RepeatsSummary, RunSummary

__all__ = ["SweepRow", "collect", "job_overrides", "main", "plot_attack", "plot_utility", "prepare_overrides",
           "write_sweep"]  # fmt: skip

NO_DP = "none (no DP: epsilon = inf)"
FAILED_FILE = "FAILED.txt"
_INPUT_ERRORS = (ValueError, KeyError, FileNotFoundError, RuntimeError)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def prepare_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """The command's overrides with what a privacy sweep implies; returns (overrides, notes)."""
    keys = {_key(a) for a in args if "=" in a and not a.startswith("-")}
    out, notes = list(args), []
    if "privacy" not in keys and any(k.startswith("privacy.") for k in keys):
        out.insert(0, "privacy=dp")
        notes.append("privacy=dp added: the sweep sets privacy.* keys (epsilon = inf runs privacy=none)")
    if "attack" not in keys:
        out.append("attack=loss")
        notes.append("attack=loss added: a sweep measures membership leakage (attack=none skips it, attack=lira "
                     "runs LiRA)")  # fmt: skip
    return out, notes


def job_overrides(overrides: list[str], target_epsilon: Any, keep: dict[str, Any] | None = None) -> list[str]:
    """One job's overrides; a job at ``privacy.target_epsilon=inf`` becomes ``privacy=none``
    with each ``keep`` key at its value: what the DP jobs train with where ``privacy=dp`` sets
    its own default (``train.lr``, ``train.batch_size``, ``personalization.epochs``), so that
    along the sweep only the privacy mechanism changes."""
    if not (isinstance(target_epsilon, (int, float)) and math.isinf(target_epsilon) and target_epsilon > 0):
        return list(overrides)
    kept = [o for o in overrides if _key(o) != "privacy" and not _key(o).startswith("privacy.")]
    for key, value in (keep or {}).items():
        kept = [o for o in kept if _key(o) != key] + [f"{key}={value!r}"]
    return [*kept, "privacy=none"]


def _dp_defaults(cfg: Any) -> dict[str, Any]:
    """The values ``privacy=dp`` gives its own defaults to, as this job's ``DictConfig`` resolved them."""
    from omegaconf import OmegaConf

    keep = {"train.lr": cfg.train.lr, "train.batch_size": cfg.train.batch_size}
    epochs = OmegaConf.select(cfg, "personalization.epochs")
    if epochs is not None and cfg.personalization.name == "finetune":
        keep["personalization.epochs"] = epochs
    return keep


@dataclass(frozen=True)
class SweepRow:
    """One job of the sweep: what it ran and what it measured (means over its repeats).

    Args:
        job: Hydra's job number.
        method: the swept non-privacy overrides (``fusion=gmu``), the plots' series.
        epsilon: the target epsilon (``inf`` without DP; the largest spent when sigma was fixed).
        privacy: what ran: ``dp`` or :data:`NO_DP`.
        epsilon_spent: the largest epsilon a site's ledger reached (nan without DP).
        headline: the utility metric (``auroc``, ``rmse``, ...).
        federated: mean over readable sites of the global model's headline.
        federated_std: its std over repeats (nan for one repeat).
        personalized: the same for the personalised models (nan without).
        pooled_test: the global model's headline on every site's test rows pooled (inflated by site mix).
        attack: the attack (``none``: not measured).
        attack_auc: membership-inference AUC pooled over sites (0.5: chance).
        attack_auc_std: its std over repeats.
        tpr_at_1pct_fpr: pooled TPR at 1% FPR (None: not resolvable, see ``notes``).
        tpr_at_0_1pct_fpr: pooled TPR at 0.1% FPR (None: not resolvable, see ``notes``).
        repeats: repeats behind the means.
        status: ``ok`` or ``failed: <why>``.
        run_dir: the job's folder.
        notes: why a figure is None.
    """

    job: int
    method: str
    epsilon: float
    privacy: str
    epsilon_spent: float
    headline: str
    federated: float
    federated_std: float
    personalized: float
    pooled_test: float
    attack: str
    attack_auc: float
    attack_auc_std: float
    tpr_at_1pct_fpr: float | None
    tpr_at_0_1pct_fpr: float | None
    repeats: int
    status: str
    run_dir: str
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean_std(values: list[float | None]) -> tuple[float, float]:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else math.nan
    return mean, std


def _site_mean(run: RunSummary, method: str) -> float:
    return run.methods[method].mean(run.headline) if method in run.methods else math.nan


def _figures(job: int, method: str, run_dir: Path, config: dict, runs: list[RunSummary]) -> SweepRow:
    privacy = config.get("privacy") or {}
    ledgers = [run.privacy_sites.get("federated") or {} for run in runs]
    spent = [float(row["epsilon"]) for sites in ledgers for row in sites.values()]
    epsilon_spent = max(spent) if spent else math.nan
    if privacy.get("name", "none") == "none":
        epsilon, what = math.inf, NO_DP
    else:
        target = privacy.get("target_epsilon")
        epsilon, what = (float(target) if target is not None else epsilon_spent), str(privacy["name"])
    attacked = [run.attacks for run in runs if run.attacks]
    pooled = [a["pooled"] for a in attacked if a.get("pooled")]
    auc, auc_std = _mean_std([p["auc"] for p in pooled])
    tprs, notes = {}, []
    for name in ("tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"):
        values = [p[name] for p in pooled]
        tprs[name] = _mean_std(values)[0] if values and all(v is not None for v in values) else None
        notes += sorted({p["unresolved"][name] for p in pooled if name in p.get("unresolved", {})})
    federated, federated_std = _mean_std([_site_mean(r, "federated") for r in runs])
    pooled_test = _mean_std([r.methods["federated"].pooled(r.headline) for r in runs if "federated" in r.methods])[0]
    return SweepRow(job=job, method=method, epsilon=epsilon, privacy=what, epsilon_spent=epsilon_spent,
                    headline=runs[0].headline, federated=federated, federated_std=federated_std,
                    personalized=_mean_std([_site_mean(r, "personalized") for r in runs])[0], pooled_test=pooled_test,
                    attack=attacked[0]["attack"] if attacked else "none", attack_auc=auc, attack_auc_std=auc_std,
                    repeats=len(runs), status="ok", run_dir=str(run_dir), notes="; ".join(notes), **tprs)  # fmt: skip


def _failed(job: int, method: str, run_dir: Path, why: str) -> SweepRow:
    nan = math.nan
    return SweepRow(job=job, method=method, epsilon=nan, privacy="?", epsilon_spent=nan, headline="", federated=nan,
                    federated_std=nan, personalized=nan, pooled_test=nan, attack="", attack_auc=nan,
                    attack_auc_std=nan, tpr_at_1pct_fpr=None, tpr_at_0_1pct_fpr=None, repeats=0,
                    status=f"failed: {why}", run_dir=str(run_dir))  # fmt: skip


def _job_folders(sweep_dir: Path) -> list[tuple[int, Path, list[str]]]:
    found = []
    for overrides in Path(sweep_dir).glob("*/.hydra/overrides.yaml"):
        folder = overrides.parents[1]
        number = folder.name.split("_", 1)[0]
        if number.isdigit():
            found.append((int(number), folder, [str(o) for o in yaml.safe_load(overrides.read_text()) or []]))
    return sorted(found)


def collect(sweep_dir: str | Path) -> list[SweepRow]:
    """Every job folder of a Hydra sweep folder as a row, in job order."""
    jobs = _job_folders(Path(sweep_dir))
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir}: no job folders (<n>_<name>/.hydra/overrides.yaml) to collect")
    values: dict[str, set[str]] = {}
    for _, _, overrides in jobs:
        for o in overrides:
            values.setdefault(_key(o), set()).add(o.split("=", 1)[1] if "=" in o else "")
    swept = [k for k, v in values.items() if len(v) > 1 and k != "privacy" and not k.startswith("privacy.")]
    rows = []
    for number, folder, overrides in jobs:
        method = " ".join(o for o in overrides if _key(o) in swept) or "run"
        summary_path, failed = folder / "summary.json", folder / FAILED_FILE
        if failed.exists() or not summary_path.exists():
            why = failed.read_text().strip().splitlines()[0] if failed.exists() else "no summary.json (interrupted?)"
            rows.append(_failed(number, method, folder, why))
            continue
        summary = json.loads(summary_path.read_text())
        source = str(summary_path)
        runs = (RepeatsSummary.from_dict(summary, source=source).runs if RepeatsSummary.is_repeats(summary)
                else [RunSummary.from_dict(summary, source=source)])  # fmt: skip
        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        rows.append(_figures(number, method, folder, config, runs))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else ("" if math.isnan(value) else f"{value:.3f}")
    return str(value).replace("|", "\\|")


_TABLE = ["method", "epsilon", "privacy", "epsilon_spent", "federated", "personalized", "pooled_test", "attack",
          "attack_auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "repeats", "status"]  # fmt: skip


def _markdown(rows: list[SweepRow], sweep_dir: Path) -> str:
    ok = [r for r in rows if r.status == "ok"]
    headline = ok[0].headline if ok else "?"
    lines = [f"# Privacy sweep: {len(rows)} runs ({len(ok)} ok)", "",
             (f"- utility: `federated` is the final global model's {headline}, mean over the readable sites (each "
             f"site's test split); `personalized` the sites' own models; `pooled_test` over every site's test rows "
             f"pooled (inflated when sites' base rates differ)."),
             (f"- epsilon = inf is privacy=none ({NO_DP}); otherwise the target epsilon of privacy=dp for the whole "
             "planned run; `epsilon_spent` is the largest epsilon a site's ledger reached (delta: each run's report)."),
             ("- attack: membership inference on the final global model, pooled over sites (members: training rows; "
             "non-members: held-out rows, balanced). Simulation only: the attacker holds the sites' rows. AUC 0.5 is "
             "chance; a TPR is None when the non-members are too few to resolve its FPR."), "",
             "| " + " | ".join(_TABLE) + " |", "|" + "---|" * len(_TABLE)]  # fmt: skip
    for r in rows:
        lines.append("| " + " | ".join(_cell(getattr(r, c)) for c in _TABLE) + " |")
    notes = sorted({n for r in rows for n in r.notes.split("; ") if n})
    lines += ["", *(f"- None: {n}" for n in notes)]
    lines += ["", "![utility vs epsilon](plots/utility_vs_epsilon.png)", "",
              "![attack vs epsilon](plots/attack_vs_epsilon.png)", "", f"Runs: {sweep_dir}/<job>/report.md", ""]
    return "\n".join(lines)


def _epsilon_ticks(rows: list[SweepRow]) -> dict[float, int]:
    """Epsilon -> x position: the finite ones ascending, then inf (no DP) on the right."""
    finite = sorted({r.epsilon for r in rows if math.isfinite(r.epsilon)})
    order = finite + ([math.inf] if any(math.isinf(r.epsilon) for r in rows) else [])
    return {e: i for i, e in enumerate(order)}


def _draw(ax: plt.Axes, rows: list[SweepRow], value: str, spread: str | None, ylabel: str) -> bool:
    """One line per method over the epsilon positions; False when there was nothing to draw."""
    ticks = _epsilon_ticks(rows)
    drawn = False
    for i, method in enumerate(dict.fromkeys(r.method for r in rows)):
        points: dict[int, list[tuple[float, float]]] = {}
        for r in rows:
            y = getattr(r, value)
            if r.method == method and y is not None and math.isfinite(y) and not math.isnan(r.epsilon):
                points.setdefault(ticks[r.epsilon], []).append((y, getattr(r, spread) if spread else math.nan))
        if not points:
            continue
        xs = sorted(points)
        ys = [sum(y for y, _ in points[x]) / len(points[x]) for x in xs]
        errs = [points[x][0][1] if len(points[x]) == 1 and math.isfinite(points[x][0][1]) else 0.0 for x in xs]
        ax.errorbar(xs, ys, yerr=errs if any(errs) else None, marker="o", capsize=3, color=f"C{i % 10}", label=method)
        drawn = True
    labels = ["inf\n(no DP)" if math.isinf(e) else f"{e:g}" for e in ticks]
    ax.set_xticks(list(ticks.values()), labels)
    ax.set_xlabel("epsilon (privacy=dp target; inf: privacy=none)")
    ax.set_ylabel(ylabel)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no value to plot", ha="center", va="center", transform=ax.transAxes, color="grey")
    return drawn


def plot_utility(rows: list[SweepRow], out_dir: Path) -> Path:
    """``utility_vs_epsilon.png``: the global model's site-mean headline per method."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    headline = rows[0].headline if rows else "headline"
    _draw(ax, rows, "federated", "federated_std", f"{metric_label(headline)}, mean over sites")
    ax.set_title("Utility of the global model against privacy")
    return save_figure(fig, Path(out_dir) / "utility_vs_epsilon.png")


def plot_attack(rows: list[SweepRow], out_dir: Path) -> Path:
    """``attack_vs_epsilon.png``: membership-inference AUC and TPR at 1% FPR per method."""
    fig, (ax_auc, ax_tpr) = plt.subplots(1, 2, figsize=(12, 4))
    attacks = sorted({r.attack for r in rows if r.attack not in ("", "none")})
    what = f"attack {', '.join(attacks)}" if attacks else "no attack ran (attack=none)"
    if _draw(ax_auc, rows, "attack_auc", "attack_auc_std", "attack AUC, pooled over sites"):
        ax_auc.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax_auc.set_title(f"Membership inference ({what}); 0.5 = chance", fontsize=10)
    if not _draw(ax_tpr, rows, "tpr_at_1pct_fpr", None, "TPR at 1% FPR, pooled over sites"):
        ax_tpr.text(0.5, 0.35, "(None: under 100 non-members, or no attack)", ha="center", transform=ax_tpr.transAxes,
                    color="grey", fontsize=8)  # fmt: skip
    ax_tpr.set_title("True positives at 1% false positives", fontsize=10)
    return save_figure(fig, Path(out_dir) / "attack_vs_epsilon.png")


def write_sweep(sweep_dir: str | Path, rows: list[SweepRow]) -> list[Path]:
    """``sweep.csv``, ``sweep.md`` and ``plots/{utility,attack}_vs_epsilon.png`` in ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    names = [f.name for f in fields(SweepRow)]
    with atomic_open(sweep_dir / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in r.to_dict().items()})
    md = atomic_write_text(sweep_dir / "sweep.md", _markdown(rows, sweep_dir))
    ok = [r for r in rows if r.status == "ok"]
    return [sweep_dir / "sweep.csv", md, plot_utility(ok, sweep_dir / "plots"), plot_attack(ok, sweep_dir / "plots")]


def main(argv: list[str]) -> int:
    """``fedfusion sweep [overrides]``; returns the exit status (1 when a job failed)."""
    import hydra
    from omegaconf import DictConfig, OmegaConf
    from rich.console import Console

    from server.default_config import CONFIG_DIR

    console = Console(width=None if sys.stdout.isatty() else 160)
    overrides, notes = prepare_overrides(argv)
    for note in notes:
        console.print(f"[bold]sweep[/]: {note}", highlight=False)
    sweep_dirs: list[Path] = []

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
    def job(cfg: DictConfig) -> None:
        from hydra import compose
        from hydra.core.hydra_config import HydraConfig

        from simulation.config import SimulationConfig
        from simulation.run import simulate

        hydra_cfg = HydraConfig.get()
        sweep_dirs.append(Path(hydra_cfg.sweep.dir))
        run_dir = Path(hydra_cfg.runtime.output_dir)
        try:
            keep = _dp_defaults(cfg)
            mine = job_overrides(list(hydra_cfg.overrides.task), OmegaConf.select(cfg, "privacy.target_epsilon"),
                                 keep=keep)  # fmt: skip
            if mine != list(hydra_cfg.overrides.task):
                kept = ", ".join(f"{k}={v:g}" for k, v in keep.items())
                console.print(f"[bold]sweep[/]: job {hydra_cfg.job.num}: epsilon inf runs privacy=none at "
                              f"{kept}, as the DP jobs train")  # fmt: skip
                cfg = compose(config_name="config", overrides=mine)
            simulate(SimulationConfig.from_cfg(cfg, overrides=mine), run_dir, console)
        except _INPUT_ERRORS as error:  # one bad combination does not stop the others
            console.print(f"[bold red]error[/] (job {hydra_cfg.job.num}): {error}", highlight=False)
            atomic_write_text(run_dir / FAILED_FILE, f"{type(error).__name__}: {error}\n")

    saved = sys.argv
    sys.argv = ["fedfusion sweep", "--multirun", *overrides]
    try:
        job()
    finally:
        sys.argv = saved
    if not sweep_dirs:
        return 0
    rows = collect(sweep_dirs[0])
    written = write_sweep(sweep_dirs[0], rows)
    console.print(_markdown(rows, sweep_dirs[0]).split("\n![")[0], highlight=False, markup=False)
    console.print(f"sweep outputs: [bold]{sweep_dirs[0]}[/] ({', '.join(p.name for p in written)})")
    return 1 if any(r.status != "ok" for r in rows) else 0

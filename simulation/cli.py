"""The ``fedfusion`` command: ``fedfusion simulate [hydra overrides]``."""

from __future__ import annotations

import logging
import shutil
import signal
import sys
from pathlib import Path

from server.default_config import CONFIG_DIR

__all__ = ["main", "CONFIG_DIR"]

USAGE = """usage: fedfusion COMMAND [overrides]

commands:
  simulate   run a federated simulation (plus pooled and local-only baselines) on virtual
             sites carved from bundled public data or from your own manifests; writes
             outputs/<date-time>_<name>/ with config, metrics, plots, checkpoint and report.md
             examples:
               fedfusion simulate
               fedfusion simulate data=tcga_brca rounds=5
               fedfusion simulate data=manifests data.dir=/path/to/sites
               fedfusion simulate data=synthetic partition=dirichlet partition.alpha=0.3 num_sites=8
               fedfusion simulate --cfg job        (print the composed config and exit)
  sweep      a Hydra multirun of simulate gathered into one table (sweep.csv, sweep.md) and plots of
             utility and membership-inference success against epsilon, methods side by side:
               fedfusion sweep privacy.target_epsilon=inf,10,5,1 fusion=concat,gmu attack=loss
             (epsilon inf runs privacy=none; attack=loss unless attack= is given)
  privacy    `fedfusion privacy report LEDGER_DIR`: each site's DP-SGD releases, every
             epsilon recomputed from the ledger's records with Opacus' accountant
  cache      show the shared cache of decoded images and series ($FEDFUSION_CACHE, else
             ~/.cache/fedfusion); `fedfusion cache clear` empties it
  superlink  show (`status`) or stop (`stop`) the SuperLink that `flwr run . local` started
             for $FLWR_HOME and left running

Hydra options (e.g. hydra.run.dir=DIR, --multirun) work after the command.
"""


def _simulate_main() -> None:
    import hydra
    from omegaconf import DictConfig

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
    def simulate(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig
        from rich.console import Console

        from simulation.config import SimulationConfig
        from simulation.run import simulate as run_simulation

        logging.getLogger("flwr").setLevel(logging.WARNING)
        # A wide table when output goes to a file or pipe (rich would fold it to 80 columns).
        console = Console(width=None if sys.stdout.isatty() else 160)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        fresh = _holds_only_hydra_files(run_dir)
        try:
            config = SimulationConfig.from_cfg(cfg, overrides=list(HydraConfig.get().overrides.task))
            run_simulation(config, run_dir, console)
        except (ValueError, KeyError, FileNotFoundError, RuntimeError) as error:
            # Input problems (bad manifests, unknown names, missing files) are the user's to fix:
            # print them plainly, without a traceback.
            console.print(f"[bold red]error[/]: {error}", markup=True, highlight=False)
            console.print(_after_failure(run_dir, fresh, error), highlight=False)
            sys.exit(2)
        except BaseException as error:  # a bug or Ctrl-C: Hydra prints it; the folder still says so
            print(_after_failure(run_dir, fresh, error), file=sys.stderr)
            raise

    simulate()


def _holds_only_hydra_files(run_dir: Path) -> bool:
    """True when ``run_dir`` holds only what Hydra wrote before the run (``.hydra/``, its log)."""
    return all(p.name == ".hydra" or (p.is_file() and p.suffix == ".log") for p in run_dir.iterdir())


def _after_failure(run_dir: Path, fresh: bool, error: BaseException) -> str:
    """Leave no half-written run folder behind; returns the line that says what was done.

    A run that failed before the federation started (config or data errors) has nothing worth
    keeping: its folder is removed if this run created it. Once Flower ran, its logs explain the
    failure, so the folder stays, marked by ``FAILED.txt``; a folder that held other files
    before the run is never removed.
    """
    if fresh and not (run_dir / "logs").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        return f"nothing was run; the run folder {run_dir} was removed"
    text = f"this run failed: {type(error).__name__}: {error}\nlogs: {run_dir / 'logs'}\n"
    (run_dir / "FAILED.txt").write_text(text)
    return f"the run folder {run_dir} is kept for its logs and marked failed (FAILED.txt)"


def _exit_if_overrides_do_not_compose(args: list[str]) -> None:
    """Hydra's own composition errors, named like ours: ``error: ...`` and exit code 2.

    Runs only on plain overrides: with Hydra flags (``--multirun``, ``--cfg``) or sweep values
    Hydra's own handling stays in charge."""
    if any(a.startswith("-") for a in args):
        return
    from server.default_config import check_composes

    try:
        check_composes([a for a in args if not a.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))])
    except ValueError as error:
        print(f"error: {error}\nnothing was run", file=sys.stderr)
        sys.exit(2)


def _exit_on_sigterm() -> None:
    """End on SIGTERM (``kill``, a job scheduler) as on Ctrl-C, through every ``finally``: the
    SuperLink, the Ray head and ``flwr run`` are then stopped by their pids, not left running."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def main() -> None:
    """Entry point of the ``fedfusion`` console script."""
    _exit_on_sigterm()
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    if command == "simulate":
        from simulation.flower_runner import discard_prestarted, prestart_federation

        if not any(a.startswith("-") for a in rest):  # a run: not --cfg, --help or --multirun
            prestart_federation()  # before the config and the data, on the core they leave idle
        try:
            _exit_if_overrides_do_not_compose(rest)
            sys.argv = [f"fedfusion {command}", *rest]
            _simulate_main()
        finally:
            discard_prestarted()
        return
    if command == "sweep":
        from simulation.sweep import main as sweep_main

        sys.exit(sweep_main(rest))
    if command == "privacy":
        from simulation.privacy_report import main as privacy_main

        sys.exit(privacy_main(rest))
    if command == "cache":
        from simulation.cache import cache_command

        sys.exit(cache_command(rest))
    if command == "superlink":
        from simulation.local_superlink import superlink_command

        sys.exit(superlink_command(rest))
    print(f"fedfusion: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()

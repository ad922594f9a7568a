"""The ``fedfusion`` command: ``fedfusion simulate [hydra overrides]``."""

from __future__ import annotations

import logging
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
        try:
            run_simulation(SimulationConfig.from_cfg(cfg), run_dir, console)
        except (ValueError, KeyError, FileNotFoundError, RuntimeError) as error:
            # Input problems (bad manifests, unknown names, missing files) are the user's to fix:
            # print them plainly, without a traceback.
            console.print(f"[bold red]error[/]: {error}", markup=True, highlight=False)
            sys.exit(2)

    simulate()


def main() -> None:
    """Entry point of the ``fedfusion`` console script."""
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    if command == "simulate":
        sys.argv = [f"fedfusion {command}", *rest]
        _simulate_main()
        return
    print(f"fedfusion: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()

"""``attack=`` of the config, checked before any data loads: which membership attack runs
after the federation (see :mod:`simulation.attacks`) and with which options."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ATTACK_TASKS", "AttackSettings", "check_attack_task"]

#: Tasks with a per-sample loss, which every attack scores.
ATTACK_TASKS = ("binary", "multiclass", "regression")
_OPTION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "shadows": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 3, "an integer >= 3"),
    "mode": (lambda v: v in ("auto", "online", "offline"), "auto, online or offline"),
}


@dataclass(frozen=True)
class AttackSettings:
    """``attack=`` of the config: an attack's name (``none``: no attack) and its options."""

    name: str = "none"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> AttackSettings:
        """Check ``configs/attack/<name>.yaml`` (with overrides); errors name the key."""
        options = dict(section or {"name": "none"})
        name = str(options.pop("name", "none"))
        if name == "none":
            if options:
                raise ValueError(f"attack=none takes no options, got {sorted(options)}")
            return cls()
        from simulation.attacks import ATTACKS  # the attacks (torch) load only when one is asked for

        try:
            fn = ATTACKS.get(name)
        except KeyError as error:
            raise ValueError(f"attack={name}: {error.args[0]} (or none)") from None
        known = [p for p, v in inspect.signature(fn).parameters.items() if v.default is not inspect.Parameter.empty]
        problems = [f"attack.{k}: attack={name} has no such option (options: {', '.join(known) or 'none'})"
                    for k in options if k not in known]  # fmt: skip
        problems += [f"attack.{k} must be {_OPTION_CHECKS[k][1]}, got {v!r}" for k, v in options.items()
                     if k in known and k in _OPTION_CHECKS and not _OPTION_CHECKS[k][0](v)]  # fmt: skip
        if name == "lira" and options.get("mode") == "online" and isinstance(options.get("shadows"), int) \
                and options["shadows"] < 4:  # fmt: skip
            problems.append(f"attack.mode=online needs attack.shadows >= 4, got {options['shadows']}")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(name=name, options=options)


def check_attack_task(settings: AttackSettings, task: str) -> None:
    """Refuse, before the federation, an attack the task cannot support."""
    if settings.enabled and task not in ATTACK_TASKS:
        raise ValueError(f"attack={settings.name}: task {task} has no per-sample loss (the Cox partial "
                         f"likelihood couples the samples of a risk set); attacks support {list(ATTACK_TASKS)}; "
                         f"set attack=none")  # fmt: skip

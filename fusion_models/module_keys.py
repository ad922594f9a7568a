"""How the model's state-dict keys group into the modules that aggregate and travel apart:
one per modality encoder (``encoders.<modality>``) and the fusion head (``fusion``). Plain
string rules, so the server's strategies use them without loading torch."""

from __future__ import annotations

__all__ = ["module_of"]


def module_of(key: str) -> str:
    """Aggregation module of a state-dict key: ``encoders.<modality>`` or ``fusion``."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "encoders" else parts[0]

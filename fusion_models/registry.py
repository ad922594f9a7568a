"""A small name -> object registry shared by every extension point (encoders, fusion heads,
partitioners, datasets, strategies), in the manner of Opacus' accountant registry."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Maps names to objects; refuses duplicates and answers unknown names with suggestions.

    Args:
        kind: what the registry holds, used in error messages ("fusion head", "partitioner").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, force: bool = False) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; a second registration needs ``force``."""

        def decorator(obj: T) -> T:
            if name in self._items and not force:
                raise ValueError(f"{self.kind} {name!r} is already registered; pass force=True to replace it")
            self._items[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests use this in ``finally``)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``, or raise a KeyError listing the known names."""
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

"""One tiny registry type for codecs, datasets, tasks and metrics (timm's ``register_model`` idea).

A user adds an entry in one file with ``@REGISTRY.register("name")``; ``REGISTRY.get(name)`` looks
it up. A duplicate name raises at import time; an unknown name lists the known ones.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects (usually classes or factories) of one kind."""

    def __init__(self, kind: str, check: Callable[[str, T], None] | None = None) -> None:
        """``check(name, obj)`` raises ``ValueError`` for an entry whose declarations are wrong (at import)."""
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._check = check

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name raises ``ValueError``."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"duplicate {self.kind} name {name!r}: already registered as {self._entries[name]!r}")
        if self._check is not None:
            self._check(name, obj)
        self._entries[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def import_submodules(package_name: str, package_path: list[str]) -> None:
    """Import every module of a package so that their ``@register`` decorators run.

    Called from a registry package's ``__init__``: dropping a new file into the folder is all it
    takes to add an entry. A lookup needs no import of its package: importing ``package.base``
    (where the registry lives) runs the package's ``__init__`` first, which fills it.
    """
    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{package_name}.{info.name}")

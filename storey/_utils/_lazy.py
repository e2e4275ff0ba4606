"""Module-level lazy attributes (PEP 562), so that `import storey` stays light."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, mapping: dict[str, str]) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` resolving ``name`` from ``mapping[name]`` (a module path)."""

    def __getattr__(name: str) -> Any:
        target = mapping.get(name)
        if target is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        value = getattr(importlib.import_module(target), name)
        return value

    return __getattr__

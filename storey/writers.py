"""Compatibility module: the writers of the original storey (same objects as `storey.targets`)."""

from __future__ import annotations

from storey._utils._lazy import lazy_getattr
from storey.targets import _LAZY

__getattr__ = lazy_getattr(__name__, _LAZY)
__all__ = sorted(_LAZY)

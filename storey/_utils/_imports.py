"""Lazy imports of optional dependencies with an error that names the pip extra."""

from __future__ import annotations

import importlib
from types import ModuleType

_EXTRA = {
    "pandas": "pandas",
    "pyarrow": "parquet",
    "fsspec": "parquet",
    "aiohttp": "http",
    "v3io": "v3io",
    "v3io_frames": "tsdb",
    "redis": "redis",
    "numba": "fast",
    "dask": "dask",
    "distributed": "dask",
    "tqdm": "cli",
    "yaml": "cli",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise `ImportError` naming the storey extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRA.get(top, "all")
        msg = f"{module!r} is needed for this feature; install it with `pip install storey[{extra}]`"
        raise ImportError(msg) from exc

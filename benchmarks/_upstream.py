"""Run the upstream ``storey`` package from PyPI in its own virtualenv.

Upstream storey has the same import name as this project, so it can never live in the project's
``.venv``. This module creates (once, idempotently) a virtualenv under ``benchmarks/.upstream-venv/``
with the pinned upstream release and runs Python code there, returning the JSON that the code prints
as the last non-empty line of its standard output.

Usage::

    from benchmarks._upstream import run_upstream, upstream_flow_emit

    run_upstream("import json, storey; print(json.dumps(storey.__file__))")
    upstream_flow_emit(20_000)          # {'events': 20000, 'seconds': ..., 'events_per_s': ...}
    upstream_aggregate(events_path(1_000_000), 20_000)

From the command line: ``python -m benchmarks._upstream`` creates the venv (if needed) and prints
its description; ``python -m benchmarks._upstream --measure`` also runs the upstream measurements.

The measurement functions below (``upstream_*``) run the scripts in ``benchmarks/upstream_scripts/``;
they are meant to be called "in the same run" by ``bench_flow.py``, ``bench_aggregate.py`` and
``bench_frames.py``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
VENV_DIR = BENCH_DIR / ".upstream-venv"
SCRIPTS_DIR = BENCH_DIR / "upstream_scripts"
MARKER = VENV_DIR / "storey-upstream.json"

UPSTREAM_VERSION = "1.14.1"
# storey 1.14.1 declares numpy<1.27, pandas<2.4, pyarrow<24 and uses `packaging` without declaring it.
# These pins resolve for CPython 3.11 from this machine's indexes (see MARKER for the installed set).
REQUIREMENTS: tuple[str, ...] = (
    f"storey=={UPSTREAM_VERSION}",
    "packaging",
    "numpy>=1.26,<1.27",
    "pandas>=2.2,<2.4",
    "pyarrow>=15,<24",
)


class UpstreamError(RuntimeError):
    """The upstream venv could not be created or an upstream script failed."""


def _venv_python(venv: Path = VENV_DIR) -> Path:
    return venv / "bin" / "python"


def _base_python() -> str:
    """The interpreter used to create the venv: the base of the current one (Python 3.11 here)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_upstream_venv(*, force: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Create the upstream venv if it is missing or stale, and return its description.

    The description (also stored in ``.upstream-venv/storey-upstream.json``) holds the requirements,
    the installed versions of storey/numpy/pandas/pyarrow, the Python version and the install time in
    seconds. A file lock makes concurrent callers wait for one install.
    """
    VENV_DIR.parent.mkdir(parents=True, exist_ok=True)
    lock_path = BENCH_DIR / ".upstream-venv.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and MARKER.exists():
            info = json.loads(MARKER.read_text())
            if info.get("requirements") == list(REQUIREMENTS) and _venv_python().exists():
                return info
        return _install(verbose=verbose)


def _install(*, verbose: bool) -> dict[str, Any]:
    if VENV_DIR.exists():
        shutil.rmtree(VENV_DIR)
    out = None if verbose else subprocess.DEVNULL
    t0 = time.perf_counter()
    subprocess.run([_base_python(), "-m", "venv", str(VENV_DIR)], check=True, stdout=out)
    pip = [str(_venv_python()), "-m", "pip", "install", "--disable-pip-version-check"]
    proc = subprocess.run(
        [*pip, *REQUIREMENTS], stdout=out, stderr=None if verbose else subprocess.PIPE, text=True
    )
    if proc.returncode != 0:
        msg = f"pip install of upstream storey failed:\n{proc.stderr}"
        raise UpstreamError(msg)
    seconds = time.perf_counter() - t0
    probe = (
        "import json, sys, importlib.metadata as m, storey\n"
        "print(json.dumps({'python': sys.version.split()[0], 'storey_file': storey.__file__,"
        " 'versions': {p: m.version(p) for p in ('storey', 'numpy', 'pandas', 'pyarrow', 'packaging')}}))"
    )
    info = _run([str(_venv_python()), "-c", probe], timeout=120)
    info.update(requirements=list(REQUIREMENTS), install_seconds=round(seconds, 1), created=time.time())
    MARKER.write_text(json.dumps(info, indent=2))
    return info


def _clean_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONWARNINGS"] = env.get("PYTHONWARNINGS", "ignore")
    if extra:
        env.update(extra)
    return env


def _run(cmd: Sequence[str], *, timeout: float | None, env: Mapping[str, str] | None = None) -> Any:
    # cwd is a scratch directory so that `import storey` can never pick up this project's package.
    with tempfile.TemporaryDirectory(prefix="storey-upstream-") as cwd:
        proc = subprocess.run(
            list(cmd), cwd=cwd, env=_clean_env(env), capture_output=True, text=True, timeout=timeout
        )
    if proc.returncode != 0:
        msg = f"upstream command failed (exit {proc.returncode}): {cmd[1:3]}\n{proc.stderr[-4000:]}"
        raise UpstreamError(msg)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        msg = f"upstream command printed nothing; stderr:\n{proc.stderr[-4000:]}"
        raise UpstreamError(msg)
    return json.loads(lines[-1])


def run_upstream(
    code_or_path: str | Path,
    args: Sequence[str] = (),
    *,
    timeout: float | None = 3600,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Run a Python snippet or script file with upstream storey and return its JSON result.

    Parameters
    ----------
    code_or_path
        A `Path` (or a string naming an existing ``.py`` file) is run as a script; any other string is
        run with ``python -c``.
    args
        Command-line arguments for the script (``sys.argv[1:]``).
    timeout
        Seconds before the subprocess is killed.
    env
        Extra environment variables.

    Returns
    -------
    The JSON value printed as the last non-empty line of standard output.
    """
    ensure_upstream_venv()
    python = str(_venv_python())
    is_file = isinstance(code_or_path, Path) or (
        str(code_or_path).endswith(".py") and "\n" not in str(code_or_path) and Path(code_or_path).is_file()
    )
    if is_file:
        cmd = [python, str(Path(code_or_path).resolve()), *args]
    else:
        cmd = [python, "-c", str(code_or_path), *args]
    return _run(cmd, timeout=timeout, env=env)


def run_upstream_script(name: str, params: Mapping[str, Any], *, timeout: float | None = 3600) -> Any:
    """Run ``benchmarks/upstream_scripts/<name>.py`` with ``params`` passed as one JSON argument."""
    return run_upstream(SCRIPTS_DIR / f"{name}.py", [json.dumps(dict(params))], timeout=timeout)


# --- measurements: each returns {'events', 'seconds', 'events_per_s', ...} ---------------------------


def upstream_flow_emit(n_events: int = 20_000) -> dict[str, Any]:
    """``Source → Map → Filter → Reduce`` fed by ``controller.emit`` with ``n_events`` dict bodies."""
    return run_upstream_script("flow_emit", {"n": n_events})


def upstream_read_csv(path: str | Path, *, time_field: str | None = "time") -> dict[str, Any]:
    """``ReadCSV(path) → Reduce`` (counting rows) over a CSV written by ``_data.write_events``."""
    return run_upstream_script("read_reduce", {"kind": "csv", "path": str(path), "time_field": time_field})


def upstream_read_parquet(path: str | Path) -> dict[str, Any]:
    """``ParquetSource(path) → Reduce`` (counting rows) over a Parquet file."""
    return run_upstream_script("read_reduce", {"kind": "parquet", "path": str(path)})


def upstream_aggregate(
    path: str | Path, n_events: int | None = None, *, feed: str = "emit"
) -> dict[str, Any]:
    """The README ``AggregateByKey`` flow (in-memory ``Table('x', NoopDriver())``) over the first
    ``n_events`` rows of a workload Parquet file (``_data.events_path``).

    ``feed='emit'`` pushes the rows through ``controller.emit`` (the streaming path, bodies as dicts with
    datetime times); ``feed='source'`` uses upstream's ``DataframeSource``. The result adds ``features``
    (13) and ``us_per_event_per_feature``.
    """
    return run_upstream_script("aggregate", {"path": str(path), "n": n_events, "feed": feed})


def upstream_info() -> dict[str, Any]:
    """The venv description (creating the venv if needed)."""
    return ensure_upstream_venv()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="recreate the venv")
    parser.add_argument("--measure", action="store_true", help="run the upstream measurements")
    parser.add_argument("-n", type=int, default=50_000, help="events for the emit/aggregate paths")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the read paths")
    ns = parser.parse_args(argv)
    info = ensure_upstream_venv(force=ns.force, verbose=True)
    print(json.dumps(info, indent=2))
    if ns.measure:
        print(json.dumps(measure_all(n_events=ns.n, n_rows=ns.rows), indent=2))


def measure_all(*, n_events: int = 50_000, n_rows: int = 1_000_000) -> dict[str, dict[str, Any]]:
    """Every upstream measurement: emit path and README aggregation over ``n_events``, read paths over
    ``n_rows`` rows of the cached workload files (``_data.events_path``)."""
    from benchmarks._data import events_path

    parquet, csv = events_path(n_rows, "parquet"), events_path(n_rows, "csv")
    return {
        "flow_emit": upstream_flow_emit(n_events),
        "read_csv": upstream_read_csv(csv),
        "read_parquet": upstream_read_parquet(parquet),
        "aggregate_emit": upstream_aggregate(parquet, n_events),
        "aggregate_source": upstream_aggregate(parquet, n_events, feed="source"),
    }


if __name__ == "__main__":
    main()

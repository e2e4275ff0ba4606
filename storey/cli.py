"""The `storey` console script: ``storey backfill`` and ``storey demo`` (spec AGGREGATIONS.md §8.9).

Exit status: 0 on success, 1 on a storey error or bad input (one line on stderr), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from storey.errors import StoreyError

__all__ = ["DEMO_FEATURES", "load_feature_spec", "main"]

DEMO_FEATURES: dict[str, Any] = {
    "key": "key",
    "time_field": "time",
    "aggregates": [
        {"name": "number_of_clicks", "column": "click", "operations": ["count"],
         "windows": ["1h", "2h", "24h"], "period": "10m"},
        {"name": "purchases", "column": "purchase_amount", "operations": ["avg", "min", "max"],
         "windows": ["1h", "2h", "24h"], "period": "10m"},
        {"name": "failed_activities", "column": "activity_status", "operations": ["count"],
         "windows": ["1h"], "period": "10m",
         "aggregation_filter": {"field": "activity_status", "equals": "fail"}},
    ],
}  # fmt: skip
"""The features of the seed README example, as a feature file would write them."""


class UsageError(Exception):
    """A command-line usage error (exit status 2)."""


def _aggregates_from(items: Sequence[Any], where: str) -> list[Any]:
    from storey.aggregations.field import FieldAggregator, FieldEquals

    out: list[Any] = []
    for item in items:
        if isinstance(item, FieldAggregator):
            out.append(item)
            continue
        if not isinstance(item, dict):
            msg = f"{where}: each aggregate must be a mapping or a FieldAggregator, got {type(item).__name__}"
            raise UsageError(msg)
        d = dict(item)
        flt = d.get("aggregation_filter")
        if isinstance(flt, dict):
            if set(flt) != {"field", "equals"}:
                msg = f"{where}: aggregation_filter must be {{'field': ..., 'equals': ...}}, got {flt!r}"
                raise UsageError(msg)
            d["aggregation_filter"] = FieldEquals(flt["field"], flt["equals"])
        out.append(d)
    return out


def load_feature_spec(path: str | Path) -> dict[str, Any]:
    """Read a feature file: ``.json``, ``.yaml``/``.yml`` or ``.py``.

    Returns a dict with ``aggregates`` and, when given, ``key``, ``time_field`` and ``emit_policy``.
    """
    p = Path(path)
    if not p.exists():
        msg = f"feature file {str(p)!r} does not exist"
        raise UsageError(msg)
    suffix = p.suffix.lower()
    if suffix == ".json":
        doc = json.loads(p.read_text())
    elif suffix in (".yaml", ".yml"):
        from storey._utils._imports import require

        doc = require("yaml").safe_load(p.read_text())
    elif suffix == ".py":
        ns = runpy.run_path(str(p))
        doc = {k: ns[k] for k in ("aggregates", "key", "time_field", "emit_policy") if k in ns}
    else:
        msg = f"feature file {str(p)!r}: expected .json, .yaml, .yml or .py"
        raise UsageError(msg)
    if not isinstance(doc, dict) or "aggregates" not in doc:
        msg = f"feature file {str(p)!r} must define `aggregates`"
        raise UsageError(msg)
    spec = {k: doc[k] for k in ("key", "time_field", "emit_policy") if doc.get(k) is not None}
    spec["aggregates"] = _aggregates_from(doc["aggregates"], str(p))
    policy = spec.get("emit_policy")
    if isinstance(policy, dict):
        from storey.aggregations.emit import emit_policy_from_dict

        spec["emit_policy"] = emit_policy_from_dict(policy)
    return spec


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from storey._utils._imports import require

    tqdm = require("tqdm").tqdm
    return tqdm(unit=" rows", unit_scale=True, file=sys.stderr, desc="backfill", smoothing=0.1)


def _run_backfill(
    sources: Sequence[str],
    spec: dict[str, Any],
    output: str,
    batch_size: int,
    on_error: str,
    engine: str,
    progress: bool,
) -> dict[str, Any]:
    from storey import frames

    bar = _progress_bar(progress)
    start = time.perf_counter()
    try:
        metrics = frames.aggregate(
            list(sources) if len(sources) > 1 else sources[0],
            spec["aggregates"],
            key=spec["key"],
            time_field=spec["time_field"],
            emit_policy=spec.get("emit_policy"),
            batch_size=batch_size,
            on_error=on_error,
            output=output,
            engine=engine,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    rows_in = int(metrics.get("rows", 0))
    rows_out = int(metrics.get("rows_out", metrics.get("events", 0)))
    print(f"rows in:  {rows_in:,}")
    print(f"rows out: {rows_out:,} -> {output}")
    shown = {k: v for k, v in metrics.items() if k not in ("rows", "rows_out")}
    parts = (f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in shown.items())
    print("metrics:  " + ", ".join(parts))
    rate = rows_in / seconds if seconds > 0 else float("inf")
    print(f"wall:     {seconds:.2f} s ({rate:,.0f} rows/s)")
    return metrics


def _cmd_backfill(args: argparse.Namespace) -> int:
    spec = load_feature_spec(args.features)
    if args.key:
        spec["key"] = args.key[0] if len(args.key) == 1 else list(args.key)
    if args.time_field:
        spec["time_field"] = args.time_field
    for required in ("key", "time_field"):
        if required not in spec:
            msg = f"`{required}` must be given in the feature file or on the command line"
            raise UsageError(msg)
    _run_backfill(
        args.sources, spec, args.output, args.batch_size, args.on_error, args.engine, not args.no_progress
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from storey._demo import demo_events_path

    source = str(demo_events_path())
    spec = {**DEMO_FEATURES, "aggregates": _aggregates_from(DEMO_FEATURES["aggregates"], "demo")}
    print(f"storey demo: backfilling the seed README features over {source}")
    _run_backfill([source], spec, args.output, 65536, "raise", "local", not args.no_progress)
    import pyarrow.parquet as pq

    table = pq.read_table(args.output)
    print(_preview(table.slice(0, 5).to_pylist()))
    return 0


def _preview(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the first rows (no pandas needed)."""
    if not rows:
        return "(no rows)"
    names = list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        if hasattr(v, "isoformat"):
            return v.isoformat()
        return str(v)

    cells = [[cell(r.get(n)) for n in names] for r in rows]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    lines = ["  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storey", description="storey feature engineering")
    sub = parser.add_subparsers(dest="command", required=True)
    bf = sub.add_parser("backfill", help="compute windowed features over CSV/Parquet history")
    bf.add_argument("sources", nargs="+", metavar="SOURCE", help="CSV/Parquet paths or fsspec URLs")
    bf.add_argument("--features", required=True, metavar="SPEC", help="feature file (.json, .yaml or .py)")
    bf.add_argument("-o", "--output", required=True, help="output path or URL (.csv, .parquet, dir/)")
    bf.add_argument("--key", nargs="+", metavar="COL", help="key column(s)")
    bf.add_argument("--time-field", metavar="COL", help="time column")
    bf.add_argument("--batch-size", type=int, default=65536, metavar="N")
    bf.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    bf.add_argument("--engine", choices=["local", "dask"], default="local")
    bf.add_argument("--no-progress", action="store_true")
    bf.set_defaults(func=_cmd_backfill)
    demo = sub.add_parser("demo", help="backfill the README features over the bundled demo dataset")
    demo.add_argument("-o", "--output", default="storey-demo-features.parquet")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"storey: usage error: {exc}", file=sys.stderr)
        return 2
    except (StoreyError, ValueError, TypeError, KeyError, FileNotFoundError, ImportError) as exc:
        print(f"storey: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

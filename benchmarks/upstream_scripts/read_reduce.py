"""Upstream ``CSVSource → Reduce`` or ``ParquetSource → Reduce`` (counting rows).

Params: ``kind`` ('csv' | 'parquet'), ``path``, ``time_field`` (csv only; parsed as dates).
The time includes reading the file (upstream reads it whole with pandas in the source's init).
"""

from __future__ import annotations

from _common import Timer, emit_result, params, rate


def main() -> None:
    p = params()
    from storey import CSVSource, ParquetSource, Reduce, build_flow

    if p["kind"] == "csv":
        source = CSVSource(p["path"], header=True, key_field="key", time_field=p.get("time_field"))
    else:
        source = ParquetSource(p["path"], key_field="key")
    with Timer() as t:
        controller = build_flow([source, Reduce(0, lambda acc, _: acc + 1)]).run()
        rows = controller.await_termination()
    emit_result(rate(rows, t.seconds, path=f"{p['kind']} Reduce"))


if __name__ == "__main__":
    main()

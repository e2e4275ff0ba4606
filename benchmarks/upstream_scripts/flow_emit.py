"""Upstream ``SyncEmitSource → Map → Filter → Reduce`` driven by ``controller.emit``.

Params: ``n`` (events). Bodies are ``{'i': i, 'x': float(i)}``; Map doubles ``x``, Filter keeps even ``i``,
Reduce sums ``x``. The result is checked against plain Python.
"""

from __future__ import annotations

from _common import Timer, emit_result, params, rate


def main() -> None:
    p = params()
    n = int(p.get("n", 20_000))
    from storey import Filter, Map, Reduce, SyncEmitSource, build_flow

    bodies = [{"i": i, "x": float(i)} for i in range(n)]
    with Timer() as t:
        controller = build_flow(
            [
                SyncEmitSource(),
                Map(lambda b: {"i": b["i"], "x": b["x"] * 2.0}),
                Filter(lambda b: b["i"] % 2 == 0),
                Reduce(0.0, lambda acc, b: acc + b["x"]),
            ]
        ).run()
        for body in bodies:
            controller.emit(body)
        controller.terminate()
        total = controller.await_termination()
    expected = sum(2.0 * i for i in range(0, n, 2))
    if total != expected:
        raise SystemExit(f"wrong result {total} != {expected}")
    emit_result(rate(n, t.seconds, path="emit Map Filter Reduce"))


if __name__ == "__main__":
    main()

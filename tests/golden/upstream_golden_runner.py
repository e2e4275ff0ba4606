"""Runs inside the upstream-storey venv (``benchmarks/_upstream.py``); called by ``make_upstream_golden.py``.

Usage: ``python upstream_golden_runner.py CASES.json OUT.json``. For each case it runs
``SyncEmitSource → AggregateByKey(..., Table('golden', NoopDriver()), key_field='key', time_field='time')
→ Reduce`` with ``EmitEveryEvent`` and records, per input event, the emitted features (absent features are
left out). Prints a one-line JSON summary.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def build_aggregators(specs):
    from storey import FieldAggregator
    from storey.dtypes import FixedWindows, SlidingWindows

    out = []
    for spec in specs:
        w = spec["windows"]
        windows = (
            SlidingWindows(w["windows"], w["period"])
            if w["type"] == "sliding"
            else FixedWindows(w["windows"])
        )
        out.append(FieldAggregator(spec["name"], spec["field"], list(spec["aggr"]), windows))
    return out


def run_case(case):
    import storey
    from storey import AggregateByKey, NoopDriver, Reduce, SyncEmitSource, Table, build_flow

    assert sys.prefix in storey.__file__, storey.__file__
    feature_names = case["features"]
    step = AggregateByKey(
        build_aggregators(case["aggregators"]),
        Table("golden", NoopDriver()),
        key_field="key",
        time_field="time",
    )

    def collect(acc, body):
        acc.append({name: body[name] for name in feature_names if name in body})
        return acc

    controller = build_flow([SyncEmitSource(), step, Reduce([], collect)]).run()
    for event in case["events"]:
        body = dict(event)
        body["time"] = EPOCH + timedelta(microseconds=body.pop("time_ns") // 1000)
        controller.emit(body, key=body["key"])
    controller.terminate()
    return controller.await_termination()


def main() -> None:
    import storey

    cases = json.loads(open(sys.argv[1]).read())
    outputs = {case["name"]: run_case(case) for case in cases}
    with open(sys.argv[2], "w") as f:
        json.dump({"storey_version": storey.__version__, "outputs": outputs}, f)
    print(
        json.dumps({"storey_version": storey.__version__, "cases": {k: len(v) for k, v in outputs.items()}})
    )


if __name__ == "__main__":
    main()

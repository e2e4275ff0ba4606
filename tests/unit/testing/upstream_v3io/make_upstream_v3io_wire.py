"""Generate ``upstream_v3io_wire.json``: what upstream storey 1.14.1 sends to V3IO, and the state it leaves.

Run explicitly (it is not a test)::

    .venv/bin/python tests/unit/testing/upstream_v3io/make_upstream_v3io_wire.py

It starts a `V3ioEmulator`, runs ``upstream_v3io_runner.py`` in the upstream-storey venv
(``benchmarks/_upstream.py``) against it, and **fails unless upstream's results through the emulator
(two runs, the second resuming from persisted state) equal its uninterrupted in-memory results**, for both
``partitioned_by_key`` modes (``pmax``/``psum`` blob updates, and the ``if_else``/``if_not_exists``
conditioned form). That is the oracle: the emulator executed upstream's real update expressions the way
upstream expects a V3IO service to. The file then records every request (method, path, function,
body, status) and the final items, objects and stream records; ``test_v3io_upstream_wire.py`` replays the
requests against a fresh emulator and checks the same statuses and the same final state.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
OUT = HERE / "upstream_v3io_wire.json"


def snapshot(emu) -> dict:
    """The emulator's data as JSON: typed attributes per item, base64 objects, base64 stream records."""
    from storey.testing._v3io_model import encode_attribute

    state: dict = {"items": {}, "objects": {}, "streams": {}}
    container = emu.namespace.container("bigdata")
    for path, node in sorted(container.nodes.items()):
        if node.is_dir or node.shard is not None:
            continue
        if node.attrs:
            state["items"][path] = {k: encode_attribute(v) for k, v in sorted(node.attrs.items())}
        if node.data:
            state["objects"][path] = base64.b64encode(bytes(node.data)).decode()
    for path, stream in sorted(container.streams.items()):
        state["streams"][path] = [
            [base64.b64encode(r.data).decode() for r in s.records] for s in stream.shards
        ]
    return state


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks._upstream import run_upstream
    from storey.testing.v3io_emulator import V3ioEmulator

    with V3ioEmulator() as emu:
        result = run_upstream(HERE / "upstream_v3io_runner.py", [emu.url], timeout=600)
        bad = {path: r for path, r in result.items() if not r["same_as_memory"]}
        if bad:
            msg = f"upstream storey through the emulator differs from upstream in memory: {bad}"
            raise SystemExit(msg)
        requests = [
            {
                "method": r.method,
                "path": r.path,
                "query": r.query,
                "function": r.function,
                "body": base64.b64encode(r.body).decode(),
                "status": r.status,
            }
            for r in emu.requests
        ]
        doc = {"upstream": result, "requests": requests, "state": snapshot(emu)}
    OUT.write_text(json.dumps(doc, indent=0, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({len(requests)} requests): {result}")


if __name__ == "__main__":
    main()

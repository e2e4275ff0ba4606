"""Replay what upstream storey 1.14.1 sent to V3IO (``upstream_v3io/upstream_v3io_wire.json``).

The recording was made by ``upstream_v3io/make_upstream_v3io_wire.py``, which only writes it after checking
that upstream's results through the emulator equal upstream's in-memory results (see that script). This
test replays every request against a fresh emulator and checks the same statuses and the same final items,
objects and stream records, so the emulator keeps executing upstream's real traffic (update expressions
with ``init_array``/``psum``/``pmax``/``pmin``/``blob`` and slices, the ``if_else``/``if_not_exists``
conditioned form, empty conditions, TS literals, schema objects, CreateStream and PutRecords) the same way.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote, urlencode

import aiohttp
import pytest

from storey.testing.v3io_emulator import V3ioEmulator
from tests.unit.testing.upstream_v3io.make_upstream_v3io_wire import snapshot

pytestmark = pytest.mark.v3io

WIRE = json.loads((Path(__file__).parent / "upstream_v3io" / "upstream_v3io_wire.json").read_text())


def test_the_recording_is_an_oracle_run() -> None:
    assert WIRE["upstream"] == {
        "/bigdata/upstream_true/": {"events": 48, "same_as_memory": True},
        "/bigdata/upstream_false/": {"events": 48, "same_as_memory": True},
    }
    functions = {r["function"] for r in WIRE["requests"]}
    assert {"GetItem", "UpdateItem", "GetObject", "PutObject", "CreateStream", "PutRecords"} <= functions


async def test_replaying_upstream_traffic_gives_the_same_answers_and_state(
    v3io_emulator: V3ioEmulator,
) -> None:
    statuses = []
    async with aiohttp.ClientSession() as session:
        for req in WIRE["requests"]:
            url = v3io_emulator.url + quote(req["path"])
            if req["query"]:
                url += "?" + urlencode(req["query"])
            headers = {"X-v3io-session-key": "upstream"}
            if not req["function"].endswith("Object"):
                headers["X-v3io-function"] = req["function"]
            body = base64.b64decode(req["body"])
            async with session.request(req["method"], url, data=body or None, headers=headers) as resp:
                await resp.read()
                statuses.append(resp.status)
    assert statuses == [r["status"] for r in WIRE["requests"]]
    assert snapshot(v3io_emulator) == WIRE["state"]

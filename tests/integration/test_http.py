"""SendToHttp against a real aiohttp server on loopback (spec STEPS.md §6)."""

from __future__ import annotations

import random

import pytest

from storey import Complete, FlowError, HttpRequest, Reduce, SendToHttp, Source, build_flow
from tests.integration.http_server import LoopbackServer, free_port

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def server():
    srv = LoopbackServer().start()
    yield srv
    srv.stop()


def _collect():
    return Reduce([], lambda a, x: [*a, x])


def test_results_keep_input_order_with_max_in_flight(server):
    delays = [random.Random(7).choice([0, 0.01, 0.03]) for _ in range(30)]

    def build(event):
        return HttpRequest("POST", f"{server.url}/echo?delay={delays[event.body]}", str(event.body))

    step = SendToHttp(build, lambda body, resp: (body, resp.status, resp.body), max_in_flight=5)
    c = build_flow([Source(), step, _collect()]).run()
    for i in range(30):
        c.emit(i)
    out = c.terminate(wait=True)
    assert out == [(i, 200, f"echo:{i}") for i in range(30)]


def test_non_2xx_statuses_reach_the_join_and_none_drops(server):
    def build(event):
        return HttpRequest("GET", f"{server.url}/status/{event.body}", None)

    def join(body, resp):
        return None if resp.status == 404 else resp.status

    c = build_flow([Source(), SendToHttp(build, join), _collect()]).run()
    for code in (200, 404, 500, 503):
        c.emit(code)
    assert c.terminate(wait=True) == [200, 500, 503]


def test_timeout_fails_the_flow_with_timeout_error(server):
    step = SendToHttp(
        lambda e: HttpRequest("POST", f"{server.url}/echo?delay=2", "x"),
        lambda b, r: r.body,
        timeout_secs=0.2,
        name="slow-http",
    )
    c = build_flow([Source(), step, Complete()]).run()
    with pytest.raises(FlowError) as info:
        c.emit(1).await_result(timeout=10)
    assert info.value.step == "slow-http"
    assert isinstance(info.value.__cause__, TimeoutError)
    with pytest.raises(FlowError):
        c.await_termination()


def test_connection_refused_fails_the_flow():
    port = free_port()
    step = SendToHttp(lambda e: HttpRequest("GET", f"http://127.0.0.1:{port}/", None), lambda b, r: r.status)
    c = build_flow([Source(), step, _collect()]).run()
    c.emit(1)
    c.terminate()
    with pytest.raises(FlowError) as info:
        c.await_termination()
    assert isinstance(info.value.__cause__, OSError)


def test_max_in_flight_validation():
    with pytest.raises(ValueError, match="max_in_flight"):
        SendToHttp(lambda e: None, lambda b, r: b, max_in_flight=0)

"""`SendToHttp`: one HTTP request per event through aiohttp, results in input order (spec STEPS.md §6)."""

from __future__ import annotations

from collections.abc import Callable
from copy import copy
from dataclasses import dataclass, field
from typing import Any

from storey._utils._imports import require
from storey.event import Event
from storey.flow.concurrent import DROP, ConcurrentStep

__all__ = ["HttpRequest", "HttpResponse", "SendToHttp"]


@dataclass
class HttpRequest:
    """A request to send: method, url, body and headers (``{}`` by default)."""

    method: str
    url: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.headers is None:
            self.headers = {}


@dataclass
class HttpResponse:
    """A response: the integer status and the decoded body text."""

    status: int
    body: str


class SendToHttp(ConcurrentStep):
    """Send an HTTP request per event and join the response into the body.

    Parameters
    ----------
    request_builder
        ``request_builder(event) -> HttpRequest``; always receives the full `Event`.
    join_from_response
        ``join_from_response(body, HttpResponse) -> new body`` (``None`` drops the event). Every status,
        5xx included, is passed here and never retried.
    max_in_flight
        Requests in flight at once; results are forwarded in input order.
    verify_ssl
        Verify TLS certificates (default on).
    timeout_secs
        Total time allowed per request; a request without a complete response in time fails the flow with
        `TimeoutError` as the cause. ``None`` keeps aiohttp's default.

    Notes
    -----
    Connection, DNS and URL errors fail the flow. The aiohttp session is created on the first event and
    closed at termination (or when the flow fails).
    """

    def __init__(
        self,
        request_builder: Callable[[Event], HttpRequest],
        join_from_response: Callable[[Any, HttpResponse], Any],
        max_in_flight: int = 8,
        verify_ssl: bool = True,
        timeout_secs: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_in_flight=max_in_flight, **kwargs)
        self._request_builder = request_builder
        self._join = join_from_response
        self._verify_ssl = verify_ssl
        self._timeout_secs = timeout_secs
        self._session: Any = None

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        self._session = None
        run.add_closeable(self)

    def _get_session(self) -> Any:
        if self._session is None:
            aiohttp = require("aiohttp")
            timeout = aiohttp.ClientTimeout(total=self._timeout_secs) if self._timeout_secs else None
            connector = aiohttp.TCPConnector(ssl=None if self._verify_ssl else False)
            kwargs: dict[str, Any] = {"connector": connector}
            if timeout is not None:
                kwargs["timeout"] = timeout
            self._session = aiohttp.ClientSession(**kwargs)
        return self._session

    async def _process(self, event: Event) -> Any:
        request = self._request_builder(event)
        if hasattr(request, "__await__"):
            request = await request
        session = self._get_session()
        async with session.request(
            request.method, request.url, data=request.body, headers=request.headers
        ) as response:
            text = await response.text()
        new_body = self._join(event.body, HttpResponse(response.status, text))
        if new_body is None:
            return DROP
        out = copy(event)
        out.body = new_body
        return out

    async def _close_resources(self) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

"""`JoinWithV3IOTable`: enrich events with a V3IO KV item read by key (spec STEPS.md §6)."""

from __future__ import annotations

from collections.abc import Callable
from copy import copy
from typing import Any

from storey.event import Event
from storey.flow.concurrent import DROP, ConcurrentStep
from storey.steps.join import JoinWithTable

__all__ = ["JoinWithV3IOTable"]


class JoinWithV3IOTable(ConcurrentStep):
    """Read the item ``str(key_extractor(element))`` of ``table_path`` and join it into the event.

    A concurrent step (input order kept, at most `max_in_flight` reads in flight). No cache: every event
    reads the item.

    Parameters
    ----------
    storage
        A `V3ioDriver` (``None``: one built from ``V3IO_API``/``V3IO_ACCESS_KEY``); closed at termination.
    key_extractor
        A callable on the element, or a body field name.
    join_function
        ``join_function(element, item)`` returns the new body, or ``None`` to drop the event.
    table_path
        ``/<container>/<path>``.
    attributes
        ``'*'`` or the attribute names to read.

    Events whose item does not exist are dropped. Any other failure fails the flow with `V3ioError`.

    Examples
    --------
    >>> import asyncio
    >>> from storey import build_flow, Source, Reduce
    >>> from storey.drivers.v3io import V3ioDriver
    >>> from storey.testing.v3io_emulator import V3ioEmulator
    >>> emu = V3ioEmulator().start()
    >>> driver = V3ioDriver(emu.url, access_key="k")
    >>> async def seed():
    ...     await driver.save_key("/bigdata/users", "u1", {"age": 33})
    ...     await driver.close()
    >>> asyncio.run(seed())
    >>> flow = build_flow([
    ...     Source(),
    ...     JoinWithV3IOTable(driver, "user", lambda body, item: {**body, **item}, "/bigdata/users"),
    ...     Reduce([], lambda acc, x: acc + [x]),
    ... ])
    >>> c = flow.run()
    >>> _ = c.emit({"user": "u1"})
    >>> _ = c.emit({"user": "nobody"})
    >>> c.terminate(wait=True)
    [{'user': 'u1', 'age': 33}]
    >>> emu.stop()
    """

    # The key rules (a callable on the element, or a body field) are JoinWithTable's.
    _key = JoinWithTable._key

    def __init__(
        self,
        storage: Any,
        key_extractor: Callable[[Any], Any] | str,
        join_function: Callable[[Any, dict[str, Any]], Any],
        table_path: str,
        attributes: str | list[str] = "*",
        max_in_flight: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_in_flight=max_in_flight, **kwargs)
        if not callable(join_function):
            msg = f"step {self.name!r}: join_function must be callable, got {type(join_function).__name__}"
            raise TypeError(msg)
        if storage is None:
            from storey.drivers.v3io import V3ioDriver

            storage = V3ioDriver()
        self._storage = storage
        self._key_extractor = key_extractor
        self._join_function = join_function
        self._table_path = table_path
        self._attributes = attributes

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        run.add_closeable(self._storage)

    async def _process(self, event: Event) -> Any:
        key = str(self._key(event))
        item = await self._storage.load_key(self._table_path, key, self._attributes)
        if item is None:
            return DROP
        new_body = self._join_function(self._element(event), item)
        if hasattr(new_body, "__await__"):
            new_body = await new_body
        if new_body is None:
            return DROP
        if self._full_event and isinstance(new_body, Event):
            return new_body
        out = copy(event)
        out.body = new_body
        return out

    async def _close_resources(self) -> None:
        await self._storage.close()

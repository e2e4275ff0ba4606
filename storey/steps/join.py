"""`JoinWithTable`: enrich events with a Table's attributes for a key (spec STEPS.md §6)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from copy import copy
from typing import Any

from storey.errors import MissingFieldError
from storey.event import Event
from storey.flow.concurrent import DROP, ConcurrentStep

__all__ = ["JoinWithTable"]


class JoinWithTable(ConcurrentStep):
    """Join each event with the attributes the `Table` holds for ``key_extractor(element)``.

    Parameters
    ----------
    table
        A `Table` or a table name resolved through the context.
    key_extractor
        A callable on the element, or a body field name.
    attributes
        Attributes to load (``'*'`` when ``None``).
    join_function
        ``join_function(element, attrs)`` returns the new body, or ``None`` to drop the event; the default
        returns ``{**body, **attrs}``.
    """

    def __init__(
        self,
        table: Any,
        key_extractor: Callable[[Any], Any] | str,
        attributes: list[str] | None = None,
        join_function: Callable[[Any, dict[str, Any]], Any] | None = None,
        max_in_flight: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_in_flight=max_in_flight, **kwargs)
        self._table_spec = self._table_arg(table)
        self._table: Any = None
        self._key_extractor = key_extractor
        self._attributes = "*" if attributes is None else attributes
        self._join_function = join_function

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        self._table = self._resolve_table(self._table_spec)
        run.add_closeable(self._table)

    def _key(self, event: Event) -> Any:
        element = self._element(event)
        if callable(self._key_extractor):
            return self._key_extractor(element)
        body = event.body
        if not isinstance(body, Mapping):
            msg = f"step {self.name!r}: key field {self._key_extractor!r} needs a mapping body"
            raise TypeError(msg)
        if self._key_extractor not in body:
            msg = f"step {self.name!r}: field {self._key_extractor!r} is missing in event {event.id!r}"
            raise MissingFieldError(msg)
        return body[self._key_extractor]

    async def _process(self, event: Event) -> Any:
        key = self._key(event)
        attrs = await self._table.get_or_load_key(key, self._attributes)
        attrs = dict(attrs) if attrs else {}
        if self._join_function is None:
            body = event.body
            if not isinstance(body, Mapping):
                msg = f"step {self.name!r}: the default join needs a mapping body, got {type(body).__name__}"
                raise TypeError(msg)
            new_body: Any = {**body, **attrs}
        else:
            new_body = self._join_function(self._element(event), attrs)
            if hasattr(new_body, "__await__"):
                new_body = await new_body
        if new_body is None:
            return DROP
        if self._full_event and isinstance(new_body, Event):
            return new_body
        out = copy(event)
        out.body = new_body
        return out

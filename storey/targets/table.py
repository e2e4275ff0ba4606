"""`WriteToTable` (alias `NoSqlTarget`): persist one record per event key (spec STEPS.md §7)."""

from __future__ import annotations

from typing import Any

from storey.event import Event
from storey.flow.concurrent import ConcurrentStep
from storey.targets._columns import ColumnSelector

__all__ = ["NoSqlTarget", "WriteToTable"]

_RESERVED = "_storey_"


class WriteToTable(ConcurrentStep):
    """Persist, per event, the body row together with the key's dirty static attributes and aggregation
    state, in one driver operation, then forward the event unchanged (in input order).

    Parameters
    ----------
    table
        A `Table`, or a table name resolved through the context.
    columns
        Column notation of spec STEPS.md §8.1; inferred from the first dict body by default.
    infer_columns_from_data
        Defaults to ``True`` when no `columns` are given.
    max_in_flight
        Writes in flight; writes of one key are applied in event order by the Table.

    Examples
    --------
    >>> import asyncio
    >>> from storey import build_flow, Source, WriteToTable, Table, NoopDriver
    >>> driver = NoopDriver()
    >>> table = Table("users", driver)
    >>> c = build_flow([Source(), WriteToTable(table)]).run()
    >>> _ = c.emit({"name": "ann", "age": 3}, key="u1")
    >>> c.terminate(wait=True)
    >>> asyncio.run(driver.load_key("users", "u1"))["age"]
    3
    """

    def __init__(
        self,
        table: Any,
        columns: list[str] | None = None,
        infer_columns_from_data: bool | None = None,
        max_in_flight: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_in_flight=max_in_flight, **kwargs)
        self._table_spec = self._table_arg(table)
        self._table: Any = None
        self._selector = ColumnSelector(
            columns, infer_columns_from_data=infer_columns_from_data, step=self.name
        )
        for name in self._selector.names or ():
            self._check_name(name)

    def _check_name(self, name: str) -> None:
        if str(name).startswith(_RESERVED):
            msg = f"step {self.name!r}: attribute names starting with {_RESERVED!r} are reserved: {name!r}"
            raise ValueError(msg)

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        self._table = self._resolve_table(self._table_spec)
        self._selector.reset()
        run.add_closeable(self._table)

    def _do(self, event: Event) -> Any:
        if event.key is None:
            msg = f"step {self.name!r}: event {event.id!r} has a None key, which cannot be persisted"
            raise ValueError(msg)
        return super()._do(event)

    async def _process(self, event: Event) -> Event:
        row = self._selector.as_dict(event)
        for name in row:
            self._check_name(name)
        await self._table.persist_key(event.key, row)
        return event


NoSqlTarget = WriteToTable

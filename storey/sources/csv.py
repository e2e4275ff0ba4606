"""`ReadCSV` (alias `CSVSource`): a flow source reading CSV files (spec STEPS.md §5.3)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from storey._utils._paths import is_url
from storey.flow.batch import EventBatch
from storey.flow.runtime import Run
from storey.sources._arrow import column_to_pylist
from storey.sources._csvparse import CSVBatch, CSVParser, check_field
from storey.sources._reading import dict_rows, event_chunks, guard_reading
from storey.sources.base import ReaderSource
from storey.steps.batching import pop_synonym

__all__ = ["CSVSource", "ReadCSV"]

_PARSE_BATCH = 1024  # rows parsed at once; events are then handed on in chunks of EVENT_CHUNK
_FAST_BATCH = 4096  # rows converted to Python values at once on the vectorised path
VECTORISED = True  # use `storey.frames`' vectorised reader where it applies (tests switch it off)
#: Local files smaller than this are parsed by the parser alone: the vectorised reader's first use imports
#: pyarrow and storey.frames (a few tenths of a second), which only pays off from a few MB on.
VECTORISED_MIN_BYTES = 4 << 20


class ReadCSV(ReaderSource):
    """Read CSV files into events, one event per row.

    Parameters
    ----------
    paths
        One path or a list of paths (local, or fsspec URLs with `storage_options`), read in order.
    header
        The first row of each file is the header; all files must have the same header.
    build_dict
        With a header, make each body a dict ``{column: value}``; otherwise bodies are lists.
    key_field, timestamp_field, id_field
        Column index (``0`` is valid) or, with a header, name giving the event key, time and id.
        ``time_field`` is accepted as a synonym of `timestamp_field`.
    timestamp_format
        `strptime` format of datetime values (default ISO 8601).
    type_inference
        Infer each column's type from its first non-empty value (bool, int, float, datetime, str);
        with ``False`` values stay strings (the timestamp field is still parsed into the event time).
    on_error
        ``'raise'``: a bad row fails the flow with `CSVParseError` (file and line). ``'skip'``: the row is
        dropped and counted in ``step.metrics['skipped_rows']``; the first 10 per file are logged.
    storage_options
        fsspec options for URLs.

    Notes
    -----
    Empty fields are ``None``. Datetimes are aware UTC (naive values are read as UTC). An empty timestamp
    field fails with `MissingFieldError`; without a timestamp field the event time is now. Each event's
    ``origin`` is ``(path, line)``, the 1-based physical line where the row starts. All parsing rules live
    in `storey.sources._csvparse`, which `storey.frames` shares. With a header, type inference and ISO
    datetimes, files of a few MB or more (and URLs) are first read by `storey.frames`' vectorised reader,
    which yields exactly the parser's values and hands the rest of a file to the parser as soon as it
    cannot prove that (a quote, a bad row, an odd value): values, lines, errors and metrics are the same.

    Examples
    --------
    >>> import os, tempfile
    >>> from storey import build_flow, Reduce
    >>> path = os.path.join(tempfile.mkdtemp(), "events.csv")
    >>> text = "user,time,amount\\nu1,2024-01-01T00:00:00,1.5\\nu2,2024-01-01T00:01:00,\\n"
    >>> _ = open(path, "w").write(text)
    >>> flow = build_flow([
    ...     ReadCSV(path, header=True, build_dict=True, key_field="user", timestamp_field="time"),
    ...     Reduce([], lambda acc, e: acc + [(e.key, e.time.isoformat(), e.body["amount"])], full_event=True),
    ... ])
    >>> flow.run().await_termination()
    [('u1', '2024-01-01T00:00:00+00:00', 1.5), ('u2', '2024-01-01T00:01:00+00:00', None)]
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        header: bool = False,
        build_dict: bool = False,
        key_field: int | str | None = None,
        timestamp_field: int | str | None = None,
        timestamp_format: str | None = None,
        type_inference: bool = True,
        id_field: int | str | None = None,
        on_error: str = "raise",
        storage_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        timestamp_field = pop_synonym(
            kwargs, "time_field", "timestamp_field", timestamp_field, None, "ReadCSV"
        )
        super().__init__(**kwargs)
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        self._paths = [os.fspath(p) for p in paths]
        self._header = bool(header)
        self._build_dict = bool(build_dict) and self._header
        self._key_field = key_field
        self._time_field = timestamp_field
        self._id_field = id_field
        self._timestamp_format = timestamp_format
        self._type_inference = bool(type_inference)
        self._on_error = on_error
        self._storage_options = storage_options
        check_field(key_field, self._header, "key field", self.name)
        check_field(id_field, self._header, "id field", self.name)
        self._parser()  # validates the remaining arguments
        self.metrics: dict[str, int] = {"rows": 0, "skipped_rows": 0}

    def _parser(self) -> CSVParser:
        return CSVParser(
            header=self._header,
            type_inference=self._type_inference,
            timestamp_format=self._timestamp_format,
            time_field=self._time_field,
            fields=(self._key_field, self._id_field),
            on_error=self._on_error,
            batch_size=_PARSE_BATCH,
            step=self.name,
        )

    def _init_run(self, run: Run) -> None:
        super()._init_run(run)
        self.metrics = {"rows": 0, "skipped_rows": 0}

    def _read_batches(self) -> Iterator[EventBatch]:
        return guard_reading(self.name, self._events())

    def _events(self) -> Iterator[EventBatch]:
        parser = self._parser()
        vectorisable = self._vectorisable()
        fast: Any = None  # the vectorised reader's context, made for the first file it reads
        build: Callable[[list[Sequence[Any]]], list[Any]] | None = None
        try:
            for path in self._paths:
                if vectorisable and not _small(path):
                    if fast is None:
                        from storey.frames import _io_csv

                        fast = _io_csv._Context(
                            parser, None, [], _FAST_BATCH, self._storage_options, self._time_field
                        )
                    read = _vectorised(fast, path)
                else:
                    read = _parsed(parser, parser.read(path, self._storage_options), 0)
                for cols, time_ns, where, lines, rows in read:
                    self.metrics["rows"] = rows
                    self.metrics["skipped_rows"] = parser.skipped_rows
                    if build is None:
                        build = self._body_builder(parser.names)
                    yield from self._batch_events(cols, time_ns, where, lines, parser, build)
        finally:
            self.metrics["rows"] = max(self.metrics["rows"], parser.rows)
            self.metrics["skipped_rows"] = parser.skipped_rows

    def _vectorisable(self) -> bool:
        """Whether `storey.frames`' vectorised reader applies to this source's options.

        That reader (``pyarrow.csv`` plus checks) yields exactly the parser's values and falls back to the
        parser for any block it cannot prove identical; it needs pyarrow, a header, type inference, ISO
        datetimes and a time field given by name (or none).
        """
        if not (VECTORISED and self._header and self._type_inference and self._timestamp_format is None):
            return False
        if self._time_field is not None and not isinstance(self._time_field, str):
            return False
        return importlib.util.find_spec("pyarrow") is not None

    def _body_builder(self, names: list[str] | None) -> Callable[[list[Sequence[Any]]], list[Any]]:
        if not self._build_dict:
            return _list_rows
        names = names or []
        dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if dup is not None:
            msg = f"step {self.name!r}: build_dict=True needs unique column names, {dup!r} appears twice"
            raise ValueError(msg)
        return dict_rows(names)

    def _batch_events(
        self,
        cols: list[Sequence[Any]],
        time_ns: Sequence[int] | None,
        path: str,
        lines: Sequence[int],
        parser: CSVParser,
        build: Callable[[list[Sequence[Any]]], list[Any]],
    ) -> Iterator[EventBatch]:
        key = None if self._key_field is None else cols[parser.field_index(self._key_field)]
        ids = None if self._id_field is None else cols[parser.field_index(self._id_field)]
        return event_chunks(build, cols, key, time_ns, path, lines, ids)


def _small(path: str) -> bool:
    """A local file below `VECTORISED_MIN_BYTES` (URLs and unknown sizes count as large)."""
    if is_url(path):
        return False
    try:
        return os.path.getsize(path) < VECTORISED_MIN_BYTES
    except OSError:
        return True  # the parser reports the missing file


_Parsed = tuple[list[Sequence[Any]], Sequence[int] | None, str, Sequence[int], int]


def _parsed(parser: CSVParser, batches: Iterator[CSVBatch], skip: int) -> Iterator[_Parsed]:
    """Parser batches as ``(columns, time_ns, path, lines, rows parsed)`` without the first `skip` rows."""
    for batch in batches:
        n = len(batch)
        if skip >= n:
            skip -= n
            continue
        if skip:
            times = batch.time_ns
            yield (
                [c[skip:] for c in batch.columns],
                None if times is None else times[skip:],
                batch.path,
                batch.lines[skip:],
                parser.rows,
            )
            skip = 0
        else:
            yield batch.columns, batch.time_ns, batch.path, batch.lines, parser.rows


def _vectorised(ctx: Any, path: str) -> Iterator[_Parsed]:
    """One file through `storey.frames`' vectorised reader while it applies, then through the parser from the
    first row it did not deliver (the parser gives the very same first rows, so nothing is delivered twice;
    see `storey.frames._io_csv`)."""
    from storey.frames import _io_csv

    parser = ctx.parser
    snapshot = _io_csv._snapshot(parser)
    start_rows = parser.rows
    delivered = 0
    try:
        for ib in _io_csv._fast_batches(ctx, path):
            rb = ib.batch
            names = parser.names or []
            if len(set(names)) != len(names) or rb.num_columns != len(names):
                raise _io_csv._Fallback  # duplicate column names: the record batch cannot hold them all
            cols = [column_to_pylist(rb.column(j)) for j in range(rb.num_columns)]
            delivered += rb.num_rows
            times = None if ib.time_ns is None else ib.time_ns.tolist()
            yield cols, times, path, ib.lines, max(parser.rows, start_rows + delivered)
        return
    except _io_csv._Fallback:
        _io_csv._restore(parser, snapshot)
    yield from _parsed(parser, parser.read(path, ctx.storage_options), delivered)


def _list_rows(columns: list[Sequence[Any]]) -> list[list[Any]]:
    return list(map(list, zip(*columns, strict=True)))


CSVSource = ReadCSV

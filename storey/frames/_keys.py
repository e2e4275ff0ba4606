"""Key dictionary encoding: dense key ids in first-seen order across batches (spec AGGREGATIONS.md §8.3).

The stream groups events by the Python value of the key (``body[key]``, a tuple of fields, or a callable's
result) in a dict, so two keys are the same group exactly when they are equal as Python values. `KeyEncoder`
reproduces that: each batch is dictionary-encoded column-wise with Arrow, the batch's few distinct values
are converted to Python values as `ReadParquet` builds them and looked up in one dict, and the per-row ids
are gathered with numpy. Ids are assigned in order of first appearance, which is the stream's first-seen
order (the order `EmitAfterPeriod` walks keys in).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from storey.errors import MissingFieldError

__all__ = ["KeyEncoder"]

_COMPOSITE_LIMIT = 2**62


class KeyEncoder:
    """Map key values to dense int ids (``0, 1, …`` in first-seen order).

    Parameters
    ----------
    key
        A column name, a list of column names (tuple keys) or a callable on the row dict.
    where
        Used in error messages.

    Attributes
    ----------
    values
        ``values[i]`` is the Python key value of id ``i``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> enc = KeyEncoder("k")
    >>> enc.encode(pa.record_batch({"k": ["b", "a", "b"]}), None).tolist()
    [0, 1, 0]
    >>> enc.encode(pa.record_batch({"k": ["c", "a"]}), None).tolist(), enc.values
    ([2, 1], ['b', 'a', 'c'])
    """

    def __init__(self, key: Any, where: str = "storey.frames") -> None:
        if isinstance(key, str):
            self.columns: list[str] | None = [key]
            self.callable: Callable[[Any], Any] | None = None
            self.is_tuple = False
        elif isinstance(key, list | tuple) and key and all(isinstance(k, str) for k in key):
            self.columns = list(key)
            self.callable = None
            self.is_tuple = True
        elif callable(key):
            self.columns = None
            self.callable = key
            self.is_tuple = False
        else:
            msg = f"{where}: `key` must be a column name, a list of column names or a callable, got {key!r}"
            raise TypeError(msg)
        self.where = where
        self.ids: dict[Any, int] = {}
        self.values: list[Any] = []
        self._known: Any = None  # Arrow array of keys already seen (fast path), and their ids
        self._known_ids = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.values)

    def check_columns(self, names: Sequence[str], source: str) -> None:
        """`MissingFieldError` naming the column and the input when a key column is absent."""
        for col in self.columns or ():
            if col not in names:
                msg = f"{self.where}: key column {col!r} is missing in input {source} (columns {list(names)})"
                raise MissingFieldError(msg)

    def _id(self, value: Any) -> int:
        ids = self.ids
        i = ids.get(value)
        if i is None:
            try:
                i = ids[value] = len(self.values)
            except TypeError:
                msg = f"{self.where}: key {value!r} is not hashable"
                raise TypeError(msg) from None
            self.values.append(value)
        return i

    def encode(self, batch: Any, rows: Callable[[], list[dict[str, Any]]] | None) -> np.ndarray:
        """The int64 key ids of a `pyarrow.RecordBatch`; `rows` gives the row dicts (callable keys only)."""
        n = batch.num_rows
        if self.callable is not None:
            assert rows is not None
            fn = self.callable
            out = np.empty(n, dtype=np.int64)
            for i, body in enumerate(rows()):
                value = fn(body)
                if type(value) is list:
                    value = tuple(value)
                out[i] = self._id(value)
            return out
        assert self.columns is not None
        if n == 0:
            return np.empty(0, dtype=np.int64)
        if not self.is_tuple:
            column = batch.column(self.columns[0])
            fast = self._encode_arrow(column)
            if fast is not None:
                return fast
            codes, uniques = _encode_column(column)
            local = np.fromiter((self._id(u) for u in uniques), dtype=np.int64, count=len(uniques))
            return local[codes]
        return self._encode_tuple(batch)

    def _encode_arrow(self, column: Any) -> np.ndarray | None:
        """String and integer keys without nulls: the batch's distinct values are looked up in an Arrow
        array of the known keys (for these types Arrow equality is Python equality); only new keys go
        through the dict. ``None`` when not applicable."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        t = column.type
        if column.null_count or not (
            pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
        ):
            return None
        if self._known is not None and self._known.type != t:
            return None  # another type than the known keys': the general path keeps Python semantics
        encoded = pc.dictionary_encode(column)
        uniques = encoded.dictionary
        if self._known is None:
            self._known = pa.array([], t)
            self._known_ids = np.empty(0, dtype=np.int64)
        pos = pc.index_in(uniques, value_set=self._known).to_numpy(zero_copy_only=False)
        missing = np.isnan(pos) if pos.dtype.kind == "f" else np.zeros(len(pos), dtype=bool)
        local = np.empty(len(uniques), dtype=np.int64)
        found = ~missing
        if found.any():
            local[found] = self._known_ids[pos[found].astype(np.int64)]
        if missing.any():
            new_idx = np.flatnonzero(missing)
            new_values = uniques.take(pa.array(new_idx))
            ids = np.fromiter(
                (self._id(v) for v in new_values.to_pylist()), dtype=np.int64, count=len(new_idx)
            )
            local[new_idx] = ids
            self._known = pa.concat_arrays([self._known, new_values])
            self._known_ids = np.concatenate([self._known_ids, ids])
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        return local[codes]

    def _encode_tuple(self, batch: Any) -> np.ndarray:
        parts = [_encode_column(batch.column(c)) for c in self.columns or ()]
        size = 1
        composite = np.zeros(batch.num_rows, dtype=np.int64)
        for codes, uniques in parts:
            size *= len(uniques)
            if size >= _COMPOSITE_LIMIT:
                return self._encode_tuple_rows(parts)
            composite = composite * np.int64(len(uniques)) + codes
        _, first, inverse = np.unique(composite, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # uniques in first-appearance order
        local = np.empty(len(first), dtype=np.int64)
        for u in order.tolist():
            row = int(first[u])
            local[u] = self._id(tuple(uniques[codes[row]] for codes, uniques in parts))
        return local[inverse.reshape(-1)]

    def _encode_tuple_rows(self, parts: list[tuple[np.ndarray, list[Any]]]) -> np.ndarray:
        cols = [[uniques[c] for c in codes.tolist()] for codes, uniques in parts]
        return np.fromiter((self._id(t) for t in zip(*cols, strict=True)), dtype=np.int64, count=len(cols[0]))


def _encode_column(column: Any) -> tuple[np.ndarray, list[Any]]:
    """``(codes, uniques)``: per-row indices into the column's distinct Python values (first-seen order).

    Nulls are the value ``None``. Values are converted as `ReadParquet` converts them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from storey.sources._arrow import column_to_pylist

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        encoded = pc.dictionary_encode(column, null_encoding="encode")
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        values = column_to_pylist(column)
        index: dict[Any, int] = {}
        uniques: list[Any] = []
        codes = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            j = index.get(v)
            if j is None:
                j = index[v] = len(uniques)
                uniques.append(v)
            codes[i] = j
        return codes, uniques
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return codes, column_to_pylist(encoded.dictionary)

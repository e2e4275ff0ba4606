"""Assemble emitted rows into Arrow tables (spec AGGREGATIONS.md §8.4).

The stream emits bodies built by `storey.aggregations.step.augment`: by default a new dict holding the
present features (feature order), then the body's fields, where **body fields win** over equal-named
features (keeping the feature's position). A period/window emission's body is ``{'key': k, 'time': b}``.
Frames output has one row per emitted body and the union of the body keys as columns, in order of first
appearance; a key absent from a body (a too-late aggregator's features) is null. Feature columns are int64
(``count``; float64 with a float ``max_value``) or float64; input columns keep their Arrow types; the
``time`` of boundary emissions is ``timestamp[ns, tz=UTC]``.

With an `augmentation_fn`, it is called row by row on the same body dicts and feature dicts the stream
builds, and the returned dicts become the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from storey.frames._emissions import Emissions
from storey.frames._keys import KeyEncoder
from storey.frames._layout import StepLayout

__all__ = ["OutputAssembler", "features_array"]


def features_array(values: np.ndarray, present: np.ndarray | None) -> Any:
    """An Arrow array over `values` (zero-copy) with nulls where not `present`."""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    type_ = pa.int64() if values.dtype == np.int64 else pa.float64()
    n = len(values)
    if present is None or present.all():
        return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(values)])
    bitmap = np.packbits(present, bitorder="little")
    nulls = n - int(np.count_nonzero(present))
    return pa.Array.from_buffers(type_, n, [pa.py_buffer(bitmap), pa.py_buffer(values)], null_count=nulls)


class OutputAssembler:
    """Turn `Emissions` into `pyarrow.Table`s and track the overall column order.

    Parameters
    ----------
    layout
        The step layout (feature names and types).
    keys
        The key encoder (key values of boundary emissions).
    augmentation_fn
        ``fn(body, features) -> dict``, or ``None`` for the default augmentation.
    where
        For messages.
    """

    def __init__(
        self,
        layout: StepLayout,
        keys: KeyEncoder,
        augmentation_fn: Callable[[Any, dict[str, Any]], Any] | None,
        where: str,
    ) -> None:
        self.layout = layout
        self.keys = keys
        self.fn = augmentation_fn
        self.where = where
        self.order: dict[str, None] = {}
        self.input_schema: Any = None
        self.key_type: Any = None
        self._owner = [a for a, fs in enumerate(layout.features) for _ in fs]
        self._int = [f for fl in layout.int_features for f in fl]

    # ------------------------------------------------------------------------------------ public
    def assemble(self, em: Emissions, rows: Any) -> Any | None:
        """The rows of `em` as a `pyarrow.Table` (``None`` when empty).

        Parameters
        ----------
        em
            Emissions whose ``src`` are positions in `rows` (``-1`` for boundary emissions).
        rows
            The row space (`pyarrow.Table` or `RecordBatch`) the emissions echo.
        """
        if len(em) == 0:
            return None
        if rows is not None and self.input_schema is None:
            self.input_schema = rows.schema
        if self.fn is not None:
            return self._assemble_rows(em, rows)
        return self._assemble_columns(em, rows)

    def empty_table(self) -> Any:
        """The zero-row result: feature columns then input columns (§8.4), or no columns with a function."""
        import pyarrow as pa

        if self.fn is not None:
            return pa.table({})
        names: dict[str, Any] = {}
        for name, is_int in zip(self.layout.all_features, self._int, strict=True):
            names[name] = pa.int64() if is_int else pa.float64()
        if self.input_schema is not None:
            for field in self.input_schema:
                names[field.name] = field.type
        return pa.schema(list(names.items())).empty_table()

    # ------------------------------------------------------------------------------------ columns
    def _body(self, em: Emissions, rows: Any) -> tuple[list[str], dict[str, Any]]:
        """Body column names and arrays: the echoed rows, or ``key``/``time`` of boundary emissions."""
        import pyarrow as pa

        if len(em.src) and em.src[0] < 0:
            key_values = [self.keys.values[k] for k in em.kid.tolist()]
            key_col = self._key_array(key_values)
            time_col = pa.Array.from_buffers(
                pa.timestamp("ns", tz="UTC"), len(em), [None, pa.py_buffer(np.ascontiguousarray(em.time))]
            )
            return ["key", "time"], {"key": key_col, "time": time_col}
        names = list(rows.schema.names)
        src = em.src
        if len(src) == rows.num_rows and (len(src) == 0 or (src[0] == 0 and np.all(np.diff(src) == 1))):
            picked = rows
        else:
            picked = rows.take(pa.array(src))
        return names, {n: picked.column(n) for n in names}

    def _key_array(self, values: list[Any]) -> Any:
        import pyarrow as pa

        if self.keys.is_tuple:
            cols = self.keys.columns or []
            return pa.array([dict(zip(cols, v, strict=True)) for v in values])
        if self.key_type is None and self.input_schema is not None and self.keys.columns:
            col = self.keys.columns[0]
            if col in self.input_schema.names:
                self.key_type = self.input_schema.field(col).type
                if pa.types.is_dictionary(self.key_type):
                    self.key_type = self.key_type.value_type
        try:
            return pa.array(values, type=self.key_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            return pa.array(values)

    def _assemble_columns(self, em: Emissions, rows: Any) -> Any:
        import pyarrow as pa

        layout = self.layout
        body_names, body = self._body(em, rows)
        body_set = set(body_names)
        # presence patterns in first-appearance order give the rows' key orders
        n_aggs = len(layout.plans)
        code = np.zeros(len(em), dtype=np.int64)
        for a in range(n_aggs):
            code |= em.present[a].astype(np.int64) << a
        uniq, first = np.unique(code, return_index=True)
        local: dict[str, None] = {}
        for c in uniq[np.argsort(first, kind="stable")].tolist():
            present_feats = [f for a, fs in enumerate(layout.features) if c >> a & 1 for f in fs]
            for f in present_feats:
                local.setdefault(f)
            pf = set(present_feats)
            for b in body_names:
                if b not in pf:
                    local.setdefault(b)
        for name in local:
            self.order.setdefault(name)
        arrays = []
        flat = layout.all_features
        index = {f: i for i, f in enumerate(flat)}
        for name in local:
            if name in body_set:
                arrays.append(body[name])
            else:
                i = index[name]
                arrays.append(features_array(em.features[i], em.present[self._owner[i]]))
        return pa.Table.from_arrays(arrays, names=list(local))

    # ------------------------------------------------------------------------------------ row by row
    def _assemble_rows(self, em: Emissions, rows: Any) -> Any:
        import pyarrow as pa

        from storey._time import from_ns
        from storey.sources._arrow import rows_from_batch

        layout = self.layout
        fn = self.fn
        assert fn is not None
        boundary = bool(len(em.src)) and em.src[0] < 0
        if boundary:
            bodies = [
                {"key": self.keys.values[k], "time": from_ns(t)}
                for k, t in zip(em.kid.tolist(), em.time.tolist(), strict=True)
            ]
        else:
            bodies = rows_from_batch(rows.take(pa.array(em.src)))
        feats = [f.tolist() for f in em.features]
        present = [p.tolist() for p in em.present]
        owner = self._owner
        flat = layout.all_features
        out = []
        for r, body in enumerate(bodies):
            features = {f: feats[i][r] for i, f in enumerate(flat) if present[owner[i]][r]}
            result = fn(body, features)
            if not isinstance(result, Mapping):
                msg = f"{self.where}: augmentation_fn must return a dict, got {type(result).__name__}"
                raise TypeError(msg)
            out.append(result)
        return self._table_from_dicts(out)

    def _table_from_dicts(self, dicts: list[Mapping[str, Any]]) -> Any:
        import pyarrow as pa

        local: dict[str, None] = {}
        for d in dicts:
            for k in d:
                local.setdefault(k)
        for name in local:
            self.order.setdefault(name)
        types: dict[str, Any] = {}
        for name, is_int in zip(self.layout.all_features, self._int, strict=True):
            types[name] = pa.int64() if is_int else pa.float64()
        if self.input_schema is not None:
            for field in self.input_schema:
                types.setdefault(field.name, field.type)
        arrays = []
        for name in local:
            values = [d.get(name) for d in dicts]
            arr = None
            if name in types:
                try:
                    arr = pa.array(values, type=types[name])
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                    arr = None
            arrays.append(arr if arr is not None else pa.array(values))
        return pa.Table.from_arrays(arrays, names=[str(n) for n in local])

    # ------------------------------------------------------------------------------------ final table
    def combine(self, tables: list[Any]) -> Any:
        """One table of all batches' rows with the overall column order (missing columns null)."""
        import pyarrow as pa

        tables = [t for t in tables if t is not None and t.num_rows]
        if not tables:
            return self.empty_table()
        if len(tables) == 1:
            t = tables[0]
        else:
            t = pa.concat_tables(tables, promote_options="permissive")
        return t.select(list(self.order))

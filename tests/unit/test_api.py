"""The public surface: every name of `storey.__all__` resolves, compatibility modules and aliases
(spec STEPS.md §0.1 and §10)."""

from __future__ import annotations

import importlib

import pytest

import storey

ALIASES = {
    "SyncEmitSource": "Source",
    "AsyncEmitSource": "AsyncSource",
    "CSVSource": "ReadCSV",
    "ParquetSource": "ReadParquet",
    "NoSqlTarget": "WriteToTable",
    "StreamTarget": "WriteToV3IOStream",
    "CSVTarget": "WriteToCSV",
    "ParquetTarget": "WriteToParquet",
    "TSDBTarget": "WriteToTSDB",
    "QueryAggregationByKey": "QueryByKey",
    "EmitBase": "EmitPolicy",
}

MODULES = {
    "storey.dtypes": [
        "Event",
        "FieldAggregator",
        "SlidingWindows",
        "FixedWindows",
        "EmitEveryEvent",
        "to_ns",
    ],
    "storey.flow": ["Flow", "build_flow", "Context", "FlowController", "Map", "Reduce"],
    "storey.steps": ["Filter", "Map", "FlatMap", "Choice", "Batch", "SendToHttp", "JoinWithV3IOTable"],
    "storey.sources": ["Source", "ReadCSV", "ReadParquet", "DataframeSource", "SyncEmitSource"],
    "storey.targets": ["WriteToTable", "WriteToCSV", "WriteToParquet", "WriteToV3IOStream", "WriteToTSDB"],
    "storey.writers": ["WriteToCSV", "WriteToParquet"],
    "storey.dataframe": ["ToDataFrame", "ReduceToDataFrame"],
    "storey.aggregations": ["AggregateByKey", "QueryByKey", "QueryAggregationByKey"],
    "storey.drivers": ["Driver", "NoopDriver", "SQLiteDriver", "V3ioDriver", "RedisDriver"],
    "storey.table": ["Table"],
    "storey.errors": [
        "StoreyError",
        "FlowError",
        "MissingFieldError",
        "CSVParseError",
        "SchemaMismatchError",
    ],
    "storey.frames": ["aggregate", "backfill", "build_state", "as_of", "check_parity", "ParityReport"],
}


@pytest.mark.parametrize("name", storey.__all__)
def test_every_public_name_resolves(name):
    assert getattr(storey, name) is not None


@pytest.mark.parametrize(("alias", "name"), ALIASES.items())
def test_aliases_are_the_same_objects(alias, name):
    assert getattr(storey, alias) is getattr(storey, name)


@pytest.mark.parametrize("module", MODULES)
def test_module_paths_give_the_same_objects(module):
    mod = importlib.import_module(module)
    for name in MODULES[module]:
        obj = getattr(mod, name)
        if hasattr(storey, name):
            assert obj is getattr(storey, name), (module, name)


def test_frames_functions_are_functions():
    import storey.frames as frames

    for name in ("aggregate", "build_state", "backfill", "as_of", "check_parity"):
        assert callable(getattr(frames, name)) and not isinstance(getattr(frames, name), type(importlib))

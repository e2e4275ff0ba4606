"""Paths and fsspec URLs: opening files, expanding directories, hive partitions (STEPS.md §5.3–5.4, §8.2).

Local paths (no ``scheme://``) are opened with the builtin `open`; anything else goes through fsspec with
``storage_options``. `expand_paths` is the one definition of the file order of `ReadParquet` and
`storey.frames`: directories are walked recursively, names starting with ``.`` or ``_`` are skipped (as
`pyarrow.dataset` does), and the whole set is sorted lexicographically by path. `hive_partitions` types the
``name=value`` directory segments as `pyarrow.dataset` does with ``partitioning='hive'``.

Examples
--------
>>> import os, tempfile
>>> root = tempfile.mkdtemp()
>>> for d in ("b=2", "b=10", "_tmp"):
...     os.makedirs(os.path.join(root, d))
...     open(os.path.join(root, d, "part.parquet"), "wb").close()
>>> files = expand_paths(root)
>>> [os.path.relpath(f.path, root) for f in files]
['b=10/part.parquet', 'b=2/part.parquet']
>>> hive_partitions(files).values
[{'b': 10}, {'b': 2}]
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import IO, Any, NamedTuple
from urllib.parse import quote, unquote

from storey._utils._imports import require

__all__ = [
    "DataFile",
    "HivePartitions",
    "expand_paths",
    "hive_directory",
    "hive_partitions",
    "is_url",
    "join_path",
    "makedirs_for",
    "open_input",
    "open_output",
    "url_to_fs",
]

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(path: str) -> bool:
    """Whether `path` has a ``scheme://`` prefix (``file://`` included)."""
    return bool(_SCHEME.match(path))


def _local(path: str, storage_options: dict[str, Any] | None) -> str | None:
    """The local file path for `path`, or ``None`` when it needs fsspec."""
    if not is_url(path):
        return os.fspath(path)
    if path.startswith("file://") and not storage_options:
        return path[len("file://") :]
    return None


def url_to_fs(path: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and the protocol-less path for `path`."""
    fsspec_core = require("fsspec.core")
    return fsspec_core.url_to_fs(path, **(storage_options or {}))


def _check_path(path: Any) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        msg = f"a path must be a str or os.PathLike, got {type(path).__name__}: {path!r}"
        raise TypeError(msg)
    return path


def open_input(path: str, storage_options: dict[str, Any] | None = None) -> IO[bytes]:
    """Open `path` (local or fsspec URL) for binary reading.

    Raises
    ------
    FileNotFoundError
        The file does not exist (the message names it).
    """
    path = _check_path(path)
    local = _local(path, storage_options)
    try:
        if local is not None:
            return open(local, "rb")
        fs, p = url_to_fs(path, storage_options)
        return fs.open(p, "rb")
    except FileNotFoundError:
        msg = f"no such file: {path!r}"
        raise FileNotFoundError(msg) from None


def makedirs_for(path: str, storage_options: dict[str, Any] | None = None, *, is_dir: bool = False) -> None:
    """Create the parent directories of `path` (or `path` itself with ``is_dir=True``)."""
    path = _check_path(path)
    local = _local(path, storage_options)
    if local is not None:
        target = local if is_dir else os.path.dirname(local)
        if target:
            os.makedirs(target, exist_ok=True)
        return
    fs, p = url_to_fs(path, storage_options)
    target = p if is_dir else p.rsplit("/", 1)[0] if "/" in p else ""
    if target:
        fs.makedirs(target, exist_ok=True)


def open_output(path: str, mode: str = "wb", storage_options: dict[str, Any] | None = None) -> IO[Any]:
    """Open `path` for writing (truncating it), creating its parent directories first.

    Text modes use UTF-8 and ``newline=''`` (so that the csv module controls line endings).
    """
    path = _check_path(path)
    makedirs_for(path, storage_options)
    text = "b" not in mode
    local = _local(path, storage_options)
    if local is not None:
        if text:
            return open(local, mode, encoding="utf-8", newline="")
        return open(local, mode)
    fs, p = url_to_fs(path, storage_options)
    if text:
        return fs.open(p, mode, encoding="utf-8", newline="")
    return fs.open(p, mode)


def join_path(directory: str, *parts: str) -> str:
    """Join path segments with ``/`` (works for local paths and URLs)."""
    out = directory.rstrip("/")
    for part in parts:
        out = f"{out}/{part}" if out else part
    return out


# ------------------------------------------------------------------------------------- expansion
class DataFile(NamedTuple):
    """One file found by `expand_paths`.

    Attributes
    ----------
    path
        The file path, in the form the user gave (relative paths stay relative, URLs keep their scheme).
    partitions
        The hive ``(name, raw value)`` pairs of its directories (raw values are URL-decoded; ``None`` for
        ``__HIVE_DEFAULT_PARTITION__``): the segments below the directory that was expanded, or all the
        parent segments of a file given directly (as `pyarrow.dataset` does for a list of files).
    """

    path: str
    partitions: tuple[tuple[str, str | None], ...]


def _ignored(name: str) -> bool:
    return name.startswith((".", "_"))


def hive_segments(segments: Iterable[str]) -> tuple[tuple[str, str | None], ...]:
    """The ``(name, value)`` pairs of the ``name=value`` segments (other segments are ignored)."""
    out: list[tuple[str, str | None]] = []
    for seg in segments:
        name, sep, raw = seg.partition("=")
        if not sep or not name:
            continue
        value = unquote(raw)
        out.append((unquote(name), None if value == HIVE_NULL else value))
    return tuple(out)


def _walk_local(root: str) -> list[tuple[str, tuple[str, ...]]]:
    found: list[tuple[str, tuple[str, ...]]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _ignored(d)]
        rel = os.path.relpath(dirpath, root)
        segs = () if rel == "." else tuple(rel.split(os.sep))
        found.extend((os.path.join(dirpath, f), segs) for f in filenames if not _ignored(f))
    return found


def _walk_fs(fs: Any, root: str, user_root: str) -> list[tuple[str, tuple[str, ...]]]:
    base = root.rstrip("/")
    found: list[tuple[str, tuple[str, ...]]] = []
    for p in fs.find(base, withdirs=False):
        rel = p[len(base) :].lstrip("/") if p.startswith(base) else p.rsplit("/", 1)[-1]
        parts = rel.split("/")
        if any(_ignored(x) for x in parts):
            continue
        found.append((join_path(user_root, rel), tuple(parts[:-1])))
    return found


def _parent_segments(path: str) -> tuple[str, ...]:
    if is_url(path):
        path = path.split("://", 1)[1]
    return tuple(s for s in re.split(r"[\\/]", path)[:-1] if s)


def expand_paths(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    storage_options: dict[str, Any] | None = None,
) -> list[DataFile]:
    """Expand files and directories into the list of data files, in lexicographic path order.

    Directories are walked recursively, skipping files and directories whose name starts with ``.`` or
    ``_``. Files given directly are always kept. Duplicates are kept once.

    Raises
    ------
    FileNotFoundError
        A path that does not exist.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: dict[str, DataFile] = {}
    for raw in paths:
        path = _check_path(raw)
        local = _local(path, storage_options)
        if local is not None:
            if os.path.isdir(local):
                items = _walk_local(local)
                if local != path:  # file:// URL: give paths back as URLs
                    items = [("file://" + p, segs) for p, segs in items]
            elif os.path.exists(local):
                items = [(path, _parent_segments(local))]
            else:
                msg = f"no such file or directory: {path!r}"
                raise FileNotFoundError(msg)
        else:
            fs, p = url_to_fs(path, storage_options)
            if fs.isdir(p):
                items = _walk_fs(fs, p, path)
            elif fs.exists(p):
                items = [(path, _parent_segments(p))]
            else:
                msg = f"no such file or directory: {path!r}"
                raise FileNotFoundError(msg)
        for file_path, segs in items:
            found.setdefault(file_path, DataFile(file_path, hive_segments(segs)))
    return [found[k] for k in sorted(found)]


# ------------------------------------------------------------------------------------ partitions
class HivePartitions(NamedTuple):
    """Typed hive partition columns of a list of `DataFile`s.

    Attributes
    ----------
    fields
        ``(name, pyarrow type)`` in order of first appearance: ``int32`` when every non-null value of the
        field parses as an Arrow int32, else ``string`` (as ``pyarrow.dataset`` infers them).
    values
        One ``{name: Python value}`` dict per file (``None`` for null or absent).
    """

    fields: list[tuple[str, Any]]
    values: list[dict[str, Any]]


def hive_partitions(files: Sequence[DataFile]) -> HivePartitions:
    """Type the partition values of `files` as ``pyarrow.dataset(..., partitioning='hive')`` does."""
    names: list[str] = []
    for f in files:
        for name, _ in f.partitions:
            if name not in names:
                names.append(name)
    if not names:
        return HivePartitions([], [{} for _ in files])
    pa = require("pyarrow")
    per_file = [dict(f.partitions) for f in files]
    fields: list[tuple[str, Any]] = []
    typed: dict[str, list[Any]] = {}
    for name in names:
        column = [d.get(name) for d in per_file]
        strings = pa.array(column, pa.string())
        try:
            ints = strings.cast(pa.int32()) if strings.null_count < len(strings) else None
        except pa.ArrowInvalid:
            ints = None
        if ints is None:  # not all int32, or no non-null value to infer from
            fields.append((name, pa.string()))
            typed[name] = column
        else:
            fields.append((name, pa.int32()))
            typed[name] = ints.to_pylist()
    values = [{name: typed[name][i] for name in names} for i in range(len(files))]
    return HivePartitions(fields, values)


def hive_directory(pairs: Iterable[tuple[str, Any]]) -> str:
    """The relative directory ``name=value/...`` for partition values (``None`` is the hive null)."""
    segs = []
    for name, value in pairs:
        text = HIVE_NULL if value is None else _partition_text(value)
        segs.append(f"{quote(str(name), safe='')}={quote(text, safe='')}")
    return "/".join(segs)


def _partition_text(value: Any) -> str:
    isoformat = getattr(value, "isoformat", None)
    if isoformat is not None and not isinstance(value, str):
        return isoformat()
    return str(value)

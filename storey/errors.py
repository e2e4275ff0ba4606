"""Error classes shared by every part of storey (spec STEPS.md §1.3).

Messages are lowercase, without a trailing period, and say where (the step), what was expected and what
was got.
"""

from __future__ import annotations

__all__ = [
    "CSVParseError",
    "FlowError",
    "MissingFieldError",
    "PerformanceWarning",
    "RedisError",
    "SQLiteError",
    "SchemaMismatchError",
    "StoreyError",
    "V3ioError",
]


class StoreyError(Exception):
    """Base class of every storey error."""


class FlowError(StoreyError):
    """A running flow failed.

    ``__cause__`` is the original exception; ``step`` names the failing step and ``event_id`` the event
    (``None`` during termination).
    """

    def __init__(self, message: str, step: str | None = None, event_id: object = None) -> None:
        super().__init__(message)
        self.step = step
        self.event_id = event_id


class MissingFieldError(StoreyError, KeyError):
    """A field that a step needs is absent from the body (or a time is null)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CSVParseError(StoreyError, ValueError):
    """A CSV row cannot be parsed; ``path`` and ``line`` (1-based physical line) say where."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class SchemaMismatchError(StoreyError, ValueError):
    """The stored aggregation schema and the step definition disagree."""


class V3ioError(StoreyError):
    """V3IO rejected an operation, or kept failing after the retries."""


class RedisError(StoreyError):
    """Redis rejected an operation, or kept failing after the retries."""


class SQLiteError(StoreyError):
    """SQLite rejected an operation, or kept failing after the retries."""


class PerformanceWarning(UserWarning):
    """`storey.frames` fell back to row-by-row calls of a user function."""

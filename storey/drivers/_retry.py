"""Retry with exponential backoff, shared by every driver (spec STEPS.md §9.2, "Retries and failures").

A transient failure (what counts as one is decided by each driver's ``is_transient`` predicate) is retried
after ``retry_backoff_secs``, then twice that, and so on, never more than 5 s apart, at most ``max_retries``
times. Any other failure, and a transient one that outlasts the retries, is raised as the driver's error
class with the last error as ``__cause__``. A `StoreyError` raised by the operation itself (for example a
value the driver cannot encode) is already the final word and is re-raised unchanged, without retries.

Examples
--------
>>> import asyncio
>>> from storey.errors import SQLiteError
>>> attempts = []
>>> async def flaky():
...     attempts.append(1)
...     if len(attempts) < 3:
...         raise ConnectionResetError("reset")
...     return "ok"
>>> policy = RetryPolicy(retry_backoff_secs=0.0)
>>> asyncio.run(policy.call(flaky, is_transient=lambda e: isinstance(e, OSError),
...                         error_class=SQLiteError, what="sqlite driver: save_key"))
'ok'
>>> len(attempts)
3
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from storey.errors import StoreyError

__all__ = ["MAX_RETRY_DELAY_SECS", "RetryPolicy"]

T = TypeVar("T")
"""The result type of the retried operation."""

MAX_RETRY_DELAY_SECS = 5.0
"""No two attempts are ever more than this many seconds apart."""

logger = logging.getLogger("storey.drivers")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a driver retries transient failures.

    Parameters
    ----------
    retry_backoff_secs
        The delay before the first retry; each further retry waits twice as long, up to 5 s.
    max_retries
        How many times a transient failure is retried (so at most ``max_retries + 1`` attempts).

    Examples
    --------
    >>> list(RetryPolicy(retry_backoff_secs=1.0, max_retries=5).delays())
    [1.0, 2.0, 4.0, 5.0, 5.0]
    """

    retry_backoff_secs: float = 0.1
    max_retries: int = 5

    def __post_init__(self) -> None:
        backoff = self.retry_backoff_secs
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not math.isfinite(backoff):
            msg = f"retry_backoff_secs must be a finite number of seconds, got {backoff!r}"
            raise TypeError(msg)
        if backoff < 0:
            msg = f"retry_backoff_secs must be >= 0, got {backoff!r}"
            raise ValueError(msg)
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int):
            msg = f"max_retries must be an int, got {retries!r}"
            raise TypeError(msg)
        if retries < 0:
            msg = f"max_retries must be >= 0, got {retries!r}"
            raise ValueError(msg)

    def delays(self) -> Iterator[float]:
        """The sleep before each retry, in order (``max_retries`` values)."""
        delay = float(self.retry_backoff_secs)
        for _ in range(self.max_retries):
            yield min(delay, MAX_RETRY_DELAY_SECS)
            delay *= 2

    async def call(
        self,
        op: Callable[[], Awaitable[T]],
        *,
        is_transient: Callable[[BaseException], bool],
        error_class: type[StoreyError],
        what: str,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> T:
        """Await ``op()`` and retry it on transient failures.

        Parameters
        ----------
        op
            A function returning a fresh awaitable for every attempt. It must be safe to repeat (drivers
            write whole values, so a repeated write never applies anything twice).
        is_transient
            The driver's predicate: is this exception worth retrying?
        error_class
            The driver's error class (`SQLiteError`, `RedisError`, `V3ioError`).
        what
            Where the failure happened, for the message, e.g. ``"redis driver: save_key of key 'k' in
            table 't'"``.
        sleep
            Injected in tests.

        Raises
        ------
        StoreyError
            ``error_class`` with the last error as ``__cause__``, or a `StoreyError` raised by ``op``
            itself, unchanged.
        """
        delays = self.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await op()
            except StoreyError:
                raise
            except Exception as exc:
                transient = is_transient(exc)
                delay = next(delays, None) if transient else None
                if delay is None:
                    raise error_class(_failure_message(what, exc, attempt, transient)) from exc
                logger.warning(
                    "%s: transient failure (%s), retry %d in %.3g s", what, _describe(exc), attempt, delay
                )
            await sleep(delay)


def _failure_message(what: str, exc: BaseException, attempts: int, transient: bool) -> str:
    if transient:
        return f"{what}: still failing after {attempts} attempts: {_describe(exc)}"
    return f"{what}: {_describe(exc)}"


def _describe(exc: BaseException) -> str:
    """``Type: message`` (some clients, redis-py among them, override ``repr`` with a bare category)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

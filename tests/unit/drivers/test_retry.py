"""`RetryPolicy`: exponential backoff shared by the drivers (STEPS.md §9.2)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storey.drivers._retry import MAX_RETRY_DELAY_SECS, RetryPolicy
from storey.errors import RedisError, SQLiteError, StoreyError


class Flaky:
    """Fails with the given errors, one per call, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


def recorder() -> tuple[list[float], Callable[[float], object]]:
    slept: list[float] = []

    async def sleep(secs: float) -> None:
        slept.append(secs)

    return slept, sleep


@given(backoff=st.floats(min_value=0, max_value=10), retries=st.integers(min_value=0, max_value=12))
def test_delays_double_and_are_capped(backoff: float, retries: int) -> None:
    delays = list(RetryPolicy(backoff, retries).delays())
    assert delays == [min(backoff * 2**i, MAX_RETRY_DELAY_SECS) for i in range(retries)]


def test_defaults() -> None:
    assert list(RetryPolicy().delays()) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])


async def test_transient_failures_are_retried_until_success() -> None:
    op = Flaky(ConnectionResetError("reset"), ConnectionRefusedError("refused"))
    slept, sleep = recorder()
    result = await RetryPolicy(0.5, 5).call(
        op, is_transient=transient, error_class=RedisError, what="w", sleep=sleep
    )
    assert result == "ok"
    assert op.calls == 3
    assert slept == [0.5, 1.0]


async def test_exhausted_retries_raise_the_driver_error_with_the_last_cause() -> None:
    errors = [ConnectionResetError(f"reset {i}") for i in range(4)]
    op = Flaky(*errors)
    slept, sleep = recorder()
    with pytest.raises(
        SQLiteError, match=r"^save it: still failing after 4 attempts: ConnectionResetError: reset 3$"
    ) as info:
        await RetryPolicy(1.0, 3).call(
            op, is_transient=transient, error_class=SQLiteError, what="save it", sleep=sleep
        )
    assert info.value.__cause__ is errors[3]
    assert op.calls == 4
    assert slept == [1.0, 2.0, 4.0]


async def test_other_failures_are_not_retried() -> None:
    error = ValueError("bad request")
    op = Flaky(error)
    slept, sleep = recorder()
    with pytest.raises(RedisError, match=r"^w: ValueError: bad request$") as info:
        await RetryPolicy().call(op, is_transient=transient, error_class=RedisError, what="w", sleep=sleep)
    assert info.value.__cause__ is error
    assert (op.calls, slept) == (1, [])


async def test_storey_errors_pass_through_unchanged() -> None:
    error = StoreyError("cannot store attribute 'x'")
    op = Flaky(error)
    with pytest.raises(StoreyError) as info:
        await RetryPolicy().call(op, is_transient=lambda e: True, error_class=RedisError, what="w")
    assert info.value is error
    assert op.calls == 1


async def test_zero_retries() -> None:
    op = Flaky(ConnectionResetError())
    with pytest.raises(RedisError, match="after 1 attempts"):
        await RetryPolicy(0.1, 0).call(op, is_transient=transient, error_class=RedisError, what="w")


async def test_cancellation_is_not_swallowed() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(
        RetryPolicy().call(forever, is_transient=lambda e: True, error_class=RedisError, what="w")
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("backoff", "retries", "error"),
    [
        (-1, 5, ValueError),
        (0.1, -1, ValueError),
        ("1", 5, TypeError),
        (0.1, 2.0, TypeError),
        (float("inf"), 1, TypeError),
        (True, 1, TypeError),
    ],
)
def test_invalid_settings(backoff: object, retries: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"retry_backoff_secs|max_retries"):
        RetryPolicy(backoff, retries)  # type: ignore[arg-type]

"""RedisDriver pieces that need no server: construction and the transient-error predicate."""

from __future__ import annotations

import pytest
from redis import exceptions

from storey.drivers import RedisDriver
from storey.drivers.redis import _is_transient


def test_a_url_or_a_client_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ValueError, match="pass redis_url or redis_client, or set the REDIS_URL"):
        RedisDriver()
    monkeypatch.setenv("REDIS_URL", "redis://example:1/0")
    assert "redis://example:1/0" in repr(RedisDriver())
    assert "<client>" in repr(RedisDriver(redis_client=object()))


def test_key_layout() -> None:
    driver = RedisDriver("redis://127.0.0.1:1/0", key_prefix="app:")
    assert driver.record_key("/bigdata/users", "u.1") == "app:/bigdata/users:u.1"
    assert driver.schema_key("/bigdata/users") == "app:/bigdata/users:.schema"


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (exceptions.ConnectionError("Error 111 connecting"), True),
        (exceptions.TimeoutError("Timeout reading from socket"), True),
        (exceptions.BusyLoadingError("Redis is loading the dataset in memory"), True),
        (exceptions.ResponseError("LOADING Redis is loading the dataset in memory"), True),
        (exceptions.ResponseError("BUSY Redis is busy running a script"), True),
        (exceptions.ResponseError("TRYAGAIN Multiple keys request during rehashing"), True),
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError(), True),
        (
            exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
            False,
        ),
        (exceptions.AuthenticationError("invalid password"), False),  # a ConnectionError in redis-py
        (exceptions.AuthorizationError("NOPERM"), False),
        (exceptions.DataError("Invalid input"), False),
        (ValueError("x"), False),
    ],
)
def test_transient_errors(exc: BaseException, transient: bool) -> None:
    assert _is_transient(exc) is transient

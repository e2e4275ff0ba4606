"""Shared test fixtures: services on loopback, and the driver parametrization.

Services are real processes or servers on 127.0.0.1, started by fixtures. When a service binary is missing
the fixture **fails** if ``STOREY_REQUIRE_SERVICES=1`` (CI sets it) and otherwise skips with a loud reason;
it never skips silently. Each service has its own section below; add new ones the same way.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from storey.testing.fixtures import v3io_emulator, v3io_emulator_thread, v3io_url  # noqa: F401

# -- hypothesis ---------------------------------------------------------------------------------------------
# CI (``STOREY_REQUIRE_SERVICES=1``) runs the property tests with a fixed seed, so a landing is never blocked by
# an example drawn for the first time; local runs keep exploring new examples (and their database keeps the
# failures found), which is where new edge cases are meant to be found.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("STOREY_REQUIRE_SERVICES") == "1":
    settings.load_profile("ci")

# -- services: common ---------------------------------------------------------------------------------------


def require_service_binary(name: str, install_hint: str) -> str:
    """The path of a service binary, or fail (``STOREY_REQUIRE_SERVICES=1``) / skip loudly."""
    path = shutil.which(name)
    if path is not None:
        return path
    msg = f"SERVICE MISSING: the {name!r} binary is not on PATH ({install_hint})"
    if os.environ.get("STOREY_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{msg}; STOREY_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(f"{msg}; these tests did NOT run")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- services: redis-server ---------------------------------------------------------------------------------


class RedisServer:
    """A throwaway ``redis-server`` on loopback: no persistence, its own port; can be stopped and restarted.

    ``url`` stays the same across `stop`/`start`, so a client sees the restart as a lost connection.
    """

    def __init__(self, binary: str, *extra_args: str) -> None:
        self.binary = binary
        self.extra_args = extra_args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        for _ in range(5):
            args = [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            log = Path(tempfile.gettempdir()) / f"storey-redis-{self.port}.log"
            args += ["--logfile", str(log)]
            self.proc = subprocess.Popen(
                [*args, *self.extra_args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
            if self._wait_ready(10.0):
                return self
            self.stop()
            self.port = free_port()  # somebody took the port: try another one
        msg = f"redis-server did not start on 127.0.0.1 (see its log {log})"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Kill the server (SIGKILL: like a crash) and wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if self.ping():
                return True
            time.sleep(0.005)
        return False


def _redis_binary() -> str:
    return require_service_binary("redis-server", "install it with `apt-get install -y redis-server`")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One ``redis-server`` for the whole session; tests isolate themselves with a unique key prefix."""
    server = RedisServer(_redis_binary()).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start private servers (extra ``redis-server`` arguments allowed) that a test may stop and restart."""
    binary = _redis_binary()
    servers: list[RedisServer] = []

    def make(*extra_args: str) -> RedisServer:
        server = RedisServer(binary, *extra_args).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# -- drivers: one fixture, every backend --------------------------------------------------------------------
#
# `driver_factory` runs a test once per backend. To add a backend (e.g. V3IO), add a builder to
# _DRIVER_BUILDERS (it receives the pytest request, a temporary directory, a per-test namespace and the
# driver keyword arguments), its marks to _DRIVER_MARKS, and, if its table paths need a shape, to
# _TABLE_PATH_FORMATS.


def _build_noop(request: pytest.FixtureRequest, tmp: Path, namespace: str, kwargs: dict[str, Any]) -> Any:
    from storey.drivers import NoopDriver

    return NoopDriver(**kwargs)


def _build_sqlite_memory(
    request: pytest.FixtureRequest, tmp: Path, namespace: str, kwargs: dict[str, Any]
) -> Any:
    from storey.drivers import SQLiteDriver

    return SQLiteDriver(":memory:", **kwargs)


def _build_sqlite_file(
    request: pytest.FixtureRequest, tmp: Path, namespace: str, kwargs: dict[str, Any]
) -> Any:
    from storey.drivers import SQLiteDriver

    return SQLiteDriver(tmp / "store.db", **kwargs)


def _build_redis(request: pytest.FixtureRequest, tmp: Path, namespace: str, kwargs: dict[str, Any]) -> Any:
    from storey.drivers import RedisDriver

    server = request.getfixturevalue("redis_server")
    return RedisDriver(server.url, key_prefix=f"{namespace}:", **kwargs)


def _build_v3io(request: pytest.FixtureRequest, tmp: Path, namespace: str, kwargs: dict[str, Any]) -> Any:
    from storey.drivers.v3io import V3ioDriver

    emulator = request.getfixturevalue("v3io_emulator_thread")  # storey.testing.fixtures
    return V3ioDriver(emulator.url, access_key="storey-test", **kwargs)


_DRIVER_BUILDERS: dict[str, Callable[[pytest.FixtureRequest, Path, str, dict[str, Any]], Any]] = {
    "noop": _build_noop,
    "sqlite-memory": _build_sqlite_memory,
    "sqlite-file": _build_sqlite_file,
    "redis": _build_redis,
    "v3io": _build_v3io,
}
_DRIVER_MARKS: dict[str, list[pytest.MarkDecorator]] = {
    "redis": [pytest.mark.redis],
    "v3io": [pytest.mark.v3io],
}
_PERSISTENT = {"sqlite-file", "redis", "v3io"}  # a new driver object sees the data of an earlier one
_TABLE_PATH_FORMATS: dict[str, str] = {"v3io": "/bigdata/{}"}


class DriverFactory:
    """Makes drivers of one backend for a test; all of them are closed at teardown.

    Attributes
    ----------
    name
        The backend (``'noop'``, ``'sqlite-memory'``, ``'sqlite-file'``, ``'redis'``, ...).
    persistent
        Whether a new driver object from this factory sees the data saved through an earlier one.
    """

    def __init__(self, name: str, request: pytest.FixtureRequest, tmp: Path) -> None:
        self.name = name
        self.persistent = name in _PERSISTENT
        self._request = request
        self._tmp = tmp
        self._namespace = f"t{uuid.uuid4().hex[:12]}"
        self.created: list[Any] = []

    def __call__(self, **kwargs: Any) -> Any:
        driver = _DRIVER_BUILDERS[self.name](self._request, self._tmp, self._namespace, kwargs)
        self.created.append(driver)
        return driver

    def table_path(self, name: str) -> str:
        """A table path of the shape this backend expects."""
        return _TABLE_PATH_FORMATS.get(self.name, "{}").format(name)

    async def close_all(self) -> None:
        for driver in self.created:
            await driver.close()


@pytest.fixture(
    params=[pytest.param(name, marks=_DRIVER_MARKS.get(name, []), id=name) for name in _DRIVER_BUILDERS]
)
async def driver_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A `DriverFactory`; the test runs once per backend."""
    factory = DriverFactory(request.param, request, tmp_path)
    yield factory
    await factory.close_all()

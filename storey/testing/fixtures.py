"""pytest fixtures for the V3IO emulator.

Use them from a ``conftest.py``::

    from storey.testing.fixtures import v3io_emulator, v3io_emulator_thread, v3io_url  # noqa: F401

- ``v3io_emulator``: an async fixture; a `V3ioEmulator` serving on the test's event loop (use the aio SDK
  or `V3ioDriver` from the test; run synchronous clients with ``asyncio.to_thread``).
- ``v3io_emulator_thread``: a `V3ioEmulator` on a background thread, for synchronous tests.
- ``v3io_url``: the URL of ``v3io_emulator``.

If aiohttp or the v3io SDK is missing, the fixtures fail when ``STOREY_REQUIRE_SERVICES=1`` (as in CI) and
skip with a loud reason otherwise.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from storey.testing.v3io_emulator import V3ioEmulator

__all__ = ["v3io_emulator", "v3io_emulator_thread", "v3io_url"]


def _require_packages() -> None:
    for module in ("aiohttp", "v3io"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            msg = f"the V3IO emulator tests need {module!r} (pip install storey[test]): {exc}"
            if os.environ.get("STOREY_REQUIRE_SERVICES") == "1":
                pytest.fail(msg)
            pytest.skip(msg)


@pytest.fixture
async def v3io_emulator() -> AsyncIterator[V3ioEmulator]:
    """A `V3ioEmulator` running on the test's event loop."""
    _require_packages()
    async with V3ioEmulator() as emu:
        yield emu


@pytest.fixture
def v3io_emulator_thread() -> Iterator[V3ioEmulator]:
    """A `V3ioEmulator` running on a background thread."""
    _require_packages()
    emu = V3ioEmulator().start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def v3io_url(v3io_emulator: V3ioEmulator) -> str:
    """The endpoint of the ``v3io_emulator`` fixture (pass it as ``webapi``)."""
    return v3io_emulator.url

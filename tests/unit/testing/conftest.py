"""The V3IO emulator fixtures (also registered by the root conftest for the driver contract suite)."""

from storey.testing.fixtures import v3io_emulator, v3io_emulator_thread, v3io_url  # noqa: F401

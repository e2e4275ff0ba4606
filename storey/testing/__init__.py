"""Test utilities shipped with storey (not imported by ``import storey``).

- `storey.testing.v3io_emulator`: `V3ioEmulator`, a loopback V3IO data-service (and framesd) server.
"""

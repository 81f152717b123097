"""A pymodbus TCP server as the third-party peer of the Modbus tests.

Import side (`tests/` is on sys.path): `pymodbus_tcp(context)`, an async context manager serving
`context` on an ephemeral 127.0.0.1 port; yields the port, shuts the server down on exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer


@asynccontextmanager
async def pymodbus_tcp(context: ModbusServerContext) -> AsyncIterator[int]:
    server = ModbusTcpServer(context, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    try:
        yield server.transport.sockets[0].getsockname()[1]
    finally:
        await server.shutdown()

"""A simulated plant of pymodbus TCP servers and an FTP server, for benchmarks that use them from
another process.

A module of its own so that a `spawn`ed process can import it however the benchmark was loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
from multiprocessing.connection import Connection


def serve_pymodbus_plant(devices: int, registers: int, unit_id: int, pipe: Connection) -> None:
    """Process entry point: `devices` pymodbus TCP servers on 127.0.0.1 of `registers` holding
    registers each (register r of device k holds k + r); sends the ports, serves until told."""
    import logging
    import warnings

    # pymodbus 3.x warns at each context that v4 renames it: noise in the figures' output
    warnings.simplefilter("ignore")
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    from pymodbus.datastore import (
        ModbusDeviceContext,
        ModbusSequentialDataBlock,
        ModbusServerContext,
    )
    from pymodbus.server import ModbusTcpServer

    async def main() -> None:
        servers = []
        for k in range(devices):
            image = [(k + r) & 0xFFFF for r in range(registers)]
            block = ModbusSequentialDataBlock(1, image)  # type: ignore[no-untyped-call]
            context = ModbusServerContext(devices={unit_id: ModbusDeviceContext(hr=block)},
                                          single=False)
            server = ModbusTcpServer(context, address=("127.0.0.1", 0))
            await server.serve_forever(background=True)
            servers.append(server)
        pipe.send([s.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
                   for s in servers])
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]

    asyncio.run(main())


def serve_ftp(root: str, user: str, password: str, pipe: Connection) -> None:
    """Process entry point: a pyftpdlib server on 127.0.0.1 rooted at `root`; sends its port,
    serves until anything arrives on `pipe`."""
    import logging
    import threading

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer,
                                              "passive_ports": None})
    server = FTPServer(("127.0.0.1", 0), handler)
    pipe.send(server.address[1])
    threading.Thread(target=lambda: (pipe.recv(), server.close_all()), daemon=True).start()
    with contextlib.suppress(OSError, ValueError):  # close_all from the watcher thread ends it
        server.serve_forever(timeout=0.5, blocking=True, handle_exit=False)

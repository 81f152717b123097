"""SunSpec devices served by the pymodbus server on 127.0.0.1, and a RegisterReader over pymodbus'
client, for the discovery tests.

Register images are built here from model ids and lengths written out by hand (not from the code
under test), so a wrong layout in the generator cannot hide behind the same wrong layout here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from waiting import wait_until

from config.model import Quality
from pipeline.drivers._base import ModbusRequestError

# The simulator logs a traceback for every unit id it does not serve; those are expected here.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

SUNS = [0x5375, 0x6E53]


def text_registers(text: str, registers: int) -> list[int]:
    raw = text.encode("utf-8").ljust(2 * registers, b"\x00")[: 2 * registers]
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def common_model(mn: str, md: str, opt: str, vr: str, sn: str, length: int = 66) -> list[int]:
    body = (text_registers(mn, 16) + text_registers(md, 16) + text_registers(opt, 8)
            + text_registers(vr, 8) + text_registers(sn, 16) + [1, 0x8000])
    return [1, length, *body[:length]]


def model(model_id: int, length: int, body: Sequence[int] = ()) -> list[int]:
    data = list(body) + [0] * (length - len(body))
    return [model_id, length, *data[:length]]


@dataclass
class SunSpecImage:
    """Registers of one device from `base`: "SunS", then the models, then the end marker."""

    models: list[list[int]]
    base: int = 40000
    end: list[int] = field(default_factory=lambda: [0xFFFF, 0])
    extra: Mapping[int, Sequence[int]] = field(default_factory=dict)

    def blocks(self) -> list[tuple[int, list[int]]]:
        regs = list(SUNS)
        for m in self.models:
            regs += m
        regs += self.end
        return [(self.base, regs)] + [(a, list(v)) for a, v in self.extra.items()]


def sim_device(unit_id: int, blocks: Sequence[tuple[int, Sequence[int]]]) -> SimDevice:
    return SimDevice(unit_id, simdata=[SimData(address, values=list(values),
                                               datatype=DataType.REGISTERS)
                                       for address, values in sorted(blocks)])


@contextlib.asynccontextmanager
async def modbus_server(devices: Mapping[int, Sequence[tuple[int, Sequence[int]]]]
                        ) -> AsyncIterator[int]:
    """A pymodbus TCP server on an ephemeral loopback port; yields the port.

    Unit ids not in `devices` get no answer at all (an empty bus address); pymodbus 3.16 would
    answer them with exception 0x04, so the reply is dropped on its way out.
    """
    served = set(devices)

    def drop_absent(sending: bool, packet: bytes) -> bytes:
        if sending and len(packet) > 6 and packet[6] not in served:
            return b""
        return packet

    server = ModbusTcpServer([sim_device(u, b) for u, b in devices.items()],
                             address=("127.0.0.1", 0), trace_packet=drop_absent)
    task = asyncio.create_task(server.serve_forever(), name="pymodbus-server")
    try:
        await wait_until(lambda: server.transport is not None, 2)
        assert server.transport is not None
        yield int(server.transport.sockets[0].getsockname()[1])
    finally:
        await server.shutdown()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class PymodbusReader:
    """`RegisterReader` over pymodbus' AsyncModbusTcpClient (tests only)."""

    def __init__(self, client: AsyncModbusTcpClient) -> None:
        self._client = client

    async def read_registers(self, unit_id: int, function: int, address: int, count: int,
                             timeout_ms: int) -> list[int]:
        assert function == 3
        try:
            reply = await self._client.read_holding_registers(address, count=count,
                                                              device_id=unit_id)
        except ConnectionException as err:
            raise ModbusRequestError(str(err), quality=Quality.DISCONNECTED) from err
        except ModbusException as err:
            raise ModbusRequestError(f"no answer within {timeout_ms} ms",
                                     quality=Quality.TIMEOUT) from err
        if reply.isError():
            raise ModbusRequestError(f"exception 0x{reply.exception_code:02X}",
                                     quality=Quality.EXCEPTION,
                                     exception_code=reply.exception_code)
        return list(reply.registers)


@contextlib.asynccontextmanager
async def pymodbus_reader(port: int, timeout_ms: int) -> AsyncIterator[PymodbusReader]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=timeout_ms / 1000, retries=0)
    await client.connect()
    try:
        yield PymodbusReader(client)
    finally:
        client.close()

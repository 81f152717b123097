"""The driver registry: which driver polls a daq.csv device, and how its read plans are built.

`new_driver` and `read_plans` hold one line per driver (and per definition protocol); adding a
driver is a line in each, plus what it needs from `DriverContext`.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.model import DefinitionFile, DeviceKind, Protocol
from pipeline.clock import SYSTEM_CLOCK, Clock
from pipeline.drivers._base import DeviceError, ProtocolDriver, ReadPlan
from pipeline.drivers.io import IoBackend, IoDriver
from pipeline.drivers.modbus.planner import plan_reads, polled_variables
from pipeline.drivers.modbus.rtu import ModbusRtuDriver
from pipeline.drivers.modbus.tcp import ModbusTcpDriver
from pipeline.drivers.modbus.trace import TraceHook
from pipeline.drivers.tic import TicDriver, TicReader

__all__ = ["DriverContext", "new_driver", "read_plans"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverContext:
    """What building a driver may take; each driver uses its part."""

    clock: Clock = SYSTEM_CLOCK
    trace: TraceHook | None = None
    tcp_inter_frame_ms: int = 0        # daq.csv `tcpInterFrameMs`
    tic_reader: TicReader | None = None    # the `TIC_Port` reader
    io_backend: IoBackend | None = None    # the simulator or a Modbus I/O module


def new_driver(kind: DeviceKind, context: DriverContext) -> ProtocolDriver:
    """A driver for devices of `kind`, not yet opened (the caller opens and closes it)."""
    c, tcp_ms = context, context.tcp_inter_frame_ms
    match kind:  # the registry: one line per driver
        case DeviceKind.MODBUS_TCP: return ModbusTcpDriver(inter_frame_ms=tcp_ms, trace=c.trace,
                                                           clock=c.clock)
        case DeviceKind.MODBUS_RTU: return ModbusRtuDriver(trace=c.trace, clock=c.clock)
        case DeviceKind.TIC if c.tic_reader: return TicDriver(c.tic_reader)
        case DeviceKind.IO if c.io_backend: return IoDriver(c.io_backend, clock=c.clock)
    raise DeviceError(f"no {kind} driver: its context lacks what the driver reads through")


def read_plans(definition: DefinitionFile, max_gap: int) -> tuple[ReadPlan, ReadPlan | None]:
    """The poll's plan (actions 2, 4, 8, 9) and the parameters' plan (1, 9; None without any).

    `max_gap` is `DAQ_ModbusMaxGap`. Build once per definition file and keep them.
    """
    match definition.protocol:  # one line per protocol
        case Protocol.MODBUS_TCP | Protocol.MODBUS_RTU: return _modbus_plans(definition, max_gap)
        case Protocol.IO | Protocol.TIC: return _every_variable_plans(definition)


def _every_variable_plans(definition: DefinitionFile) -> tuple[ReadPlan, ReadPlan | None]:
    """Plans naming the variables themselves: a TIC meter's address (`ADCO`, `ADSC`) and
    contract labels are parameters (action 1) like a Modbus device's."""
    parameters = tuple(v for v in definition.variables if v.action.is_parameter)
    return (ReadPlan(definition=definition,
                     variables=tuple(v for v in definition.variables if v.action.is_polled)),
            ReadPlan(definition=definition, variables=parameters) if parameters else None)


def _modbus_plans(definition: DefinitionFile, max_gap: int) -> tuple[ReadPlan, ReadPlan | None]:
    parameters = polled_variables(definition, parameters=True)
    return (plan_reads(definition, max_gap),
            plan_reads(definition, max_gap, variables=parameters) if parameters else None)

"""Modbus TCP and RTU acquisition: codec, request planner, links, drivers and the RTU tunnel."""

from pipeline.drivers.modbus.codec import EncodeError
from pipeline.drivers.modbus.link import WriteReplaced
from pipeline.drivers.modbus.planner import ReadRequest, plan_reads, polled_variables, split_read
from pipeline.drivers.modbus.rtu import ModbusRtuDriver, RtuBus
from pipeline.drivers.modbus.tcp import ModbusTcpDriver, TcpConnection
from pipeline.drivers.modbus.trace import FrameTrace, ModbusCounters, TraceHook, format_trace_line
from pipeline.drivers.modbus.tunnel import RtuTunnel, tunnel_for

__all__ = [
    "EncodeError",
    "FrameTrace",
    "ModbusCounters",
    "ModbusRtuDriver",
    "ModbusTcpDriver",
    "ReadRequest",
    "RtuBus",
    "RtuTunnel",
    "TcpConnection",
    "TraceHook",
    "WriteReplaced",
    "format_trace_line",
    "plan_reads",
    "polled_variables",
    "split_read",
    "tunnel_for",
]

"""`sunpm modbus read HOST:PORT --unit N --def FILE [--json]`: one read of a device, for
commissioning.

Every Modbus variable of the definition file is read once (whatever its action, scale factors
included) with the same planner and driver as the gateway, and printed with its raw value, its
scaled value (`CoefA × raw + CoefB`, exact, spec/formats.md §9.3), unit and quality code.
Exit code: 0 when at least one variable read good, 1 when none did, 2 when the file or the
address is unusable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from config import ConfigError, parse_definition
from config.model import DefinitionFile, Device, Quality
from pipeline.drivers._base import Readings
from pipeline.drivers.modbus.codec import scaled_value, value_text
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.tcp import ModbusTcpDriver


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("modbus", help="talk to a Modbus device directly")
    sub = parser.add_subparsers(dest="modbus_command", required=True, metavar="ACTION")
    read = sub.add_parser("read", help="read every variable of a definition file once")
    read.add_argument("target", metavar="HOST:PORT", help="device address (port 502 if omitted)")
    read.add_argument("--unit", type=int, default=1, help="unit id (1)")
    read.add_argument("--def", dest="definition", type=Path, required=True, metavar="FILE",
                      help="definition file")
    read.add_argument("--timeout", type=int, default=1000, metavar="MS",
                      help="answer timeout in ms (1000)")
    read.add_argument("--max-gap", type=int, default=0, metavar="N",
                      help="DAQ_ModbusMaxGap: largest hole a read may span (0)")
    read.add_argument("--json", action="store_true", help="print JSON")
    read.set_defaults(handler=_read)


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, 502
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{port}' is not a TCP port")
    return host.strip("[]"), int(port)


def _rows(definition: DefinitionFile, readings: Readings) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for var in definition.variables:
        reading = readings.values.get(var.index)
        if reading is None:
            continue
        raw = None if reading.value is None else value_text(reading.value)
        scaled = None if reading.value is None else value_text(scaled_value(var, reading.value))
        rows.append({"index": var.index, "name": var.name, "raw": raw, "value": scaled,
                     "unit": var.unit, "quality": int(reading.quality)})
    return rows


async def _poll(host: str, port: int, unit: int, timeout_ms: int, max_gap: int,
                definition: DefinitionFile) -> Readings:
    everything = [v for v in definition.variables if v.modbus is not None]
    plan = plan_reads(definition, max_gap, variables=everything)
    device = Device(line=0, index="1", interface=f"{host}:{port}", name=f"{host}:{port}",
                    address=unit, timeout_ms=timeout_ms)
    driver = ModbusTcpDriver()
    try:
        return await driver.read(device, plan)
    finally:
        await driver.close()


def _read(args: argparse.Namespace) -> int:
    try:
        host, port = _target(args.target)
        data = args.definition.read_bytes()
        definition = parse_definition(data, args.definition.name).value
    except (ValueError, OSError, ConfigError) as err:
        print(f"sunpm modbus read: {err}", file=sys.stderr)
        return 2
    if not definition.protocol.is_modbus:
        print(f"sunpm modbus read: {args.definition.name}: protocol '{definition.protocol}' is "
              "not Modbus", file=sys.stderr)
        return 2
    readings = asyncio.run(_poll(host, port, args.unit, args.timeout, args.max_gap, definition))
    rows = _rows(definition, readings)
    if args.json:
        print(json.dumps({"target": f"{host}:{port}", "unit": args.unit,
                          "definition": definition.file_name, "requests": readings.requests,
                          "variables": rows}, ensure_ascii=False))
    else:
        for row in rows:
            shown = "-" if row["value"] is None else f"{row['value']} {row['unit']}".rstrip()
            print(f"{row['index']:>6} {row['name']:<32} {shown:<24} quality {row['quality']}")
    good = sum(1 for r in readings.values.values() if r.quality in (Quality.GOOD,))
    return 0 if good else 1

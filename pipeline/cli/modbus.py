"""`sunpm modbus read HOST:PORT --unit N [--unit M …] --def FILE [--json] [--watch [S]]`: read
devices directly, for commissioning.

Every Modbus variable of the definition file is read (whatever its action, scale factors
included) with the same planner and driver as the gateway, and printed with its scaled value
(`CoefA × raw + CoefB`, exact, docs/formats.md §9.3), unit and quality code, then one summary
line per unit (good, failed by quality code, requests) and a legend of the codes shown. A unit
where nothing read good gets its summary line only. `--json` prints one object per unit and read,
one per line. `--watch` reads again every S seconds (2) until Ctrl-C, redrawing the table in place
on a terminal.

Exit code: 0 when at least one variable of each unit read good (`--watch`: when stopped), 1 when a
unit read nothing good, 2 when the file, the address or an option is unusable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from config.model import DefinitionFile
    from pipeline.drivers._base import Readings
    from pipeline.drivers.modbus.tcp import ModbusTcpDriver

#: Quality codes as docs/behaviour.md §2.2 defines them, for the legend.
QUALITY_MEANINGS: Final = {
    0: "good",
    1: "timeout: no answer in time",
    2: "Modbus exception from the device",
    3: "bad frame (length, unit or function mismatch, CRC)",
    4: "decode error",
    5: "disconnected: no connection or port error",
    6: "not implemented (SunSpec sentinel or invalid scale factor)",
    7: "good, clock unsynchronised",
}
DEFAULT_WATCH_S: Final = 2.0
_CLEAR: Final = "\x1b[H\x1b[J"      # cursor home, clear to the end of the screen


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("modbus", help="talk to a Modbus device directly")
    sub = parser.add_subparsers(dest="modbus_command", required=True, metavar="ACTION")
    read = sub.add_parser("read", help="read every variable of a definition file",
                          epilog="quality codes: " + "; ".join(
                              f"{code} {text}" for code, text in QUALITY_MEANINGS.items())
                          + ". exit status: 0 every unit read something good, 1 a unit read "
                            "nothing good, 2 file, address or option unusable")
    read.add_argument("target", metavar="HOST:PORT", help="device address (port 502 if omitted)")
    read.add_argument("--unit", type=int, action="append", metavar="N",
                      help="unit id, 1..240 (1); repeat for several units behind one address")
    read.add_argument("--def", dest="definition", type=Path, required=True, metavar="FILE",
                      help="definition file")
    read.add_argument("--timeout", type=int, default=1000, metavar="MS",
                      help="answer timeout in ms (1000)")
    read.add_argument("--max-gap", type=int, default=0, metavar="N",
                      help="DAQ_ModbusMaxGap: largest hole a read may span (0)")
    read.add_argument("--json", action="store_true", help="one JSON object per unit and read")
    read.add_argument("--watch", type=float, nargs="?", const=DEFAULT_WATCH_S, metavar="SECONDS",
                      help=f"read again every SECONDS ({DEFAULT_WATCH_S:g}) until Ctrl-C")
    read.set_defaults(handler=_read)


def _target(text: str) -> tuple[str, int]:
    from config.decimal_text import read_integer

    host, sep, port = text.rpartition(":")
    if not sep or (host.count(":") and not host.endswith("]")):
        host, port = text, "502"        # no port, or a bare IPv6 address
    # ASCII digits (docs/formats.md §1.1): `isdigit()` takes `²` (then `int()` raises) and
    # full-width digits.
    number = read_integer(port, max_digits=5)
    if number is None or not 0 < number < 65536:
        raise ValueError(f"'{port[:40]}' is not a TCP port (1..65535)")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"'{text}' names no host")
    return host, number


def _address(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (`[::1]:502`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_options(args: argparse.Namespace) -> str | None:
    units: list[int] = args.unit or [1]
    # docs/formats.md §6 Decision: the manual's 1..240 wherever sunpm takes a unit id, and the
    # DAQ_ModbusMaxGap range: what this command reads is what daq.csv can configure.
    bad = [u for u in units if not 1 <= u <= 240]
    if bad:
        return f"--unit {bad[0]} is outside 1..240"
    if args.timeout < 1:
        return f"--timeout {args.timeout} is below 1 ms"
    if not 0 <= args.max_gap <= 124:
        return f"--max-gap {args.max_gap} is outside 0..124"
    if args.watch is not None and not args.watch > 0:
        return f"--watch {args.watch:g} is not a positive number of seconds"
    return None


def _rows(definition: DefinitionFile, readings: Readings) -> list[dict[str, object]]:
    from pipeline.drivers.modbus.codec import scaled_value, value_text

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


async def _poll(driver: ModbusTcpDriver, host: str, port: int, unit: int, timeout_ms: int,
                max_gap: int, definition: DefinitionFile) -> Readings:
    from config.model import Device
    from pipeline.drivers.modbus.planner import plan_reads

    everything = [v for v in definition.variables if v.modbus is not None]
    plan = plan_reads(definition, max_gap, variables=everything)
    address = _address(host, port)
    device = Device(line=0, index=str(unit), interface=address, name=address, address=unit,
                    timeout_ms=timeout_ms)
    return await driver.read(device, plan)


def _summary(address: str, unit: int, rows: list[dict[str, object]], requests: int,
             down: str | None) -> str:
    if down is not None and not any(int(str(r["quality"])) in (0, 7) for r in rows):
        # Every request failed unsent: counting them, or the variables, says nothing.
        return f"unit {unit} at {address}: no connection ({down}); nothing read"
    qualities = Counter(int(str(r["quality"])) for r in rows)
    good = qualities.pop(0, 0) + qualities.pop(7, 0)
    failed = ", ".join(f"{n} quality {q} ({QUALITY_MEANINGS[q].split(':')[0].split(' (')[0]})"
                       for q, n in sorted(qualities.items()))
    return (f"unit {unit} at {address}: {good} of {len(rows)} variables good"
            + (f", failed: {failed}" if failed else "") + f"; {requests} requests")


def _table(rows: list[dict[str, object]]) -> list[str]:
    lines = []
    for row in rows:
        shown = "-" if row["value"] is None else f"{row['value']} {row['unit']}".rstrip()
        lines.append(f"{row['index']:>6} {row['name']!s:<32} {shown:<24} quality {row['quality']}")
    return lines


def _report(address: str, definition: DefinitionFile,
            results: list[tuple[int, Readings, str | None]],
            as_json: bool) -> tuple[list[str], list[int]]:
    """The lines of one read of every unit (each with why the connection was down after it, if
    it was), and the units where nothing read good."""
    lines: list[str] = []
    shown: set[int] = set()
    silent: list[int] = []
    for unit, readings, down in results:
        rows = _rows(definition, readings)
        good = any(int(str(r["quality"])) in (0, 7) for r in rows)
        if not good:
            silent.append(unit)
        if as_json:
            lines.append(json.dumps({"target": address, "unit": unit,
                                     "definition": definition.file_name,
                                     "requests": readings.requests,
                                     "connection_error": down, "variables": rows},
                                    ensure_ascii=False))
            continue
        if good:
            lines += _table(rows)
        if good or down is None:
            shown |= {int(str(r["quality"])) for r in rows}
        lines.append(_summary(address, unit, rows, readings.requests, down))
    if not as_json and shown - {0}:
        lines.append("quality codes: " + "; ".join(f"{q} {QUALITY_MEANINGS[q]}"
                                                   for q in sorted(shown)))
    return lines, silent


def _read(args: argparse.Namespace) -> int:
    from config import ConfigError, parse_definition

    problem = _check_options(args)
    if problem is not None:
        print(f"sunpm modbus read: {problem}", file=sys.stderr)
        return 2
    try:
        host, port = _target(args.target)
        data = args.definition.read_bytes()
        definition = parse_definition(data, args.definition.name).value
    except OSError as err:
        print(f"sunpm modbus read: {args.definition}: {err.strerror}", file=sys.stderr)
        return 2
    except (ValueError, ConfigError) as err:
        print(f"sunpm modbus read: {err}", file=sys.stderr)
        return 2
    if not definition.protocol.is_modbus:
        print(f"sunpm modbus read: {args.definition.name}: protocol '{definition.protocol}' is "
              "not Modbus", file=sys.stderr)
        return 2
    units: list[int] = args.unit or [1]
    try:
        return asyncio.run(_run(args, host, port, units, definition))
    except KeyboardInterrupt:
        # Ctrl-C is how --watch ends; a single read interrupted is an interruption.
        return 0 if args.watch is not None else 130


async def _run(args: argparse.Namespace, host: str, port: int, units: list[int],
               definition: DefinitionFile) -> int:
    from pipeline.drivers.modbus.tcp import ModbusTcpDriver

    # The table says it (quality 5); the driver's reconnect warnings would only repeat it.
    logging.getLogger("sunpm.modbus").setLevel(logging.ERROR)
    address = _address(host, port)
    redraw = args.watch is not None and not args.json and sys.stdout.isatty()
    driver = ModbusTcpDriver()
    try:
        while True:
            started = time.monotonic()
            results = []
            for unit in units:
                readings = await _poll(driver, host, port, unit, args.timeout, args.max_gap,
                                       definition)
                results.append((unit, readings, driver.connection(host, port).down_reason))
            lines, silent = _report(address, definition, results, args.json)
            if args.watch is None:
                print("\n".join(lines))
                down = results[-1][2]
                if silent and down is not None:
                    print(f"sunpm modbus read: connection to {address} failed ({down})",
                          file=sys.stderr)
                elif silent:
                    print(f"sunpm modbus read: nothing read good from unit "
                          f"{', '.join(map(str, silent))} at {address}", file=sys.stderr)
                return 1 if silent else 0
            if not args.json:
                stamp = time.strftime("%H:%M:%S")
                lines.insert(0, f"{address} {definition.file_name} at {stamp}, every "
                                f"{args.watch:g} s (Ctrl-C to stop)")
            print((_CLEAR if redraw else "") + "\n".join(lines) + ("" if redraw else "\n"),
                  flush=True)
            await asyncio.sleep(max(0.0, started + args.watch - time.monotonic()))
    finally:
        await driver.close()

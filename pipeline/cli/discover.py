"""`sunpm discover`: a SunSpec discovery run from the command line, no gateway needed.

Progress lines go to stderr in the SunSpec detection log form (`YYYY-MM-DD hh:mm:ss:<message>`,
local time); the result goes to stdout, as one JSON document with `--json`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config import ConfigError, default_uid, load_site, render_daq
from config.model import Daq
from pipeline.drivers._base import DiscoveryParams, RegisterReader
from pipeline.drivers.discovery import DiscoveryRefused, discover_devices, interfaces_to_scan
from pipeline.drivers.modbus.rtu import RtuBus
from pipeline.drivers.modbus.tcp import TcpConnection
from pipeline.drivers.sunspec import (
    GeneratedDefinition,
    SunSpecDevice,
    unique_name,
    write_definition,
)
from pipeline.drivers.sunspec.importing import import_devices, is_configured
from pipeline.drivers.tic_discovery import definition_name as tic_definition_name
from pipeline.drivers.tic_discovery import definition_text as tic_definition_text
from pipeline.drivers.tic_discovery import detect_tic, tic_device

_INTERFACES = ("ethernet1", "ethernet2", "serial1", "serial2", "serial3")


class _Refused(Exception):
    """Parameters refused before starting (spec/behaviour.md §3.1); the text is the message."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("discover", help="find SunSpec devices and generate their "
                                   "definition files")
    parser.add_argument("--protocol", default="sunspec", choices=("sunspec", "tic"))
    parser.add_argument("--tic-port", metavar="DEV",
                        help="TIC reader for --protocol tic (default: --config's TIC_Port)")
    parser.add_argument("--interface", choices=_INTERFACES,
                        help="ethernet1 (default with --ip) or serial1..3 (needs --config)")
    parser.add_argument("--ip", help="target address for ethernet interfaces")
    parser.add_argument("--port", type=int, default=502, help="TCP port (502)")
    parser.add_argument("--first", type=int, default=1, help="first unit id (1)")
    parser.add_argument("--last", type=int, default=240, help="last unit id (240)")
    parser.add_argument("--max-devices", type=int, default=240, help="stop after N devices")
    parser.add_argument("--timeout", type=int, default=1000, help="reply timeout per request, ms")
    parser.add_argument("--write-defs", type=Path, metavar="DIR",
                        help="write the generated definition files here")
    parser.add_argument("--config", type=Path, metavar="DIR",
                        help="configuration directory: uid, serial ports, time zone")
    parser.add_argument("--uid", help="uid for file names when CONFIG holds several")
    parser.add_argument("--import", dest="import_", action="store_true",
                        help="add the devices not yet configured to --config's daq.csv, their "
                        "definition files to its DEF")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_discover)


def _params(args: argparse.Namespace, daq: Daq) -> DiscoveryParams:
    if args.protocol == "tic":
        return DiscoveryParams(protocol="tic")
    # A bare --ip means ethernet1, as on the web page; --interface or nothing scans as the command.
    interface: str | None = args.interface or ("ethernet1" if args.ip else None)
    if args.max_devices < 1:
        raise _Refused(f"discoverDevices: maxDevices {args.max_devices} is below 1")
    if args.timeout < 1:
        raise _Refused(f"discoverDevices: timeout {args.timeout} is below 1")
    if args.import_ and args.config is None:
        raise _Refused("discoverDevices: --import needs --config DIR")
    params = DiscoveryParams(protocol=args.protocol, interface=interface, ip=args.ip,
                             port=args.port, first_address=args.first, last_address=args.last,
                             max_devices=args.max_devices, timeout_ms=args.timeout)
    try:
        if not interfaces_to_scan(params, daq):
            raise _Refused("discoverDevices: nothing to scan: give --ip, or --config with a "
                           "serial port that has a path")
    except DiscoveryRefused as err:
        raise _Refused(str(err)) from err
    return params


def _clock(time_zone: str) -> Callable[[], str]:
    try:
        zone: ZoneInfo | None = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = None

    def now() -> str:
        moment = datetime.now(zone) if zone is not None else datetime.now().astimezone()
        return moment.strftime("%Y-%m-%d %H:%M:%S")

    return now


def _discover(args: argparse.Namespace) -> int:
    daq = Daq()
    time_zone = ""
    tic_port = ""
    try:
        if args.config is not None:
            site = load_site(args.config, args.uid)
            uid, daq, time_zone = site.uid, site.daq, site.settings.time_zone
            tic_port = site.settings.tic_port
        else:
            uid = args.uid or default_uid()
        params = _params(args, daq)
        if args.protocol == "tic":
            return _discover_tic(args, uid, daq, args.tic_port or tic_port)
    except _Refused as err:
        print(err, file=sys.stderr)
        return 2
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    now = _clock(time_zone)

    def log(message: str) -> None:
        print(f"{now()}:{message}", file=sys.stderr, flush=True)

    try:
        found = asyncio.run(_run(params, daq, uid, log))
    except _Refused as err:
        print(err, file=sys.stderr)
        return 2
    configured = {(d.target, d.unit_id) for d in found
                  if is_configured(daq, d.target, d.unit_id)}
    defs_dir: Path | None = args.write_defs
    if args.import_:
        defs_dir = args.config / "DEF"
        found_new = [d for d in found if (d.target, d.unit_id) not in configured]
    else:
        found_new = list(found)
    written: dict[tuple[str, int], str] = {}
    if defs_dir is not None:
        defs_dir.mkdir(parents=True, exist_ok=True)
        for device in found_new:
            written[device.target, device.unit_id] = write_definition(
                defs_dir, device.definition).name
    else:
        # Not written: still name them as writing them together would (`_2` for other content).
        texts: dict[str, str] = {}
        for device in found_new:
            name = unique_name(device.definition.name, device.definition.text, texts.get)
            texts[name] = device.definition.text
            written[device.target, device.unit_id] = name
    if args.import_:
        new_daq, added = import_devices(daq, found_new, timeout_ms=params.timeout_ms,
                                        definition_names=written)
        if added:
            _write_daq(args.config, uid, new_daq)
        print(f"{len(added)} devices added to {uid}_daq.csv", file=sys.stderr)
    rows = [_row(d, written.get((d.target, d.unit_id)), (d.target, d.unit_id) in configured,
                 include_text=defs_dir is None)
            for d in found]
    if args.json:
        print(json.dumps({"protocol": params.protocol, "uid": uid, "found": len(found),
                          "devices": rows},
                         separators=(",", ":"), ensure_ascii=False))
    else:
        for device in found:
            print(f"@{device.unit_id} {device.target}: {device.identity.manufacturer} "
                  f"{device.identity.model} SN {device.identity.serial_number} models "
                  f"{','.join(map(str, device.model_ids))} -> "
                  f"{written.get((device.target, device.unit_id), device.definition.name)}")
    return 0


def _discover_tic(args: argparse.Namespace, uid: str, daq: Daq, port: str) -> int:
    """TIC detection (spec/behaviour.md §3.6); the other parameters are ignored (the manual)."""
    if not port:
        raise _Refused("discoverDevices: TIC_Port is not set; give --tic-port DEV")
    if args.import_ and any(d.index == "TIC1" for d in daq.devices):
        raise _Refused("discoverDevices: TIC1 is already configured; delete it first")
    found = asyncio.run(detect_tic(port))
    result: dict[str, object] = {"protocol": "tic", "found": 0 if found is None else 1}
    if found is not None:
        name = tic_definition_name(uid, found.mode)
        text = tic_definition_text(found)
        defs_dir: Path | None = args.config / "DEF" if args.import_ else args.write_defs
        if defs_dir is not None:
            defs_dir.mkdir(parents=True, exist_ok=True)
            name = write_definition(defs_dir, GeneratedDefinition(name=name, text=text)).name
        if args.import_:
            row = tic_device(daq, found, name)
            new_daq = dataclasses.replace(daq, devices=daq.devices + (row,),
                                          blocks=daq.blocks | {"devices"})
            _write_daq(args.config, uid, new_daq)
        result.update(mode=found.mode.value, baud=found.baud, address=found.address,
                      labels=list(found.labels), definitionFile=name)
        if defs_dir is None:
            result["definitionText"] = text
    if args.json:
        print(json.dumps(result, separators=(",", ":"), ensure_ascii=False))
    elif found is None:
        print("no TIC meter found")
    else:
        print(f"{found.mode.value} meter {found.address} at {found.baud} baud: "
              f"{len(found.labels)} labels -> {result['definitionFile']}")
    return 0


def _write_daq(config_dir: Path, uid: str, daq: Daq) -> None:
    daq_path = config_dir / "CONFIG" / f"{uid}_daq.csv"
    tmp = daq_path.with_name(f".{daq_path.name}.tmp")
    tmp.write_bytes(render_daq(daq))
    tmp.replace(daq_path)


def _row(device: SunSpecDevice, written: str | None, configured: bool, *,
         include_text: bool) -> dict[str, object]:
    identity = device.identity
    row: dict[str, object] = {
        "unitId": device.unit_id, "target": device.target, "base": device.base,
        "manufacturer": identity.manufacturer, "model": identity.model,
        "options": identity.options, "version": identity.version,
        "serialNumber": identity.serial_number, "models": list(device.model_ids),
        "definitionFile": written or device.definition.name,
        "alreadyConfigured": configured,
    }
    if include_text:
        row["definitionText"] = device.definition.text
    return row


async def _run(params: DiscoveryParams, daq: Daq, uid: str,
               log: Callable[[str], None]) -> list[SunSpecDevice]:
    links: list[TcpConnection | RtuBus] = []

    async def link_for(interface: str, target: str) -> RegisterReader:
        link: TcpConnection | RtuBus
        if target.startswith("SERIAL"):
            link = RtuBus(daq.port(interface))
            link.start()
        else:
            assert params.ip is not None
            link = TcpConnection(params.ip, params.port)
        links.append(link)
        return link

    try:
        return await discover_devices(params, log, uid=uid, daq=daq, link_for=link_for)
    finally:
        for link in links:
            await link.close()

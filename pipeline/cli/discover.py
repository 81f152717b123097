"""`sunpm discover`: a SunSpec discovery run from the command line, no gateway needed.

Progress lines go to stderr in the SunSpec detection log form (`YYYY-MM-DD hh:mm:ss:<message>`,
local time), with a progress bar on a terminal (current unit id, devices found, time left) and a
plain progress line every tenth of the range (or 10 s) otherwise; the result goes to stdout, as
one JSON document with `--json`.

With `--config`, the run holds the site's discovery lock, so it is refused while the gateway
running on that configuration (or another `sunpm discover`) is discovering.

Exit code: 0 when the scan completed, whatever it found; 1 when nothing could be reached at all
(no connection to the address, a serial port that cannot be used); 2 for parameters refused
before starting or a discovery already running on the site; 130 on Ctrl-C ("interrupted after N of M ids", nothing written).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from pipeline.cli._ports import port_problem
from pipeline.cli.config import uid_refused
from pipeline.clock import local_time_stamper

if TYPE_CHECKING:
    from config.model import Daq
    from pipeline.drivers._base import DiscoveryParams, RegisterReader
    from pipeline.drivers.sunspec import GeneratedDefinition, SunSpecDevice, UnitScanned

_INTERFACES = ("ethernet1", "ethernet2", "serial1", "serial2", "serial3")
#: The `discoverDevices` parameter names of the refusal texts (docs/behaviour.md §3.1), as flags.
_FLAGS: Final = (("firstAddress", "--first"), ("lastAddress", "--last"), ("ip is", "--ip is"),
                  ("ip '", "--ip '"))
#: A plain progress line at least this often when stderr is not a terminal.
_PLAIN_EVERY_S: Final = 10.0


class _Refused(Exception):
    """Parameters refused before starting (docs/behaviour.md §3.1); the text is the message."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "discover", help="find SunSpec devices or a TIC meter, generate their definition files",
        epilog="exit status: 0 the scan completed (whatever it found), 1 nothing could be "
               "reached, 2 parameters refused, 130 interrupted (Ctrl-C)")
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


def _user_text(refusal: str) -> str:
    """A refusal of the shared parameter check in this command's own terms."""
    text = refusal.removeprefix("discoverDevices: ")
    for name, flag in _FLAGS:
        text = text.replace(name, flag)
    return text


def _check_flags(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise _Refused(f"--port {args.port} is outside 1..65535")
    if args.max_devices < 1:
        raise _Refused(f"--max-devices {args.max_devices} is below 1")
    if args.timeout < 1:
        raise _Refused(f"--timeout {args.timeout} is below 1 ms")
    if args.import_ and args.config is None:
        raise _Refused("--import needs --config DIR")
    _check_write_defs(args)


def _check_write_defs(args: argparse.Namespace) -> None:
    """Create `--write-defs` now, so an unusable path is said before a long scan, not after."""
    if args.write_defs is None:
        return
    if args.import_:
        # The import writes the files where the configuration reads them; a second folder
        # given beside it would be created and left empty.
        raise _Refused("--write-defs cannot go with --import, which writes the files to "
                       "--config's DEF/")
    if args.write_defs.exists() and not args.write_defs.is_dir():
        raise _Refused(f"--write-defs {args.write_defs}: exists and is not a directory")
    try:
        args.write_defs.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _Refused(f"--write-defs {args.write_defs}: {err.strerror}") from err


def _params(args: argparse.Namespace, daq: Daq) -> tuple[DiscoveryParams, list[str]]:
    from pipeline.drivers._base import DiscoveryParams
    from pipeline.drivers.discovery import DiscoveryRefused, interfaces_to_scan

    # A bare --ip means ethernet1, as on the web page; --interface or nothing scans as the command.
    interface: str | None = args.interface or ("ethernet1" if args.ip else None)
    params = DiscoveryParams(protocol=args.protocol, interface=interface, ip=args.ip,
                             port=args.port, first_address=args.first, last_address=args.last,
                             max_devices=args.max_devices, timeout_ms=args.timeout)
    try:
        interfaces = interfaces_to_scan(params, daq)
    except DiscoveryRefused as err:
        raise _Refused(_user_text(str(err))) from err
    if not interfaces:
        raise _Refused("nothing to scan: give --ip, or --config with a serial port that has a "
                       "path")
    return params, interfaces



class _Progress:
    """Progress of one run on stderr: a bar on a terminal, plain lines otherwise; it also
    remembers which interfaces carried any request (to tell an empty bus from no link)."""

    def __init__(self, total_ids: int, now: Callable[[], str], stream: TextIO, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.total = total_ids
        self.done = 0
        self.reached: dict[str, bool] = {}
        self.link_error: dict[str, str] = {}
        self._now = now
        self._stream = stream
        self._found_before = 0          # on the interfaces already finished
        self._found_here = 0
        self._interface: str | None = None
        self._monotonic = monotonic
        self._started = monotonic()
        self._step = max(1, total_ids // 10)
        self._next_line = self._step
        self._last_line = self._started
        self._bar: Any = None
        if stream.isatty():
            import shutil

            from tqdm import tqdm

            # A terminal that reports 0 columns (a fresh pty) would get no bar at all from tqdm.
            self._bar = tqdm(total=total_ids, unit="id", file=stream, leave=False,
                             ncols=shutil.get_terminal_size().columns,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} ids "
                                        "[{elapsed}<{remaining}{postfix}]")

    @property
    def found(self) -> int:
        return self._found_before + self._found_here

    def log(self, message: str) -> None:
        line = f"{self._now()}:{message}"
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def unit(self, event: UnitScanned) -> None:
        if event.interface != self._interface:
            self._found_before += self._found_here
            self._interface = event.interface
        self._found_here = event.found
        self.done += 1
        self.reached[event.interface] = self.reached.get(event.interface, False) or event.reached
        if not event.reached and event.link_error:
            self.link_error.setdefault(event.interface, event.link_error)
        if self._bar is not None:
            self._bar.set_postfix_str(f"id {event.unit_id}, {self.found} found", refresh=False)
            self._bar.update(1)
            return
        now = self._monotonic()
        if self.done >= self._next_line or now - self._last_line >= _PLAIN_EVERY_S:
            self._next_line = (self.done // self._step + 1) * self._step
            self._last_line = now
            left = self.total - self.done
            # To the nearest second, halves up (round() takes 0.5 to 0), and never 0 while ids
            # remain: at 50 ms an id, half the range was still to scan at "about 0 s left".
            left_s = max(1, math.floor((now - self._started) / self.done * left + 0.5)) \
                if left else 0
            print(f"progress: {self.done} of {self.total} ids, at id {event.unit_id} on "
                  f"{event.interface}, {self.found} found, about {left_s} s left",
                  file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.refresh()         # the final count, even when the last update was throttled
            self._bar.close()
            self._bar = None


def _discover(args: argparse.Namespace) -> int:
    from pipeline.service.discovery import DiscoveryBusy, discovery_lock

    if args.config is None or not args.config.is_dir():
        return _discover_locked(args)     # no site to share (load_site names a missing folder)
    try:
        with discovery_lock(args.config):
            return _discover_locked(args)
    except DiscoveryBusy:
        print(f"sunpm discover: a discovery is already running on {args.config} (the gateway's "
              "or another sunpm discover); try again when it is done", file=sys.stderr)
        return 2


def _discover_locked(args: argparse.Namespace) -> int:
    from config import ConfigError, default_uid, load_site
    from config.model import Daq

    daq = Daq()
    time_zone = ""
    tic_port = ""
    if uid_refused("discover", args.uid):
        return 2
    try:
        if args.protocol == "sunspec":
            _check_flags(args)
        if args.config is not None:
            site = load_site(args.config, args.uid)
            uid, daq, time_zone = site.uid, site.daq, site.settings.time_zone
            tic_port = site.settings.tic_port
        else:
            uid = args.uid or default_uid()
        if args.protocol == "tic":
            return _discover_tic(args, uid, daq, args.tic_port or tic_port)
        params, interfaces = _params(args, daq)
    except _Refused as err:
        print(f"sunpm discover: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    ids = (params.last_address - params.first_address + 1) * len(interfaces)
    progress = _Progress(ids, local_time_stamper(time_zone), sys.stderr)
    # This command reports on the link itself (below); the drivers' reconnect warnings and the
    # discovery's own log lines would repeat the progress lines.
    for name in ("sunpm.modbus", "sunpm.discovery"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        found = asyncio.run(_run(params, daq, uid, progress))
    except KeyboardInterrupt:
        progress.close()
        print(f"sunpm discover: interrupted after {progress.done} of {progress.total} ids "
              f"({progress.found} devices found, nothing written)", file=sys.stderr)
        return 130
    finally:
        progress.close()
    unreachable = [i for i, reached in progress.reached.items() if not reached]
    for interface in unreachable:
        print(f"sunpm discover: nothing could be reached on {interface}: "
              f"{progress.link_error.get(interface, 'no link')}", file=sys.stderr)
    if unreachable and len(unreachable) == len(progress.reached):
        return 1
    return _report(args, params, daq, uid, found)


def _report(args: argparse.Namespace, params: DiscoveryParams, daq: Daq, uid: str,
            found: list[SunSpecDevice]) -> int:
    """Write or name the definition files, import, and print the result; the exit code."""
    from config import render_daq
    from pipeline.drivers.sunspec import unique_name, write_definition
    from pipeline.drivers.sunspec.importing import import_devices, is_configured

    configured = {(d.target, d.unit_id) for d in found
                  if is_configured(daq, d.target, d.unit_id)}
    defs_dir: Path | None = args.write_defs
    if args.import_:
        defs_dir = args.config / "DEF"
        found_new = [d for d in found if (d.target, d.unit_id) not in configured]
    else:
        found_new = list(found)
    written: dict[tuple[str, int], str] = {}
    change: dict[str, bytes] = {}
    if args.import_:
        assert defs_dir is not None
        written, change = _definitions_change(
            defs_dir, [(d.target, d.unit_id, d.definition) for d in found_new])
    elif defs_dir is not None:
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
            change[f"CONFIG/{uid}_daq.csv"] = render_daq(new_daq)
            if not _apply_import(args.config, uid, change):
                return 1
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
    """TIC detection (docs/behaviour.md §3.6); the other parameters are ignored (the manual)."""
    from config import render_daq
    from pipeline.drivers.sunspec import GeneratedDefinition, write_definition
    from pipeline.drivers.tic_discovery import definition_name as tic_definition_name
    from pipeline.drivers.tic_discovery import definition_text as tic_definition_text
    from pipeline.drivers.tic_discovery import detect_tic, tic_device

    if not port:
        raise _Refused("TIC_Port is not set; give --tic-port DEV")
    if args.import_ and args.config is None:
        raise _Refused("--import needs --config DIR")
    if args.import_ and any(d.index == "TIC1" for d in daq.devices):
        raise _Refused("TIC1 is already configured; delete it first")
    _check_write_defs(args)
    problem = port_problem(port)
    if problem is not None:
        print(f"sunpm discover: nothing could be reached: {port}: cannot open: {problem}",
              file=sys.stderr)
        return 1
    open_errors: list[str] = []
    try:
        found = asyncio.run(detect_tic(port, open_errors=open_errors))
    except KeyboardInterrupt:
        print("sunpm discover: interrupted (nothing written)", file=sys.stderr)
        return 130
    if found is None and len(open_errors) == 2:
        # Opened at neither speed: nothing was listened to, which is not "no meter".
        print(f"sunpm discover: nothing could be reached: {port}: cannot open as a TIC port "
              f"(7E1 at 9600/1200 Bd): {open_errors[-1]}", file=sys.stderr)
        return 1
    result: dict[str, object] = {"protocol": "tic", "found": 0 if found is None else 1}
    if found is not None:
        name = tic_definition_name(uid, found.mode)
        text = tic_definition_text(found)
        defs_dir: Path | None = args.config / "DEF" if args.import_ else args.write_defs
        if args.import_:
            assert defs_dir is not None
            names, change = _definitions_change(
                defs_dir, [("TIC1", 0, GeneratedDefinition(name=name, text=text))])
            name = names["TIC1", 0]
            row = tic_device(daq, found, name)
            new_daq = dataclasses.replace(daq, devices=(*daq.devices, row),
                                          blocks=daq.blocks | {"devices"})
            change[f"CONFIG/{uid}_daq.csv"] = render_daq(new_daq)
            if not _apply_import(args.config, uid, change):
                return 1
        elif defs_dir is not None:
            defs_dir.mkdir(parents=True, exist_ok=True)
            name = write_definition(defs_dir, GeneratedDefinition(name=name, text=text)).name
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


def _definitions_change(defs_dir: Path, generated: list[tuple[str, int, GeneratedDefinition]]
                        ) -> tuple[dict[tuple[str, int], str], dict[str, bytes]]:
    """The file each (target, unit) gets in `defs_dir` (the `_2` rule, files of this import
    counted; a file of the same content reused) and the new files as a change."""
    from pipeline.drivers.sunspec import unique_name

    planned: dict[str, str] = {}

    def existing(name: str) -> str | None:
        if name in planned:
            return planned[name]
        try:
            return (defs_dir / name).read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None

    names: dict[tuple[str, int], str] = {}
    change: dict[str, bytes] = {}
    for target, unit, definition in generated:
        name = unique_name(definition.name, definition.text, existing)
        planned[name] = definition.text
        names[target, unit] = name
        if not (defs_dir / name).exists():
            change[f"DEF/{name}"] = definition.text.encode("utf-8")
    return names, change


def _apply_import(config_dir: Path, uid: str, change: dict[str, bytes]) -> bool:
    """The import checked whole with the site and written all or nothing, durably, as the
    gateway's own import (pipeline.service.config_edit); False, said, when it is refused."""
    from pipeline.service.config_edit import ChangeRejected, apply_change

    new_files = [rel for rel in change if rel.startswith("DEF/")]
    try:
        apply_change(config_dir, uid, change, create_only=new_files)
    except ChangeRejected as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"sunpm discover: the import would make {config_dir} invalid; nothing written",
              file=sys.stderr)
        return False
    return True


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
               progress: _Progress) -> list[SunSpecDevice]:
    from pipeline.drivers.discovery import discover_devices
    from pipeline.drivers.modbus.rtu import RtuBus
    from pipeline.drivers.modbus.tcp import TcpConnection

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
        return await discover_devices(params, progress.log, uid=uid, daq=daq, link_for=link_for,
                                      progress=progress.unit)
    finally:
        for link in links:
            await link.close()

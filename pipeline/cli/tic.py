"""`sunpm tic decode FILE|--port DEV`: TIC frames as text or JSON lines, bad groups counted.

A capture file has no speed: a group holding an HT is standard mode, else historic
(docs/behaviour.md §2.9). A port is read at `--speed`, or with the gateway's mode detection.
Only frames holding at least one valid group are printed (random bytes hold STX…ETX spans too).
Totals go to stderr at the end, as a sentence, or as one JSON object with `--json`, so stdout
holds exactly one line per frame. Exit code: 0 when a frame was found, 1 when none was, 2 when
the port cannot be used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pipeline.cli._ports import port_problem

if TYPE_CHECKING:
    from pipeline.drivers.tic import TicCounters, TicFrame, TicReader

#: How long the reader may fail to open the port before the command gives up (the reader retries
#: every second; a working adapter opens at the first attempt).
OPEN_TIMEOUT_S: Final = 5.0
_CHECK_S: Final = 0.5


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("tic", help="Linky / TIC meter tools")
    sub = parser.add_subparsers(dest="tic_command", required=True, metavar="ACTION")
    decode = sub.add_parser("decode", help="decode a capture file or a live TIC port",
                            epilog="exit status: 0 frames found, 1 no TIC frame found (or the "
                                   "file cannot be read), 2 port unusable or bad arguments")
    decode.add_argument("file", nargs="?", type=Path, metavar="FILE", help="capture file")
    decode.add_argument("--port", metavar="DEV", help="serial device of a TIC reader")
    decode.add_argument("--speed", type=int, choices=(1200, 9600),
                        help="fixed speed for --port (default: detect the mode)")
    decode.add_argument("--frames", type=int, default=0, help="stop after N frames (--port; 0, the default: no limit)")
    decode.add_argument("--duration", type=float, default=0.0,
                        help="stop after S seconds (--port; 0, the default: no limit)")
    decode.add_argument("--json", action="store_true", help="one JSON object per line")
    decode.set_defaults(handler=_decode)


def frame_json(number: int, frame: TicFrame) -> dict[str, object]:
    out: dict[str, object] = {
        "frame": number,
        "mode": frame.mode.value if frame.mode is not None else None,
        "interrupted": frame.interrupted,
        "values": frame.values(),
        "badGroups": {"checksum": frame.checksum_errors, "malformed": frame.malformed},
    }
    horodates = {g.label: g.horodate for g in frame.groups if g.horodate is not None}
    if horodates:
        out["horodates"] = horodates
    return out


class _Printer:
    """Prints the frames that hold a valid group, numbered from 1; counts the others."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.printed = 0
        self.empty = 0

    def __call__(self, frame: TicFrame) -> None:
        if not frame.groups:
            self.empty += 1
            return
        self.printed += 1
        _emit(self.printed, frame, self.as_json)

    def totals(self, counters: TicCounters) -> None:
        if self.as_json:
            print(json.dumps(counters.as_dict() | {"withoutValidGroup": self.empty},
                             separators=(",", ":")), file=sys.stderr)
            return
        print(f"{self.printed} frames ({counters.interrupted} interrupted), "
              f"{counters.valid_groups} valid groups, {counters.checksum_errors} checksum errors, "
              f"{counters.malformed} malformed groups, {counters.noise} noise bytes; "
              f"{self.empty} STX…ETX spans without a valid group", file=sys.stderr)


def _emit(number: int, frame: TicFrame, as_json: bool) -> None:
    if as_json:
        print(json.dumps(frame_json(number, frame), separators=(",", ":")), flush=True)
        return
    state = " interrupted" if frame.interrupted else ""
    mode = frame.mode.value if frame.mode is not None else "-"
    values = " ".join(f"{label}={data}" for label, data in frame.values().items())
    print(f"frame {number} {mode}{state}: {values} (bad groups: {frame.checksum_errors} "
              f"checksum, {frame.malformed} malformed)", flush=True)


def _decode(args: argparse.Namespace) -> int:
    # Imported here: pyserial and the TIC driver are not needed by other commands.
    from pipeline.drivers.tic import TicReader, decode_capture

    if (args.file is None) == (args.port is None):
        print("sunpm tic decode: give either FILE or --port DEV", file=sys.stderr)
        return 2
    if args.frames < 0 or args.duration < 0:
        print("sunpm tic decode: --frames and --duration cannot be negative", file=sys.stderr)
        return 2
    port_only = [flag for flag, value in (("--speed", args.speed), ("--frames", args.frames),
                                          ("--duration", args.duration)) if value]
    if args.file is not None and port_only:
        # A capture is decoded whole, its mode detected: such an option would be ignored.
        print(f"sunpm tic decode: {', '.join(port_only)}: for --port only, not a FILE",
              file=sys.stderr)
        return 2
    printer = _Printer(args.json)
    if args.file is not None:
        try:
            data = args.file.read_bytes()
        except OSError as err:
            print(f"sunpm tic decode: {args.file}: {err.strerror}", file=sys.stderr)
            return 1
        frames, counters = decode_capture(data)
        for frame in frames:
            printer(frame)
        printer.totals(counters)
        if not printer.printed:
            print(f"sunpm tic decode: {args.file}: no TIC frame found ({len(data)} bytes)",
                  file=sys.stderr)
            return 1
        return 0
    problem = port_problem(args.port)
    if problem is not None:
        # The gateway's reader retries such a port for ever; a command must not.
        print(f"sunpm tic decode: {args.port}: cannot open: {problem}", file=sys.stderr)
        return 2
    reader = TicReader(args.port, baud=args.speed)
    with contextlib.suppress(KeyboardInterrupt):
        opened = asyncio.run(_live(reader, args.frames, args.duration, printer))
        if not opened:
            print(f"sunpm tic decode: {args.port}: cannot open: not usable as a TIC port "
                  f"(7E1 at {args.speed or '1200/9600'} Bd) within {OPEN_TIMEOUT_S:g} s",
                  file=sys.stderr)
            printer.totals(reader.counters)
            return 2
    printer.totals(reader.counters)
    if not printer.printed:
        print(f"sunpm tic decode: {args.port}: no TIC frame received", file=sys.stderr)
        return 1
    return 0


async def _live(reader: TicReader, max_frames: int, duration_s: float,
                printer: _Printer) -> bool:
    """Print frames until the limits; False when the port never opened within OPEN_TIMEOUT_S
    (the reader itself would retry for ever)."""
    queue = reader.subscribe()
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(reader.run(), name=f"tic:{reader.path}")
    try:
        async with asyncio.timeout(duration_s if duration_s > 0 else None):
            while max_frames <= 0 or printer.printed < max_frames:
                try:
                    async with asyncio.timeout(_CHECK_S):
                        frame = await queue.get()
                except TimeoutError:
                    if not reader.present and loop.time() - started >= OPEN_TIMEOUT_S \
                            and printer.printed == 0:
                        return False
                    continue
                printer(frame)
    except TimeoutError:
        pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return True

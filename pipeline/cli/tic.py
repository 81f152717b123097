"""`sunpm tic decode FILE|--port DEV`: TIC frames as text or JSON lines, bad groups counted.

A capture file has no speed: a group holding an HT is standard mode, else historic
(spec/behaviour.md §2.9). A port is read at `--speed`, or with the gateway's mode detection.
Totals go to stderr at the end, so stdout holds exactly one line per frame.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from pipeline.drivers.tic import TicCounters, TicFrame, TicReader, decode_capture

#: How long the reader may fail to open the port before the command gives up (the reader retries
#: every second; a working adapter opens at the first attempt).
OPEN_TIMEOUT_S: Final = 5.0
_CHECK_S: Final = 0.5


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("tic", help="Linky / TIC meter tools")
    sub = parser.add_subparsers(dest="tic_command", required=True, metavar="ACTION")
    decode = sub.add_parser("decode", help="decode a capture file or a live TIC port")
    decode.add_argument("file", nargs="?", type=Path, metavar="FILE", help="capture file")
    decode.add_argument("--port", metavar="DEV", help="serial device of a TIC reader")
    decode.add_argument("--speed", type=int, choices=(1200, 9600),
                        help="fixed speed for --port (default: detect the mode)")
    decode.add_argument("--frames", type=int, default=0, help="stop after N frames (--port)")
    decode.add_argument("--duration", type=float, default=0.0,
                        help="stop after S seconds (--port)")
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


def _printer(as_json: bool) -> Callable[[int, TicFrame], None]:
    def emit(number: int, frame: TicFrame) -> None:
        if as_json:
            print(json.dumps(frame_json(number, frame), separators=(",", ":")), flush=True)
            return
        state = " interrupted" if frame.interrupted else ""
        mode = frame.mode.value if frame.mode is not None else "-"
        values = " ".join(f"{label}={data}" for label, data in frame.values().items())
        print(f"frame {number} {mode}{state}: {values} (bad groups: {frame.checksum_errors} "
              f"checksum, {frame.malformed} malformed)", flush=True)

    return emit


def _totals(counters: TicCounters) -> None:
    print(json.dumps(counters.as_dict(), separators=(",", ":")), file=sys.stderr)


def _decode(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.port is None):
        print("sunpm tic decode: give either FILE or --port DEV", file=sys.stderr)
        return 2
    emit = _printer(args.json)
    if args.file is not None:
        try:
            data = args.file.read_bytes()
        except OSError as err:
            print(f"sunpm tic decode: {args.file}: {err.strerror}", file=sys.stderr)
            return 1
        frames, counters = decode_capture(data)
        for number, frame in enumerate(frames, start=1):
            emit(number, frame)
        _totals(counters)
        return 0
    problem = _probe(args.port)
    if problem is not None:
        # The gateway's reader retries such a port for ever; a command must not.
        print(f"sunpm tic decode: {args.port}: cannot open: {problem}", file=sys.stderr)
        return 2
    reader = TicReader(args.port, baud=args.speed)
    with contextlib.suppress(KeyboardInterrupt):
        opened = asyncio.run(_live(reader, args.frames, args.duration, emit))
        if not opened:
            print(f"sunpm tic decode: {args.port}: cannot open: not usable as a TIC port "
                  f"(7E1 at {args.speed or '1200/9600'} Bd) within {OPEN_TIMEOUT_S:g} s",
                  file=sys.stderr)
            _totals(reader.counters)
            return 2
    _totals(reader.counters)
    return 0


def _probe(path: str) -> str | None:
    """None when `path` opens as a terminal device, else the reason (OS error text)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as err:
        return f"{err.strerror} (errno {err.errno})"
    try:
        if not os.isatty(fd):
            return "not a serial device"
    finally:
        os.close(fd)
    return None


async def _live(reader: TicReader, max_frames: int, duration_s: float,
                emit: Callable[[int, TicFrame], None]) -> bool:
    """Print frames until the limits; False when the port never opened within OPEN_TIMEOUT_S
    (the reader itself would retry for ever)."""
    queue = reader.subscribe()
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(reader.run(), name=f"tic:{reader.path}")
    try:
        async with asyncio.timeout(duration_s if duration_s > 0 else None):
            number = 0
            while max_frames <= 0 or number < max_frames:
                try:
                    async with asyncio.timeout(_CHECK_S):
                        frame = await queue.get()
                except TimeoutError:
                    if not reader.present and loop.time() - started >= OPEN_TIMEOUT_S \
                            and number == 0:
                        return False
                    continue
                number += 1
                emit(number, frame)
    except TimeoutError:
        pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return True

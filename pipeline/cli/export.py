"""`sunpm export`: rebuild a past range of one server's files from the store (docs/behaviour.md
§5.3).

    sunpm export --server N --from T --to T (--out DIR | --upload) [--store DIR] [--config DIR]
                 [--allow-partial]

`T` is ISO 8601 (`2021-02-05`, `2021-02-05T09:15:00Z`, or with an offset); without an offset it is
UTC. Cursors never move. `--out` writes the files under DIR in the server tree's directories;
`--upload` sends the windows the server has already received (up to its cursor) under their usual
names and says where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporters.rendering.backfill import BackfillFile, BackfillWindow
    from store.delivery import Stream


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export", help="re-export a past range of a server's files from the store",
        description="Rebuild the files of a past range for one server, byte-identical to the "
                    "files delivered, without moving any cursor.")
    parser.add_argument("--server", type=int, choices=(1, 2), required=True)
    parser.add_argument("--from", dest="start", type=parse_time, required=True, metavar="T")
    parser.add_argument("--to", dest="end", type=parse_time, required=True, metavar="T")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, metavar="DIR",
                        help="write the files under DIR (DATA/, ALARM/, CMD/, LOG/)")
    target.add_argument("--upload", action="store_true",
                        help="send the windows already delivered to the server again")
    parser.add_argument("--store", type=Path, metavar="DIR", help="store (default: STORE_Path)")
    parser.add_argument("--config", type=Path, default=Path("."), metavar="DIR",
                        help="configuration directory (default: .)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="export even when some records of the range are no longer stored")
    parser.set_defaults(handler=run)


def parse_time(text: str) -> datetime:
    """ISO 8601; a date alone is its UTC midnight, a time without offset is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or time") from err
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the store and the exporters would slow every `sunpm`
    # command, even `--help` (pipeline/cli/__init__.py).
    from config.errors import SunpmError
    from exporters.sources import PathRefused
    from pipeline.cli.config import directory_unusable

    if directory_unusable("export", args.config):
        return 2
    try:
        return asyncio.run(_export(args))
    except SunpmError as err:
        print(f"sunpm export: {err}", file=sys.stderr)
        return 2 if isinstance(err, PathRefused) else 1


async def _export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from exporters.rendering.backfill import (
        PARTIAL,
        missing_records,
        plan_backfill,
        render_backfill,
    )
    from exporters.sources import open_export
    from store.delivery import FILE_SERVER_STREAMS, DeliveryState, Stream

    start_ns = int(args.start.timestamp()) * 1_000_000_000
    end_ns = int(args.end.timestamp()) * 1_000_000_000
    if end_ns <= start_ns:
        print("sunpm export: --to must be after --from", file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        # Said as `sd reexport` says it, not as an OS error about a folder below it.
        print(f"sunpm export: {args.out}: exists and is not a directory", file=sys.stderr)
        return 2
    async with open_export(config_dir=args.config, store_dir=args.store, server=args.server,
                           upload=args.upload) as job:
        if args.out is not None and args.out.resolve().is_relative_to(job.log.path.resolve()):
            # The files would land among the store's own, which a writer's open then calls
            # foreign (and a `DATA/` under `devices/` a device).
            print(f"sunpm export: {args.out}: inside the store {job.log.path}; the store is "
                  "never written to", file=sys.stderr)
            return 1
        missing = await asyncio.to_thread(missing_records, job.log, start_ns, end_ns)
        if missing and not args.allow_partial:
            for line in missing:
                print(f"sunpm export: {line}", file=sys.stderr)
            print("sunpm export: refused; --allow-partial exports what is left", file=sys.stderr)
            return 1
        table = await asyncio.to_thread(job.log.journal, kinds=["window", "delivered"])
        streams: tuple[Stream, ...] = FILE_SERVER_STREAMS if job.file_server else (Stream.DATA,)

        def make_plan() -> tuple[DeliveryState, list[BackfillWindow]]:
            # Replays the journal and reads membership and configuration from the store.
            state = DeliveryState.from_table(table)
            return state, plan_backfill(state, job.source, server=args.server, streams=streams,
                                        start_ns=start_ns, end_ns=end_ns)

        state, plan = await asyncio.to_thread(make_plan)
        if args.upload:
            # Only windows the server confirmed go again, under their own names; each stream
            # stops at its cursor (docs/behaviour.md §5.3 step 2).
            cursors = {stream: state.stream(args.server, stream).cursor_ns for stream in streams}
            undelivered = [w for w in plan if not w.delivered]
            plan = [w for w in plan if w.delivered]
            # Before a stream's cursor, an undelivered window is a part of the range no window
            # was built for (before the first one, or its `window` events deleted by the quota):
            # not where the upload stopped.
            unbuilt = [w for w in undelivered if (cursor := cursors[w.spec.stream]) is not None
                       and w.spec.end_ns <= cursor]
            beyond = [w for w in undelivered if w not in unbuilt
                      and cursors[w.spec.stream] is not None]
            never = sorted({w.spec.stream for w in undelivered
                            if cursors[w.spec.stream] is None}, key=lambda st: st.rank)
            if unbuilt:
                print(f"not uploaded: {_spans(unbuilt)}: no window of server {args.server} is "
                      "journaled there (--out rebuilds it)", file=sys.stderr)
            if never:
                print(f"{', '.join(st.value for st in never)}: nothing delivered to server "
                      f"{args.server} yet; the sessions deliver it", file=sys.stderr)
            if beyond:
                first = min(w.spec.start_ns for w in beyond)
                print(f"stopping at {_moment(first)}: later records are the "
                      f"sessions' to deliver (server {args.server} cursor)", file=sys.stderr)
        files = 0
        differing: list[str] = []
        partial: list[str] = []
        rendered = render_backfill(job.source, plan, allow_partial=args.allow_partial)
        with tqdm(total=len(plan), unit="window", file=sys.stderr, disable=None) as bar:
            # Each window's store reads and gzip run in a worker thread (docs/style.md §4), one
            # window at a time, so the uploads' connection stays served between windows.
            while (window_files := await asyncio.to_thread(next, rendered, None)) is not None:
                for f in window_files:
                    await _emit(job, args, f)
                    files += 1
                    if f.same_text is False:
                        partial.append(f.rendered.name)
                    elif f.same_bytes is False:
                        differing.append(f.rendered.name)
                bar.update(1)
    for name in partial:
        print(f"{name}: {PARTIAL}", file=sys.stderr)
    for name in differing:
        print(f"{name}: same text as delivered, other compressed bytes", file=sys.stderr)
    if args.upload and not job.file_server:
        print(f"{files} messages published ({len(plan)} windows)")
    else:
        where = "uploaded" if args.upload else f"written to {args.out}"
        print(f"{files} files {where} ({len(plan)} windows)")
    return 0


def _moment(ts_ns: int) -> str:
    """A time as the command line shows times, to the second: a session's cursor or a stream's
    first item falls anywhere within one (`07:00:00.006404`)."""
    from exporters.views.windows import ns_to_datetime

    return ns_to_datetime(ts_ns).isoformat(timespec="seconds")


def _spans(windows: list[BackfillWindow]) -> str:
    """`DATA, LOG 2021-01-25T00:00:00+00:00 to ...; ALARM ...`: each stream's own span, since
    streams start their windows at their own first item (one span for all of them named, as
    not uploaded, the windows of a stream that started earlier and did go up)."""
    by_stream: dict[Stream, tuple[int, int]] = {}
    for w in windows:
        first, last = by_stream.get(w.spec.stream, (w.spec.start_ns, w.spec.end_ns))
        by_stream[w.spec.stream] = (min(first, w.spec.start_ns), max(last, w.spec.end_ns))
    streams_of: dict[tuple[int, int], list[Stream]] = {}
    for stream in sorted(by_stream, key=lambda st: st.rank):
        streams_of.setdefault(by_stream[stream], []).append(stream)
    return "; ".join(f"{', '.join(st.value for st in streams)} "
                     f"{_moment(first)} to {_moment(last)}"
                     for (first, last), streams in streams_of.items())


async def _emit(job: Any, args: argparse.Namespace, f: BackfillFile) -> None:
    r = f.rendered
    if args.upload:
        await job.upload(f"{r.directory.rstrip('/')}/{r.name}", r.data)
        return
    folder = Path(args.out) / r.directory.strip("/")
    await asyncio.to_thread(_write, folder / r.name, r.data)


def _write(path: Path, data: bytes) -> None:
    from fsio import write_file_durably

    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_durably(path, data)

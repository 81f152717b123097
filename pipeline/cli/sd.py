"""`sunpm sd ...` (a store or card dump, read-only) and `sunpm ingest` (the server side).

    sunpm sd inspect PATH [--json]
    sunpm sd fsck PATH [--json]                    exit 0 clean, 1 damaged but readable, 2 unreadable
    sunpm sd sql PATH ["SELECT ..."] [--format table|csv|json] [--no-server]
                                                   without SQL: statements from standard input
                                                   or a prompt
    sunpm sd serve PATH [--idle-minutes N] [--memory-mb MB]   PATH kept open for `sd sql`
    sunpm sd export-parquet PATH OUT
    sunpm sd reexport PATH --server N --from T --to T --out DIR [--config DIR] [--allow-partial]
    sunpm ingest DIR OUT

Nothing here writes to PATH (docs/behaviour.md §12); the work is `sdcard`'s.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tqdm import tqdm

    from sdcard.dump import Dump
    from sdcard.sql import Session

# The sdcard modules (pyarrow.dataset, parquet, DuckDB) load in their command's handler, so
# every other `sunpm` command starts without them.


def register(subparsers: Any) -> None:
    register_ingest(subparsers)
    parser = subparsers.add_parser(
        "sd", help="inspect, check, query, export or re-export a store or card dump (read-only)")
    sub = parser.add_subparsers(dest="sd_command", required=True, metavar="ACTION")

    p = sub.add_parser("inspect", help="uid, snapshots, devices, time span, gaps, quota use, "
                                       "cursors, damage")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(handler=_inspect)

    p = sub.add_parser("fsck", help="check every segment and the journal (exit 0 clean, "
                                    "1 damaged but readable, 2 unreadable)")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(handler=_fsck)

    p = sub.add_parser("sql", help="DuckDB SQL over `records`, `journal` and `definitions`")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("query", metavar="SQL", nargs="?",
                   help="the question; without it, statements are read from standard input "
                        "(a prompt on a terminal), the dump opened once for all of them")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--no-server", action="store_true",
                   help="answer in this process even when `sunpm sd serve` keeps PATH open")
    p.set_defaults(handler=_sql)

    p = sub.add_parser("serve", help="keep a dump open for `sd sql` (imports, open and scans "
                                     "paid once: a question asked again answers in a fraction "
                                     "of a second)")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--idle-minutes", type=_positive_minutes, default=30, metavar="N",
                   help="stop after N minutes without a question (default 30)")
    p.add_argument("--memory-mb", type=int, default=256, metavar="MB",
                   help="memory for the rows scans selected, kept for the next questions "
                        "(default 256)")
    p.set_defaults(handler=_serve)

    p = sub.add_parser("export-parquet", help="records and alarms into Hive-partitioned Parquet "
                                              "(uid=/device=/date=); again: same files")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--uid", help="uid of the unit (default: from the dump's configuration)")
    p.set_defaults(handler=_export_parquet)

    p = sub.add_parser("reexport", help="the files of any past range of a server, byte-identical "
                                        "to what was or would be delivered")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--server", type=int, choices=(1, 2), required=True)
    p.add_argument("--from", dest="start", type=parse_time, required=True, metavar="T")
    p.add_argument("--to", dest="end", type=parse_time, required=True, metavar="T")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--config", type=Path, metavar="DIR",
                   help="configuration directory (default: the dump's snapshot in force)")
    p.add_argument("--allow-partial", action="store_true",
                   help="export even when some records of the range are no longer stored")
    p.set_defaults(handler=_reexport)


def parse_time(text: str) -> datetime:
    """A time as `sunpm export` reads it (ISO 8601, UTC without an offset); its module, which
    loads asyncio, only when a time is given."""
    from .export import parse_time as parse

    return parse(text)


def _quiet_store_log() -> None:
    # Every store report reaches the user once, as a finding of the command; the store's own
    # log lines would repeat them.
    import logging  # here: `sd sql` answered by a server never needs it

    logging.getLogger("sunpm.store").setLevel(logging.CRITICAL)


def _open_dump(path: Path) -> Dump:
    # Imported when a command runs: the offline room pulls in pyarrow, which `sunpm --help`
    # must not wait for.
    from sdcard.dump import open_dump as open_read_only

    return open_read_only(path)


def _out_refused(command: str, out: Path) -> bool:
    """Says so when OUT exists and is not a folder (an argument that cannot be used: exit 2),
    rather than an OS error naming a path below it."""
    if out.exists() and not out.is_dir():
        print(f"sunpm {command}: {out}: exists and is not a directory", file=sys.stderr)
        return True
    return False


def _bar(total: int, unit: str) -> tqdm[Any]:
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, disable=None, leave=False)


def _inspect(args: argparse.Namespace) -> int:
    from config.errors import SunpmError
    from sdcard import inspect as inspect_mod

    _quiet_store_log()
    try:
        dump = _open_dump(args.path)
        # The check of every stream, then the scan of every device: most of the time either way.
        with _bar(inspect_mod.progress_steps(dump), "stream") as bar:
            report = inspect_mod.inspect(dump, progress=bar.update)
    except (SunpmError, OSError) as err:
        print(f"sunpm sd inspect: {err}", file=sys.stderr)
        return 2
    print(inspect_mod.to_json(report) if args.json else inspect_mod.render_table(report))
    return 0


def _fsck(args: argparse.Namespace) -> int:
    from config.errors import SunpmError
    from sdcard import fsck as fsck_mod
    from sdcard.dump import DumpError

    _quiet_store_log()
    try:
        dump = _open_dump(args.path)
    except DumpError as err:
        if args.json:
            print(json.dumps({"code": fsck_mod.UNREADABLE, "error": str(err)}))
        print(f"sunpm sd fsck: {err}", file=sys.stderr)
        return fsck_mod.UNREADABLE
    try:
        with _bar(fsck_mod.progress_steps(dump), "stream") as bar:
            result = fsck_mod.fsck(dump, progress=bar.update)
    except (SunpmError, OSError) as err:
        print(f"sunpm sd fsck: {err}", file=sys.stderr)
        return fsck_mod.UNREADABLE
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print("\n".join(result.lines()))
    return result.code


def _sql(args: argparse.Namespace) -> int:
    if args.query is not None and not args.no_server:
        # A running `sunpm sd serve` for this dump answers without this process importing or
        # opening anything (stdlib only on this path).
        from pipeline.cli import _sd_client

        code = _sd_client.ask(str(args.path), args.query, args.format)
        if code is not None:
            return code
    if args.own_process and "pandas" not in sys.modules:
        # pyarrow and DuckDB import pandas only to tell whether an object they are handed is a
        # DataFrame (pyarrow as `pyarrow.dataset` loads, DuckDB when a view is registered):
        # 0.15-0.2 s of a run that hands them Arrow objects alone. Only in a process of its
        # own: they remember that pandas is missing.
        from pipeline.cli._refused import RefusedImport

        sys.meta_path.insert(0, RefusedImport("pandas", "`sunpm sd sql`"))
        if "numpy" not in sys.modules:
            # Likewise numpy, which pyarrow loads at import when it is installed (~0.04 s):
            # nothing here converts to or from numpy arrays.
            sys.meta_path.insert(0, RefusedImport("numpy", "`sunpm sd sql`"))
    from config.errors import SunpmError

    _quiet_store_log()
    if args.own_process:
        # What the imports made lives as long as the process: a garbage collection need not
        # walk it again (a full one walks every object; the scan makes many).
        gc.freeze()
    try:
        dump = _open_dump(args.path)
        if args.query is None:
            return _sql_session(dump, args.format)
        from sdcard import sql as sql_mod

        session = sql_mod.Session(dump)
        try:
            with _interruptible(session):
                code = _one_question(dump, args.query, args.format, sys.stdout, sys.stderr,
                                     session)
        finally:
            session.close()
    except BrokenPipeError:
        raise  # the reader went away (`| head`): `main` ends quietly
    except (SunpmError, OSError) as err:
        print(f"sunpm sd sql: {err}", file=sys.stderr)
        return 2
    if args.own_process:
        # The process ends next: the interpreter's last collection would walk every object
        # the scan left (0.1 s on a large dump) only to have the exit free them all anyway.
        gc.freeze()
    return code


def _one_question(dump: Dump, query: str, fmt: str, out: IO[str], err: IO[str],
                  session: Session | None = None) -> int:
    """`sunpm sd sql PATH SQL` over an open dump: the answer on `out`, errors and the dump's
    findings on `err`; the exit code (also what `sunpm sd serve` answers a question with, in a
    `session` of its own)."""
    import duckdb

    from config.errors import SunpmError
    from sdcard import sql as sql_mod

    try:
        columns, chunks = sql_mod.run_query(dump, query, session)
        sql_mod.write(columns, chunks, fmt, out)
    except BrokenPipeError:
        raise  # the reader went away (`| head`): `main` ends quietly
    except (SunpmError, OSError) as error:
        print(f"sunpm sd sql: {error}", file=err)
        return 2
    except duckdb.Error as error:
        if _CTRL_C.is_set():
            raise KeyboardInterrupt from None   # the query's end is Ctrl-C's (_interruptible)
        print(f"sunpm sd sql: {str(error).splitlines()[0]}", file=err)
        return 1
    _print_findings(dump, set(), err)
    return 0


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0  # said as an out-of-range number is, not as argparse's "invalid value"
    if not 0 < value <= 7 * 24 * 60:
        raise argparse.ArgumentTypeError(f"{text}: minutes from above 0 to 10080 (a week)")
    return value


def _serve(args: argparse.Namespace) -> int:
    from pipeline.cli import _sd_server

    _quiet_store_log()
    if args.memory_mb < 0:
        print("sunpm sd serve: --memory-mb must be 0 or more", file=sys.stderr)
        return 2
    return _sd_server.serve(args.path, idle_s=args.idle_minutes * 60,
                            memory_bytes=args.memory_mb << 20, open_dump=_open_dump,
                            answer=_one_question)


def _reexport(args: argparse.Namespace) -> int:
    from config.errors import SunpmError
    from sdcard import reexport as reexport_mod

    _quiet_store_log()
    start_ns = int(args.start.timestamp()) * 1_000_000_000
    end_ns = int(args.end.timestamp()) * 1_000_000_000
    if end_ns <= start_ns:
        print("sunpm sd reexport: --to must be after --from", file=sys.stderr)
        return 2
    if _out_refused("sd reexport", args.out):
        return 2
    try:
        dump = _open_dump(args.path)
    except (SunpmError, OSError) as err:
        print(f"sunpm sd reexport: {err}", file=sys.stderr)
        return 2
    try:
        bar = _bar(0, "window")
        with bar:
            def planned(total: int) -> None:
                bar.reset(total=total)

            result = reexport_mod.reexport(
                dump, server=args.server, start_ns=start_ns, end_ns=end_ns, out=args.out,
                config_dir=args.config, allow_partial=args.allow_partial,
                progress=bar.update, on_plan=planned)
    except (SunpmError, OSError) as err:
        print(f"sunpm sd reexport: {err}", file=sys.stderr)
        return 1
    for finding in dump.findings:
        print(f"sunpm sd reexport: {finding.level}: {finding.message}", file=sys.stderr)
    for name in result.partial:
        print(f"{name}: {reexport_mod.PARTIAL}", file=sys.stderr)
    for name in result.differing:
        print(f"{name}: same text as delivered, other compressed bytes", file=sys.stderr)
    print(f"{len(result.files)} files written to {args.out} ({result.windows} windows; "
          f"{result.undelivered} of the files not delivered to server {args.server} yet)")
    return 0


def _sql_session(dump: Dump, fmt: str) -> int:
    """Many questions over one open dump: a prompt on a terminal (a statement ends with `;`, a
    failed one is said and the next asked; `.quit` or end of input leaves), else every
    statement of standard input in turn, stopping at the first that fails (exit 1, naming it)."""
    import duckdb

    from config.errors import SunpmError
    from sdcard import sql as sql_mod

    session = sql_mod.Session(dump)
    try:
        if not sys.stdin.isatty():
            text = sys.stdin.read()
            unparsed: duckdb.Error | None = None
            try:
                statements = session.statements(text)
            except duckdb.Error:
                statements, unparsed = session.statements_before_error(text)
            said: set[str] = set()
            for number, statement in enumerate(statements, 1):
                try:
                    with _interruptible(session):
                        _answer(session, statement, fmt)
                except (SunpmError, duckdb.Error) as err:
                    print(f"sunpm sd sql: statement {number}: {str(err).splitlines()[0]}",
                          file=sys.stderr)
                    return 1
                finally:
                    _print_findings(dump, said)
            if unparsed is not None:
                print(f"sunpm sd sql: statement {len(statements) + 1}: "
                      f"{str(unparsed).splitlines()[0]}", file=sys.stderr)
                return 1
            return 0
        _prompt(session, dump, fmt)
        return 0
    finally:
        session.close()


def _prompt(session: Session, dump: Dump, fmt: str) -> None:
    import time

    import duckdb

    from config.errors import SunpmError

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    print("DuckDB SQL over records, journal and definitions; end a statement with ';', "
          "leave with .quit or Ctrl-D.", file=sys.stderr)
    pending: list[str] = []
    said: set[str] = set()
    _print_findings(dump, said)
    while True:
        try:
            line = input("  ...> " if pending else "sd> ")
        except EOFError:
            print(file=sys.stderr)
            return
        except KeyboardInterrupt:
            print(file=sys.stderr)
            pending.clear()
            continue
        if not pending and line.strip() in (".quit", ".exit", "\\q"):
            return
        pending.append(line)
        text = "\n".join(pending)
        if not text.rstrip().endswith(";"):
            continue
        pending.clear()
        started = time.perf_counter()
        try:
            for statement in session.statements(text):
                with _interruptible(session):
                    _answer(session, statement, fmt)
        except KeyboardInterrupt:
            print("(interrupted)", file=sys.stderr)
        except (SunpmError, duckdb.Error) as err:
            print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        else:
            print(f"({time.perf_counter() - started:.2f} s)", file=sys.stderr)
        _print_findings(dump, said)


#: Set by Ctrl-C inside `_interruptible` (the main thread of `sd sql`'s own process only).
_CTRL_C: Final = threading.Event()


@contextlib.contextmanager
def _interruptible(session: Session) -> Iterator[None]:
    """Ctrl-C stops the session's DuckDB query at once, then raises KeyboardInterrupt. Python
    runs a signal's handler only between bytecodes, which a long scan in DuckDB's C code does
    not reach for minutes (Ctrl-C did nothing): the wake-up byte the signal writes at once has a
    thread interrupt the query instead. Only in the main thread, where signals are handled."""
    import os
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = _CTRL_C
    caught.clear()
    signalled, wakeup = os.pipe()
    os.set_blocking(wakeup, False)

    def watch() -> None:
        while byte := os.read(signalled, 1):
            if byte[0] == signal.SIGINT:
                caught.set()
                session.interrupt()

    previous_handler = signal.signal(signal.SIGINT, lambda _signum, _frame: caught.set())
    previous_wakeup = signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="sd-sql-ctrl-c", daemon=True)
    watcher.start()
    try:
        yield
    except Exception:
        if not caught.is_set():
            raise
        # The query's error is the interrupt's doing (DuckDB: `Query interrupted`).
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        signal.signal(signal.SIGINT, previous_handler)
        os.close(wakeup)    # the watcher reads the end of the pipe and returns
        watcher.join()
        os.close(signalled)
    if caught.is_set():
        raise KeyboardInterrupt


def _answer(session: Session, statement: str, fmt: str) -> None:
    from sdcard import sql as sql_mod

    answer = session.ask(statement)
    if answer is not None:
        columns, chunks = answer
        sql_mod.write(columns, chunks, fmt, sys.stdout)
        sys.stdout.flush()


def _print_findings(dump: Dump, said: set[str], err: IO[str] | None = None) -> None:
    """The dump's findings not `said` yet (a scan adds those it meets), then said."""
    for finding in dump.findings:
        line = f"sunpm sd sql: {finding.level}: {finding.message}"
        if line not in said:
            said.add(line)
            print(line, file=sys.stderr if err is None else err)


def _export_parquet(args: argparse.Namespace) -> int:
    from config.errors import SunpmError
    from sdcard import export as export_mod

    _quiet_store_log()
    if _out_refused("sd export-parquet", args.out):
        return 2
    from config.identity import UID_PATTERN

    if args.uid is not None and not UID_PATTERN.fullmatch(args.uid):
        # The uid= partition of the fleet dataset: a unit's uid, as config.ini takes it.
        print(f"sunpm sd export-parquet: uid '{args.uid}' is not 1..32 of A-Z a-z 0-9 -",
              file=sys.stderr)
        return 2
    try:
        dump = _open_dump(args.path)
    except (SunpmError, OSError) as err:
        print(f"sunpm sd export-parquet: {err}", file=sys.stderr)
        return 2
    try:
        with _bar(export_mod.progress_steps(dump), "segment") as bar:
            result = export_mod.export_parquet(dump, args.out, uid=args.uid, progress=bar.update)
    except (SunpmError, OSError) as err:
        print(f"sunpm sd export-parquet: {err}", file=sys.stderr)
        return 1
    for finding in dump.findings:
        print(f"sunpm sd export-parquet: {finding.level}: {finding.message}", file=sys.stderr)
    print(f"{result.rows} record rows and {result.alarms} alarms written to {args.out} "
          f"({len(result.partitions)} partitions)")
    return 0


def register_ingest(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ingest", help="a server tree's DATA and ALARM files into the Parquet fleet dataset",
        description="Read the DATA and ALARM files of a server tree (ours or a WebdynSunPM "
                    "unit's) with its DEF/ and CONFIG/ files, and add them, scaled and named, "
                    "to OUT (uid=/device=/date=). Files already ingested are skipped.")
    p.add_argument("tree", type=Path, metavar="DIR")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--tz", type=_time_zone,
                   help="time zone of the files when the tree has no configuration (default UTC, "
                        "with a warning)")
    p.set_defaults(handler=_ingest)


def _time_zone(text: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a known IANA time zone "
                                         "(Europe/Paris, UTC ...)") from None
    return text


def _ingest(args: argparse.Namespace) -> int:
    from config.errors import SunpmError
    from sdcard import ingest as ingest_mod
    from sdcard.dump import Level

    if _out_refused("ingest", args.out):
        return 2
    try:
        bar = _bar(0, "file")
        with bar:
            result = ingest_mod.ingest(args.tree, args.out, tz=args.tz, progress=bar.update,
                                       on_total=lambda n: bar.reset(total=n))
    except (SunpmError, OSError) as err:
        print(f"sunpm ingest: {err}", file=sys.stderr)
        return 1
    for finding in result.findings:
        print(f"sunpm ingest: {finding.level}: {finding.message}", file=sys.stderr)
    again = (f" ({len(result.incomplete)} with errors: read again next time)"
             if result.incomplete else "")
    unread = (f", {len(result.unreadable)} unreadable (read again next time)"
              if result.unreadable else "")
    print(f"{len(result.ingested)} files ingested{again} ({result.rows} record rows, "
          f"{result.alarms} alarms){unread}, {len(result.skipped)} already ingested, "
          f"into {args.out}")
    return 1 if any(f.level is Level.ERROR for f in result.findings) else 0

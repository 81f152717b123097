"""`sunpm sd ...` (a store or card dump, read-only) and `sunpm ingest` (the server side).

    sunpm sd inspect PATH [--json]
    sunpm sd fsck PATH [--json]                    exit 0 clean, 1 damaged but readable, 2 unreadable
    sunpm sd sql PATH "SELECT ..." [--format table|csv|json]
    sunpm sd export-parquet PATH OUT
    sunpm sd reexport PATH --server N --from T --to T --out DIR [--config DIR] [--allow-partial]
    sunpm ingest DIR OUT

Nothing here writes to PATH (docs/behaviour.md §12); the work is `sdcard`'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from config.errors import SunpmError
from sdcard import fsck as fsck_mod
from sdcard import inspect as inspect_mod
from sdcard import sql as sql_mod
from sdcard.dump import DumpError, open_dump


def register(subparsers: Any) -> None:
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

    p = sub.add_parser("sql", help="DuckDB SQL over `records` and `journal`")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("query", metavar="SQL")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(handler=_sql)


def _quiet_store_log() -> None:
    # Every store report reaches the user once, as a finding of the command; the store's own
    # log lines would repeat them.
    logging.getLogger("sunpm.store").setLevel(logging.CRITICAL)


def _bar(total: int, unit: str) -> tqdm[Any]:
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=None, leave=False)


def _inspect(args: argparse.Namespace) -> int:
    _quiet_store_log()
    try:
        dump = open_dump(args.path)
        with _bar(len(dump.devices()), "device") as bar:
            report = inspect_mod.inspect(dump, progress=bar.update)
    except (SunpmError, OSError) as err:
        print(f"sunpm sd inspect: {err}", file=sys.stderr)
        return 2
    print(inspect_mod.to_json(report) if args.json else inspect_mod.render_table(report))
    return 0


def _fsck(args: argparse.Namespace) -> int:
    _quiet_store_log()
    try:
        dump = open_dump(args.path)
    except DumpError as err:
        if args.json:
            print(json.dumps({"code": fsck_mod.UNREADABLE, "error": str(err)}))
        print(f"sunpm sd fsck: {err}", file=sys.stderr)
        return fsck_mod.UNREADABLE
    try:
        with _bar(len(dump.devices()) + 1, "stream") as bar:
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
    _quiet_store_log()
    import duckdb

    try:
        dump = open_dump(args.path)
        columns, chunks = sql_mod.run_query(dump, args.query)
        sql_mod.write(columns, chunks, args.format, sys.stdout)
    except (SunpmError, OSError) as err:
        print(f"sunpm sd sql: {err}", file=sys.stderr)
        return 2
    except duckdb.Error as err:
        print(f"sunpm sd sql: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    for finding in dump.findings:
        print(f"sunpm sd sql: {finding.level}: {finding.message}", file=sys.stderr)
    return 0

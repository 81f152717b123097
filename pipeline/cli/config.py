"""`sunpm config init|validate|show DIR`: the configuration directory from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Directories of the configuration tree (docs/formats.md §3) that `init` creates.
_TREE = ("CONFIG", "DEF", "SCRIPT", "CERT")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="create, check and show a configuration")
    sub = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")

    init = sub.add_parser("init", help="write a complete, valid default configuration")
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument("--uid", help="gateway uid (default: from the host's MAC address)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(handler=_init)

    validate = sub.add_parser("validate", help="check every file; one line per problem")
    validate.add_argument("directory", type=Path, metavar="DIR")
    validate.add_argument("--uid", help="uid to check when CONFIG holds several")
    validate.set_defaults(handler=_validate)

    show = sub.add_parser("show", help="print the normalised configuration")
    show.add_argument("directory", type=Path, metavar="DIR")
    show.add_argument("--uid", help="uid to show when CONFIG holds several")
    show.add_argument("--json", action="store_true", help="as JSON (the only form so far)")
    show.set_defaults(handler=_show)


def uid_refused(command: str, uid: str | None) -> bool:
    """A `--uid` that is not a uid (docs/formats.md §2) is said and refused (exit 2): it names
    files, so `../x` or `a_b` must never reach a path or pass as a valid configuration."""
    from config.identity import UID_PATTERN

    if uid is None or UID_PATTERN.fullmatch(uid):
        return False
    print(f"sunpm {command}: uid '{uid}' is not 1..32 of A-Z a-z 0-9 -", file=sys.stderr)
    return True


def directory_unusable(command: str, directory: Path) -> bool:
    """A DIR that does not exist or is no directory is said and refused (exit 2, a path that
    cannot be used), as `sunpm sd` refuses its store: no configuration to judge, valid or not."""
    if directory.is_dir():
        return False
    why = "not a directory" if directory.exists() else "no such directory"
    print(f"sunpm {command}: {directory}: {why}", file=sys.stderr)
    return True


def _init(args: argparse.Namespace) -> int:
    # `config` is imported by the handlers, not at the top: `sunpm --help` stays fast.
    from config import default_uid
    from config.defaults import default_files

    directory: Path = args.directory
    uid: str = args.uid or default_uid()
    if uid_refused("config init", uid):
        return 2
    if directory.exists() and not directory.is_dir():
        print(f"sunpm config init: {directory}: exists and is not a directory", file=sys.stderr)
        return 2
    others = sorted(p.name.removesuffix("_config.ini")
                    for p in (directory / "CONFIG").glob("*_config.ini")
                    if p.name != f"{uid}_config.ini") if (directory / "CONFIG").is_dir() else []
    if others:
        # A folder of two uids is refused by the gateway ("several configurations"), --force or
        # not: the files of the other uid are not this command's to delete.
        print(f"sunpm config init: {directory / 'CONFIG'} holds the configuration of "
              f"{', '.join(others)}; a second uid there would be refused by sunpm run (choose "
              "another DIR)", file=sys.stderr)
        return 1
    files = default_files(uid)
    existing = [rel for rel in files if (directory / rel).exists()]
    if existing and not args.force:
        print(f"sunpm config init: {directory / existing[0]} exists; use --force to overwrite",
              file=sys.stderr)
        return 1
    from fsio import write_file_durably

    try:
        for sub in _TREE:
            (directory / sub).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        # A DIR below a file, or in a folder not ours: a path that cannot be used (exit 2).
        from pipeline.cli import os_error_text

        print(f"sunpm config init: {os_error_text(err)}", file=sys.stderr)
        return 2
    for rel, data in files.items():
        # Replaced whole, never written into: a FIFO or a link left in a file's place (`--force`)
        # would block the command or write through to another file, and a cut run leaves each
        # file as it was or complete.
        write_file_durably(directory / rel, data)
    print(f"{directory}: configuration of {uid} written ({len(files)} files)", file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from config import Severity, check_site, find_uid

    if uid_refused("config validate", args.uid) or \
            directory_unusable("config validate", args.directory):
        return 2
    problems = check_site(args.directory, args.uid)
    for problem in problems:
        print(problem)
    errors = sum(p.severity is Severity.ERROR for p in problems)
    if errors:
        print(f"{args.directory}: {errors} error(s), {len(problems) - errors} warning(s); "
              "configuration rejected", file=sys.stderr)
        return 1
    print(f"{args.directory}: configuration of {find_uid(args.directory, args.uid)} is valid "
          f"({len(problems)} warning(s))", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    from config import ConfigError, load_site, site_to_json

    if uid_refused("config show", args.uid) or directory_unusable("config show", args.directory):
        return 2
    try:
        site = load_site(args.directory, args.uid)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 1
    print(json.dumps(site_to_json(site), indent=2, ensure_ascii=False))
    return 0

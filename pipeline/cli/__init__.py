"""`sunpm`: the command line. Each command family is a module here with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

#: One line per command family; a module registers its own sub-commands.
_FAMILIES = ("config", "export", "discover", "tic", "modbus", "sd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sunpm", description="Photovoltaic plant gateway.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in _FAMILIES:
        importlib.import_module(f"pipeline.cli.{family}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`sunpm config show DIR | head`): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())

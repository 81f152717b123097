"""`sunpm`: the command line. Each command family is a module here with `register(subparsers)`.

Start-up time: `sunpm --help` must answer at once (under 0.3 s), so registering a family imports
nothing heavy; the drivers, the store and the exporters (pyarrow, asyncssh, pymodbus …) are
imported by the handler that uses them. A run of one command registers its own family alone.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

#: One line per command family; a module registers its own sub-commands.
_FAMILIES = ("config", "export", "discover", "tic", "modbus", "run", "cmd", "sd")
#: The family that registers each command: a run of one command imports its family alone
#: (asyncio and the drivers' helpers cost `sunpm sd sql` tens of milliseconds otherwise).
_FAMILY_OF = {"config": "config", "export": "export", "discover": "discover", "tic": "tic",
              "modbus": "modbus", "run": "run", "cmd": "cmd", "archive": "cmd", "sd": "sd",
              "ingest": "sd"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser; with a known `command`, only its family's (what a run needs)."""
    import argparse
    import importlib

    class ShowVersion(argparse.Action):
        """`--version`, reading the installed distribution's metadata only when asked."""

        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: object, option_string: str | None = None) -> None:
            from importlib.metadata import PackageNotFoundError, version

            try:
                text = version("sunpm")
            except PackageNotFoundError:
                text = "unknown (not installed)"
            print(f"sunpm {text}")
            parser.exit()

    parser = argparse.ArgumentParser(prog="sunpm", description="Photovoltaic plant gateway.")
    parser.add_argument("--version", action=ShowVersion, nargs=0,
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    family = _FAMILY_OF.get(command or "")
    for name in _FAMILIES if family is None else (family,):
        importlib.import_module(f"pipeline.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    # Ctrl-C may come while the parser or the command's module is still loading (their first
    # tenth of a second): said as the command's interruption, as it is later, not as a traceback.
    named = _name_before_parsing(words)
    try:
        if argv is None and (words[:1] == ["run"] or words[:2] == ["sd", "serve"]):
            _stop_signals_end_at_once(hangup_ignored=words[0] == "run")
        return _command(words, own_process=argv is None)
    except _StopBeforeStart as early:
        print(f"{named}: {early.signal_name} received; stopped before starting", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        print(f"{named}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        if _stop_received is None:
            raise
        # The early stop, come out as another exception: Python 3.11 wraps one raised while a
        # class is made (`Error calling __set_name__`) in a RuntimeError.
        print(f"{named}: {_stop_received} received; stopped before starting", file=sys.stderr)
        return 0


def _command(words: list[str], *, own_process: bool) -> int:
    if own_process and words[:2] == ["sd", "sql"]:
        # A question a running `sunpm sd serve` answers is asked before the parser and the
        # command's module are loaded: they were half of such a question's time.
        from pipeline.cli import _sd_client

        asked = _sd_client.question(words[2:])
        if asked is not None:
            code = _guarded("sunpm sd sql", lambda: _sd_client.ask(*asked))
            if code is not None:
                return code
    # The command is the first word; an option before it (`--help`, `--version`) or none at
    # all gets the whole parser, which lists every command.
    parser = build_parser(words[0] if words and not words[0].startswith("-") else None)
    args = parser.parse_args(words)
    # The process is this command alone (the console script, `python -m pipeline.cli`), not a
    # caller's: a handler may then leave out, for good, modules it never needs.
    args.own_process = own_process
    code = _guarded(_command_name(args), lambda: args.handler(args))
    assert code is not None, "a command's handler returns its exit code"
    return code


#: The families whose commands are actions of theirs (`sunpm sd inspect`, named by two words).
_WITH_ACTIONS = frozenset({"config", "modbus", "tic", "sd"})


def _name_before_parsing(words: Sequence[str]) -> str:
    """The command's name as `_command_name` will say it, from the words alone; `sunpm` while
    no command is given."""
    if not words or words[0] not in _FAMILY_OF:
        return "sunpm"
    if words[0] in _WITH_ACTIONS and len(words) > 1 and not words[1].startswith("-"):
        return f"sunpm {words[0]} {words[1]}"
    return f"sunpm {words[0]}"


class _StopBeforeStart(KeyboardInterrupt):
    """SIGINT or SIGTERM to `sunpm run` or `sunpm sd serve` before their own handlers took
    over: nothing started yet, so the stop they promise (exit 0) is simply an end. A
    KeyboardInterrupt: code that drops other exceptions lets it through (asyncio's loop
    callbacks log and drop any other)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


#: The stop signal `_stop_signals_end_at_once` took, if one came.
_stop_received: str | None = None


def stop_received() -> str | None:
    """The stop signal (`SIGTERM`) taken before the command's own handlers, if one came: one
    whose end never got out (it came while a finalizer ran, which drops any exception) is
    still honoured by the command once its handlers are in place."""
    return _stop_received


def _stop_signals_end_at_once(*, hangup_ignored: bool) -> None:
    """SIGINT and SIGTERM end the command as soon as they come, until the command's own
    handlers replace these (`sunpm run`'s event loop, `sunpm sd serve`'s): without them,
    SIGTERM killed it (exit 143) and SIGINT raised KeyboardInterrupt (exit 130), where both
    promise a stop with exit 0. With `hangup_ignored`, SIGHUP (`systemctl reload`) is let pass
    until the gateway's own handler: the start reads the configuration folder as it is then,
    which is what a reload asks for; its default action would end the service."""
    import signal

    def stop(signum: int, frame: object) -> None:
        global _stop_received
        _stop_received = signal.Signals(signum).name
        raise _StopBeforeStart(_stop_received)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    if hangup_ignored:
        # A handler rather than SIG_IGN: a disposition set to ignore would be inherited by
        # the processes the gateway starts (the demo's broker); a handler is not.
        signal.signal(signal.SIGHUP, lambda signum, frame: None)


def _guarded(command: str, run: Callable[[], int | None]) -> int | None:
    """What `run` returns, or the exit code of how it failed, said as `command`'s."""
    try:
        return run()
    except _StopBeforeStart:
        raise
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`sunpm config show DIR | head`): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        # A path given on the command line that cannot be read or written: say which and why.
        print(f"{command}: {os_error_text(err)}", file=sys.stderr)
        return 1
    except Exception as err:
        from config.errors import SunpmError

        if not isinstance(err, SunpmError):
            raise
        print(f"{command}: {err}", file=sys.stderr)
        return 1


def _command_name(args: argparse.Namespace) -> str:
    """`sunpm config init`: the family and, when it has some, the action."""
    action = getattr(args, f"{args.command}_command", None)
    return " ".join(["sunpm", args.command] + ([action] if action else []))


def os_error_text(err: OSError) -> str:
    """`<path>: <reason>` for an OSError, without Python's `[Errno n]` decoration."""
    reason = err.strerror or str(err)
    if err.filename is None:
        return reason
    return f"{err.filename}: {reason}"


if __name__ == "__main__":
    sys.exit(main())

"""`sunpm run [--config DIR] [--data DIR] [--web-port PORT]`: the gateway service.

With `--config`, the gateway runs that configuration (the store at `STORE_Path`, or
`DATA/store` when it is empty). Without it, `DATA/config` is run when it holds a configuration;
a folder that holds none (or holds the demo) gets the demo plant (pipeline/service/demo.py).
SIGINT and SIGTERM stop it cleanly (exit 0); SIGHUP checks the configuration folder at once.
Exit codes, chosen for systemd's `RestartPreventExitStatus` (docs/sunpm.service): 1 for what may
pass by itself (a crash, a full disk), restarted; 2 for what a person must put right (a rejected
configuration, a data folder the service may not write); 3 for a second gateway on the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cli import stop_received

if TYPE_CHECKING:
    from pipeline.service.gateway import Gateway

log = logging.getLogger("sunpm.system")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run", help="run the gateway (without a configuration: the demo plant)")
    parser.add_argument("--config", type=Path, metavar="DIR",
                        help="configuration directory (default: DATA/config, else the demo)")
    parser.add_argument("--data", type=Path, metavar="DIR", default=Path("sunpm-data"),
                        help="data directory: store, demo server folder (default ./sunpm-data)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        default="info", help="stderr log level (default info)")
    parser.add_argument("--web-port", type=_web_port, metavar="PORT",
                        help="web UI port for this run instead of WEB_Port (0: a free port)")
    parser.epilog = ("exit status: 0 stopped by SIGINT or SIGTERM, 1 an unexpected error or a "
                     "stop past 9 s, 2 a rejected configuration or a data folder it may not "
                     "write, 3 another sunpm runs on this data")
    parser.set_defaults(handler=_run)


def _web_port(text: str) -> int:
    """A port the web UI may listen on; 0 asks the system for a free one (a first demo start on
    a machine whose 8080 is not the demo's to take)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..65535)")
    return port


def _lean_imports() -> None:
    """pandas refused for good: pyarrow imports it, when it is installed (a dev or analysis
    extra), the first time it converts a Python value, some 35 MB resident for nothing (the
    gateway never hands pandas a table). numpy refused while pyarrow loads (16 MB resident; the
    gateway never asks pyarrow for a numpy array): a library that imports numpy later gets it."""
    from pipeline.cli._refused import RefusedImport

    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, RefusedImport("pandas", "sunpm run"))
    if "pyarrow" not in sys.modules and "numpy" not in sys.modules:
        without_numpy = RefusedImport("numpy", "pyarrow in sunpm run")
        sys.meta_path.insert(0, without_numpy)
        try:
            import pyarrow.compute  # noqa: F401 - pyarrow and its compute module, without numpy
        finally:
            sys.meta_path.remove(without_numpy)


def _arrow_on_malloc() -> None:
    """Arrow buffers from the C library's heap rather than mimalloc's: mimalloc keeps the pages
    a session's rendering and each commit thread freed, some 10 MB more resident between
    sessions (gateway_load), while the heap's are handed back after each session
    (`release_free_memory`)."""
    import pyarrow

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())


def _fewer_malloc_arenas() -> None:
    """Two glibc malloc arenas instead of eight per core: the store's commit threads and the
    session's rendering thread each took an arena of their own, and the free space left in
    each one stayed resident (about 10 MB, measured with gateway_load)."""
    try:
        import ctypes
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return      # not glibc: its allocator has its own rules
    m_arena_max = -8
    mallopt(m_arena_max, 2)


def _settle_start_up_heap() -> None:
    """Everything loaded at start-up (modules, classes, the drivers' and the exporters' tables,
    about a hundred thousand objects) lives as long as the process: frozen out of the cyclic
    collector's way. Each full collection otherwise walks all of it again, and under a heavy
    append load (many acknowledgements in flight) full collections come every few hundred
    milliseconds. Frozen objects are still freed by their reference counts; only a cycle among
    them would never be collected, and start-up leaves none worth the walks."""
    gc.collect()
    gc.freeze()


def _run(args: argparse.Namespace) -> int:
    _lean_imports()
    _fewer_malloc_arenas()
    _arrow_on_malloc()
    # Imported here: the service pulls in the store and the exporters, which `sunpm --help`
    # must not wait for (pipeline/cli/__init__.py).
    from pipeline.service.logs import setup_stderr

    refused = _unusable_data_dir(args.data)
    if refused is not None:
        print(f"sunpm run: {refused[1]}", file=sys.stderr)
        return refused[0]
    setup_stderr(getattr(logging, args.log_level.upper()))
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from pipeline.service.demo import is_demo, is_demo_seed, run_demo
    from pipeline.service.gateway import Gateway, GatewayRefused
    from pipeline.service.scripts import ScriptsPlugin
    from pipeline.web import WebPlugin

    _settle_start_up_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stopping, stop, sig)
    early = stop_received()
    if early is not None:
        # A stop whose end got lost on its way out (a finalizer ran as it came): nothing
        # started yet either.
        print(f"sunpm run: {early} received; stopped before starting", file=sys.stderr)
        return 0
    data_dir: Path = args.data.absolute()
    config_dir: Path | None = args.config
    if config_dir is None and (data_dir / "config" / "CONFIG").is_dir() and not (
            is_demo(data_dir) or is_demo_seed(data_dir)):
        config_dir = data_dir / "config"
    # SIGHUP, the daemons' "configuration changed" (`systemctl reload`): the folder is looked at
    # now rather than at the watch's next turn; a change applies as any local edit. Without it
    # SIGHUP would end the process with no clean stop.
    def on_hangup(gateway: Gateway) -> None:
        loop.add_signal_handler(signal.SIGHUP, _hangup, gateway)

    try:
        if config_dir is None:
            restart = await run_demo(data_dir, stop, on_hangup, web_port=args.web_port)
        else:
            gateway = Gateway(config_dir.absolute(), data_dir,
                              plugins=[ScriptsPlugin(), WebPlugin(port=args.web_port)])
            on_hangup(gateway)
            await gateway.run(stop)
            restart = gateway.restart_requested
    except GatewayRefused as err:
        print(f"sunpm run: {err}", file=sys.stderr)
        return err.code
    except OSError as err:
        if err.filename is None:
            log.error("sunpm stopped on an unexpected error: %s", err, exc_info=err)
            return 1
        # A file of the data or configuration folder: the folder's fault, not the code's.
        log.error("sunpm stopped: %s: %s%s", err.filename, err.strerror,
                  _who_runs() if err.errno in _NEEDS_A_PERSON else "")
        return 2 if err.errno in _NEEDS_A_PERSON else 1
    except Exception as err:  # the top level: say what stopped it
        log.error("sunpm stopped on an unexpected error: %s", err, exc_info=err)
        return 1
    if restart:
        # `reboot`: the service restarts, not the host (docs/behaviour.md §7.3), as the same
        # process (systemd keeps tracking it).
        log.info("Restarting")
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, "-m", "pipeline.cli", *sys.argv[1:]])
    return 0


#: What a restart cannot mend: the service is not restarted for it (docs/sunpm.service).
_NEEDS_A_PERSON = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _unusable_data_dir(data: Path) -> tuple[int, str] | None:
    """The exit code and message when the service cannot write its data folder, made here if
    missing; None when it can. Checked before anything starts, so that the message names the
    folder rather than the first file written in it."""
    try:
        if data.exists() and not data.is_dir():
            return 2, f"--data {data}: exists and is not a directory"
        data.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        code = 2 if err.errno in _NEEDS_A_PERSON else 1
        where = err.filename if err.filename is not None else data
        return code, (f"--data {data}: cannot create it: {where}: {err.strerror}"
                      f"{_who_runs() if code == 2 else ''}")
    if os.access(data, os.W_OK | os.X_OK):
        return None
    if os.statvfs(data).f_flag & os.ST_RDONLY:
        return 2, f"--data {data}: on a read-only file system"
    info = data.stat()
    return 2, (f"--data {data}: not writable (owner {_user(info.st_uid)}, mode "
               f"{info.st_mode & 0o7777:04o}){_who_runs()}")


def _who_runs() -> str:
    return f"; sunpm runs as {_user(os.geteuid())}"


def _user(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} ({uid})"
    except KeyError:
        return f"uid {uid}"


#: The stop must be over by then (the store is crash-safe: a forced exit loses at most the
#: records and events not yet committed, as a power cut would).
STOP_GUARD_S = 9.0


def _stopping(stop: asyncio.Event, sig: signal.Signals) -> None:
    if stop.is_set():
        log.warning("%s received again; exiting now", sig.name)
        _force_exit()
    log.info("%s received; stopping", sig.name)
    stop.set()
    asyncio.get_running_loop().call_later(STOP_GUARD_S, _stop_overdue)


def _hangup(gateway: Gateway) -> None:
    log.info("SIGHUP received; checking the configuration folder")
    gateway.config_written()


def _stop_overdue() -> None:
    log.error("Stop not finished after %.0f s; exiting without it", STOP_GUARD_S)
    _force_exit()


def _force_exit() -> None:
    logging.shutdown()
    sys.stderr.flush()
    os._exit(1)

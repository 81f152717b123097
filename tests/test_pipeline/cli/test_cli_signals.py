"""A signal early in a command's life: while its parser and modules load, before its own handlers.

Ctrl-C then is said as at any later moment (`sunpm <command>: interrupted`, exit 130), never as
a traceback; `sunpm run` and `sunpm sd serve`, which SIGINT and SIGTERM stop with exit 0, stop
with exit 0 from their first moment (docs/cli.md).

Each command runs as the console script runs it (`main()` reading its own argv), from a small
entry that says when it calls `main`: the interpreter's own start (before any of sunpm's code
runs) is left out of the moments tried. A signal at an exact point is sent by the process to
itself as a module is first looked for (the parser's, the command's family module, the
service's first module).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import _name_before_parsing, build_parser
from store import Log

ROOT = Path(__file__).resolve().parents[3]

_ENTRY = r"""
import os, sys
ready, at, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if at:
    import signal

    def send():
        sent = name.removesuffix(" in a finalizer").removesuffix(" as a class is made")
        os.kill(os.getpid(), getattr(signal, sent))
        for _ in range(1000):   # its handler runs here, at a turn of the loop
            pass

    class Finalized:
        def __del__(self):
            send()

    class Named:
        def __set_name__(self, owner, attribute):
            send()

    class SignalAt:
        def find_spec(self, fullname, path=None, target=None):
            if fullname == at:
                sys.meta_path.remove(self)
                if name.endswith(" in a finalizer"):
                    Finalized()   # dropped at once
                elif name.endswith(" as a class is made"):
                    type("Made", (), {"named": Named()})
                else:
                    send()
            return None

    sys.meta_path.insert(0, SignalAt())
import pipeline.cli
command = pipeline.cli._command

def ready_then(words, *, own_process):
    # Said from inside `main`'s handling: a signal sent once this is read lands in sunpm's
    # code, never in this script's last lines before `main`.
    os.write(ready, b".")
    os.close(ready)
    return command(words, own_process=own_process)

pipeline.cli._command = ready_then
sys.argv = ["sunpm", *sys.argv[4:]]
sys.exit(pipeline.cli.main())
"""


class _Command:
    """`sunpm WORDS` in a process of its own; `started()` returns once `main` runs the command
    (the words given, the interruption's handling in place)."""

    def __init__(self, words: list[str], *, at: str = "", send: str = "",
                 env: dict[str, str] | None = None) -> None:
        read_end, write_end = os.pipe()
        self._ready: int | None = read_end
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(write_end), at, send, *words],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                pass_fds=(write_end,), cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        finally:
            os.close(write_end)

    def started(self) -> None:
        assert self._ready is not None
        with open(self._ready, "rb") as ready:
            self._ready = None
            assert ready.read(1) == b".", "the command's entry never reached main()"

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def finished(self, timeout_s: float = 60) -> tuple[int, str]:
        """The exit code and standard error; killed (and failed) past `timeout_s`."""
        try:
            _, err = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
            raise AssertionError(f"still running after {timeout_s} s:\n{err}") from None
        finally:
            if self._ready is not None:   # never read: the entry's word waits in the pipe
                os.close(self._ready)
                self._ready = None
        return self.process.returncode, err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store as a first start leaves it: what `sd inspect` and `sd serve` open."""
    path = tmp_path_factory.mktemp("dump") / "store"

    async def made() -> None:
        await (await Log.open(path)).close()

    asyncio.run(made())
    return path


@pytest.fixture
def runtime() -> Iterator[Path]:
    """An XDG_RUNTIME_DIR of the test's own, short enough for `sd serve`'s socket path."""
    folder = Path(tempfile.mkdtemp(prefix="sig", dir="/tmp"))
    yield folder
    shutil.rmtree(folder)


# ----------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize(("words", "at", "named"), [
    (["config", "validate", "{store}"], "argparse", "sunpm config validate"),
    (["sd", "inspect", "{store}"], "pipeline.cli.sd", "sunpm sd inspect"),
    (["sd", "sql", "{store}", "SELECT 1"], "pipeline.cli._sd_client", "sunpm sd sql"),
    (["--version"], "importlib.metadata", "sunpm"),
])
def test_ctrl_c_while_the_parser_loads_is_said_as_an_interruption(
        store: Path, words: list[str], at: str, named: str) -> None:
    command = _Command([w.format(store=store) for w in words], at=at, send="SIGINT")
    code, err = command.finished()
    assert (code, err) == (130, f"{named}: interrupted\n")


def test_the_name_said_before_parsing_is_the_parsers() -> None:
    """The interruption of a command whose parser is not loaded yet names it as the parser's
    `sunpm <command> [<action>]` does: a family with actions is known as such to both."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, its_parser in commands.choices.items():
        actions = [a for a in its_parser._actions if isinstance(a, argparse._SubParsersAction)]
        for words in ([[command, action] for action in actions[0].choices] if actions
                      else [[command]]):
            assert _name_before_parsing([*words, "ARG"]) == " ".join(["sunpm", *words])


def test_ctrl_c_at_early_moments_is_never_a_traceback(store: Path) -> None:
    """A real start, interrupted at moments spread over its first 0.15 s (of some 0.3 s to
    0.9 s): the parser's load, the command's modules, the store's opening."""
    for delay_s in (0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15):
        command = _Command(["sd", "inspect", str(store)])
        command.started()
        time.sleep(delay_s)
        command.send(signal.SIGINT)
        code, err = command.finished()
        assert "Traceback" not in err, (delay_s, err)
        if code != 0:   # else done before the signal came
            assert (code, err[-30:]) == (130, "sunpm sd inspect: interrupted\n"), (delay_s, err)


# ----------------------------------------------------------------------------- sunpm run


def _run_words(data: Path) -> list[str]:
    return ["run", "--data", str(data), "--web-port", "0"]


@pytest.mark.parametrize(("at", "sig"), [
    ("pipeline.cli.run", "SIGTERM"),          # the parser's load
    ("pipeline.cli.run", "SIGINT"),
    ("pipeline.service.demo", "SIGTERM"),     # in the event loop, before its own handlers
    ("pipeline.service.demo", "SIGINT"),
])
def test_run_stopped_before_it_starts_exits_0_at_once(tmp_path: Path, at: str,
                                                      sig: str) -> None:
    data = tmp_path / "data"
    code, err = _Command(_run_words(data), at=at, send=sig).finished()
    assert (code, err) == (0, f"sunpm run: {sig} received; stopped before starting\n")
    assert not (data / "store").exists()


@pytest.mark.parametrize("words", ["run", "sd serve"])
def test_a_stop_as_a_class_is_made_still_stops_before_starting(
        tmp_path: Path, store: Path, runtime: Path, words: str) -> None:
    """Python 3.11 wraps what a signal handler raises while a class is made (`__set_name__`)
    in a RuntimeError: the early stop, come out so, still ends the command with exit 0, not a
    traceback (`run`) or "cannot open" with exit 2 (`sd serve`, opening the dump)."""
    data = tmp_path / "data"
    argv, at = ((_run_words(data), "pipeline.service.demo") if words == "run" else
                (["sd", "serve", str(store)], "sdcard.dump"))
    code, err = _Command(argv, at=at, send="SIGTERM as a class is made",
                         env={"XDG_RUNTIME_DIR": str(runtime)}).finished()
    assert (code, err) == (0, f"sunpm {words}: SIGTERM received; stopped before starting\n")
    assert not (data / "store").exists()
    assert [p.name for p in runtime.rglob("*") if p.is_file() or p.is_socket()] == []


def test_run_stopped_as_a_finalizer_runs_still_stops(tmp_path: Path) -> None:
    """A stop signal that comes while a finalizer (`__del__`) runs: the interpreter drops what
    the handler raises there ("Exception ignored in"), so the end never got out. The service
    still stops, before starting anything, once its own handlers are in place."""
    data = tmp_path / "data"
    code, err = _Command(_run_words(data), at="pipeline.service.demo",
                         send="SIGTERM in a finalizer").finished(timeout_s=30)
    assert "Exception ignored in" in err, err   # the end, lost in the test's finalizer
    assert (code, err[err.rindex("sunpm run"):]) == (
        0, "sunpm run: SIGTERM received; stopped before starting\n"), err
    assert not (data / "store").exists()


def test_run_reloaded_as_it_starts_runs_on(tmp_path: Path) -> None:
    """SIGHUP (`systemctl reload`) before the gateway's own handler: the start reads the
    configuration folder as it is, which is what the reload asks; the service is not ended."""
    command = _Command(_run_words(tmp_path / "data"), at="pipeline.cli.run", send="SIGHUP")
    assert command.process.stderr is not None
    seen = []
    # The lines end with the process: killed, and the test failed, if it never stops.
    guard = threading.Timer(90, command.process.kill)
    guard.start()
    try:
        for line in command.process.stderr:
            seen.append(line)
            if "Web UI listening" in line:
                command.send(signal.SIGTERM)
    finally:
        guard.cancel()
    code, _ = command.finished()
    assert code == 0, "".join(seen)
    assert any("SIGTERM received; stopping" in line for line in seen), "".join(seen)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_run_stopped_at_random_early_moments_stops_cleanly(tmp_path: Path,
                                                           sig: signal.Signals) -> None:
    """Before anything started, the end is at once; while the service starts or runs, the stop
    is the clean one: the store closed, readable and whole (`sd fsck` exit 0)."""
    moments = random.Random(f"{sig.name} {time.time_ns()}")
    for attempt in range(5):
        data = tmp_path / f"data{attempt}"
        delay_s = moments.uniform(0, 1.5)
        command = _Command(_run_words(data))
        command.started()
        time.sleep(delay_s)
        command.send(sig)
        code, err = command.finished()
        what = (delay_s, err)
        assert code == 0, what
        assert "Traceback" not in err, what
        if (data / "store").exists():
            assert "sunpm stopped; store closed." in err, what
            fsck = subprocess.run([sys.executable, "-m", "pipeline.cli", "sd", "fsck",
                                   str(data / "store")], capture_output=True, text=True,
                                  timeout=60, check=False, cwd=ROOT)
            assert fsck.returncode == 0, (delay_s, fsck.stdout, fsck.stderr)
        else:
            assert err.endswith(f"sunpm run: {sig.name} received; stopped before starting\n"), \
                what


# ----------------------------------------------------------------------------- sd serve


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_sd_serve_stopped_before_it_serves_exits_0(store: Path, runtime: Path,
                                                   sig: str) -> None:
    command = _Command(["sd", "serve", str(store)], at="pipeline.cli._sd_server", send=sig,
                       env={"XDG_RUNTIME_DIR": str(runtime)})
    code, err = command.finished()
    assert (code, err) == (0, f"sunpm sd serve: {sig} received; stopped before starting\n")
    assert list(runtime.rglob("*.sock")) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_sd_serve_stopped_at_random_early_moments_exits_0(store: Path, runtime: Path,
                                                          sig: signal.Signals) -> None:
    moments = random.Random(f"{sig.name} {time.time_ns()}")
    for _ in range(10):
        delay_s = moments.uniform(0, 1.5)
        command = _Command(["sd", "serve", str(store)], env={"XDG_RUNTIME_DIR": str(runtime)})
        command.started()
        time.sleep(delay_s)
        command.send(sig)
        code, err = command.finished()
        assert (code, "Traceback" in err) == (0, False), (delay_s, err)
        # Stopped before it served, or after: no socket left for an asker to try.
        assert [p.name for p in runtime.rglob("*") if p.is_file() or p.is_socket()] == [], \
            (delay_s, err)


_AFTER_LISTEN = r"""
import os, signal, sys
from pipeline.cli import _sd_server, main
listen, sent = _sd_server._listen, getattr(signal, sys.argv[1])

def listened(path):
    claim = listen(path)
    os.kill(os.getpid(), sent)
    for _ in range(1000):   # its handler runs here, at a turn of the loop
        pass
    return claim

_sd_server._listen = listened
sys.argv = ["sunpm", *sys.argv[2:]]
sys.exit(main())
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_sd_serve_stopped_as_its_socket_is_made_leaves_no_file(store: Path, runtime: Path,
                                                              sig: str) -> None:
    done = subprocess.run([sys.executable, "-c", _AFTER_LISTEN, sig, "sd", "serve", str(store)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "XDG_RUNTIME_DIR": str(runtime)})
    # Its own stop (its handlers are in place before the socket is made): quiet, exit 0.
    assert (done.returncode, done.stderr) == (0, "")
    assert [p.name for p in runtime.rglob("*") if p.is_file() or p.is_socket()] == []

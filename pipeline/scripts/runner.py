"""The script host of the gateway: lifecycle, timers, RPC, persistence and failures
(docs/behaviour.md §9).

    ScriptRunner(host, sources, problems).run()       one task in the service's TaskGroup
      at start: every listed script is enabled (load, header, wsInit); load problems are logged
        and raise `Script failure`
      one Lua thread runs every call (chunk, wsInit, wsStop, timer, RPC), one at a time, each
        within its budget (sandbox.Limits); the event loop only awaits it, so polling, recording
        and delivery go on while a script runs, and a runaway costs other scripts at most 1 s
      after each call, on the loop: queued writes and relay changes start (their failures go to
        the script's log), alarms are raised, timers start or stop, and changed `wd.save` data is
        journaled (a `scriptdata` event holding the script's whole data, keyed by its file name)
        before an RPC answers
      an overrun disables the script at once; the third other error within 60 s too; both raise
        `Script failure`
      at stop: wsStop of every enabled script, timers cancelled, states dropped, thread joined;
        any other call, waiting for a configuration or not, answers `the service is stopping`

    A configuration reload (the service: `detach`, then `attach` with the new configuration's
    host and scripts) keeps every script whose file is unchanged running, Lua state and timers
    included, now reading and writing through the new host; no Lua call runs while detached (a
    timer or RPC due then waits), and a write queued before the reload is never sent to the
    new configuration's devices. Then: a script no longer listed gets `wsStop` (under its own
    configuration, whose devices the new one polls as before take its writes) and is dropped,
    a changed file is disabled and enabled again, a new one is enabled, and an unchanged file
    that did not load, or whose script a failure disabled, is not loaded (nor alarmed) again
    (`enable`, or `release` before the reload, starts it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from config.errors import Problem, SunpmError
from pipeline.clock import NS_PER_S
from pipeline.scripts.errors import ScriptError
from pipeline.scripts.host import ScriptHost
from pipeline.scripts.loading import (
    Header,
    HeaderProblem,
    ScriptSource,
    check_header,
    problem,
)
from pipeline.scripts.sandbox import Limits, LuaCallError, LuaState, Overrun, from_lua
from pipeline.scripts.wd import Alarm, CancelTimer, Relay, StartTimer, Wd, Write
from store.events import JsonValue

log = logging.getLogger("sunpm.script")

SCRIPT_FAILURE: Final = "Script failure"
SCRIPT_ALARM: Final = "Script alarm"
ERRORS_TO_DISABLE: Final = 3
ERROR_WINDOW_S: Final = 60.0
#: At stop, the Lua thread gets this long to finish its call before it is left behind (a daemon
#: thread: a C function that never returns cannot hold the process).
THREAD_JOIN_S: Final = 3.0

T = TypeVar("T")


class _LuaThread:
    """The one thread every Lua call runs in (a Lua state is not thread-safe, and calls are one
    at a time by docs/behaviour.md §9.3)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object],
                                            concurrent.futures.Future[object]] | None] = \
            queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="lua", daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def run(self, work: Callable[[], T]) -> T:
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((work, done))  # type: ignore[arg-type]
        return await asyncio.wrap_future(done)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, done = job
            if not done.set_running_or_notify_cancel():
                continue
            try:
                done.set_result(work())
            except BaseException as err:  # noqa: BLE001 - handed to the awaiting coroutine
                done.set_exception(err)

    async def stop(self) -> None:
        self._jobs.put(None)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, THREAD_JOIN_S)
            if self._thread.is_alive():
                log.error("The Lua thread is still in a call after %.0f s; left behind",
                          THREAD_JOIN_S)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptStatus:
    """A listed script as the web list and `status` show it."""

    file: str
    name: str
    label: str
    version: str
    enabled: bool
    last_error: str


@dataclass(eq=False, slots=True)
class _Script:
    source: ScriptSource
    header: Header
    wd: Wd
    state: LuaState | None
    enabled: bool = True
    timers: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    errors: deque[float] = field(default_factory=deque)
    last_error: str = ""
    #: Disabled by an overrun or by too many errors: a reload leaving its file as it was does
    #: not enable it again (docs/behaviour.md §9.1 step 6).
    failed: bool = False

    @property
    def name(self) -> str:
        return self.header.name


class Stopping(ScriptError):
    """The service stops: no more calls but `wsStop`."""

    def __init__(self) -> None:
        super().__init__("the service is stopping")


class _Failed:
    def __init__(self, message: str) -> None:
        self.message = message


class ScriptRunner:
    """Runs the scripts of scl.ini against a `ScriptHost`; see the module docstring."""

    def __init__(self, host: ScriptHost | None, sources: Sequence[ScriptSource] = (),
                 problems: Sequence[Problem] = (), *, limits: Limits | None = None) -> None:
        """Without a host, `run` waits for the first `attach`."""
        self._host = host
        self.limits = limits or Limits()
        self._pending: _Configuration | None = \
            _Configuration(list(sources), list(problems), ()) if host is not None else None
        self._thread = _LuaThread()
        self._scripts: dict[str, _Script] = {}            # by RPC name
        self._failed: dict[str, ScriptStatus] = {}        # by file: scripts that did not load
        #: The source each script of `_failed` failed to load, and the problems of the list
        #: (scl.ini entries, files refused before loading): the same again at a reload is not
        #: logged and alarmed again.
        self._failed_on: dict[str, ScriptSource] = {}
        self._listed_problems: set[str] = set()
        self._data: dict[str, Mapping[str, JsonValue]] = {}
        self._one_call = asyncio.Lock()
        #: One enable, disable or reconciliation at a time: two enables of one file at once
        #: would each start a Lua state, and the one replaced in `_scripts` would run on out of
        #: reach (its timers ticking, no disable ever stopping it).
        self._lifecycle = asyncio.Lock()
        #: Set while a host is attached: Lua runs only then.
        self._attached = asyncio.Event()
        #: Set while a call may go on: a host is attached, or the runner is closing (a call
        #: waiting for the next configuration then gets its answer).
        self._may_go_on = asyncio.Event()
        if host is not None:
            self._attached.set()
            self._may_go_on.set()
        #: Counts attaches: a write queued under one host is never sent through another.
        self._generation = 0
        self._reconfigured = asyncio.Event()
        self._host_task: asyncio.Task[None] | None = None
        #: At stop, the last `wsStop` calls run attached or not.
        self._closing = False
        self._group: asyncio.TaskGroup | None = None
        self._background: set[asyncio.Task[None]] = set()
        #: Writes waiting on the attached host's devices.
        self._sending: set[asyncio.Task[object]] = set()
        self.started = asyncio.Event()
        #: Set once the scripts are in line with the last `attach`.
        self.settled = asyncio.Event()

    @property
    def host(self) -> ScriptHost:
        assert self._host is not None, "no host attached yet"
        return self._host

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Enable every listed script, then serve timers and RPC until cancelled."""
        self._thread.start()
        try:
            await self._attached.wait()
            saved = await self.host.load_script_data()
            self._data = {k: v for k, v in saved.items() if isinstance(v, dict)}
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._start_host()
                await self._apply_pending()
                self.started.set()
                while True:
                    await self._reconfigured.wait()
                    await self._apply_pending()
        finally:
            self._group = None
            await self._shutdown()

    def attach(self, host: ScriptHost, sources: Sequence[ScriptSource],
               problems: Sequence[Problem], held_off: Collection[str] = ()) -> None:
        """A configuration comes in force: the running scripts go on through `host`, and
        `run` brings the scripts in line with `sources` (see the module docstring). Files of
        `held_off` (disabled from the web UI) are not enabled again. Only while detached: a
        Lua call reads the host from the Lua thread."""
        if self._attached.is_set():
            raise RuntimeError("attach while a host is attached; detach first")
        self._host = host
        self._generation += 1
        listed = set(sources)
        for script in self._scripts.values():
            # A script the reload removes or changes keeps its configuration until its `wsStop`
            # (docs/behaviour.md §9.1 step 7).
            if script.source in listed:
                script.wd.host = host
        # `held_off` is read when the scripts are brought in line, not copied: a disable from
        # the web UI meanwhile counts.
        self._pending = _Configuration(list(sources), list(problems), held_off)
        self.settled.clear()
        self._attached.set()
        self._may_go_on.set()
        self._reconfigured.set()
        self._start_host()

    async def detach(self) -> None:
        """The configuration in force ends (its poller stopped, its plant about to close):
        returns once no Lua call runs, and none starts until the next `attach`; writes still
        waiting on the old configuration's devices are given up."""
        self._attached.clear()
        if not self._closing:
            self._may_go_on.clear()
        async with self._one_call:
            pass
        if self._host_task is not None:
            self._host_task.cancel()
            self._host_task = None
        for task in list(self._sending):
            task.cancel()

    @contextlib.asynccontextmanager
    async def _turn(self, *, final: bool = False) -> AsyncIterator[int]:
        """The one Lua call at a time, once a host is attached; yields the attach it runs
        under. Once the runner closes, only a `final` call (`wsStop`) runs: any other raises
        `Stopping`, waiting or not."""
        while True:
            await self._may_go_on.wait()
            if self._closing and not final:
                raise Stopping()
            await self._one_call.acquire()
            if self._closing and not final:
                self._one_call.release()
                raise Stopping()
            if self._closing or self._attached.is_set():
                break
            self._one_call.release()
        try:
            yield self._generation
        finally:
            self._one_call.release()

    def _start_host(self) -> None:
        if self._group is not None and self._host_task is None and self._host is not None:
            self._host_task = self._group.create_task(self._host.run(), name="scripts:host")

    async def _apply_pending(self) -> None:
        self._reconfigured.clear()
        pending, self._pending = self._pending, None
        if pending is not None:
            await self._reconcile(pending)
        if self._pending is None:
            self.settled.set()

    async def _reconcile(self, wanted: _Configuration) -> None:
        async with self._lifecycle:
            await self._reconcile_now(wanted)

    async def _reconcile_now(self, wanted: _Configuration) -> None:
        by_file = {s.file: s for s in wanted.sources}
        for script in list(self._scripts.values()):
            if script.source.file not in by_file:
                await self._disable(script, run_stop=True)
                if self._scripts.get(script.name) is script:
                    del self._scripts[script.name]
                log.info("Script removed. file=%s name=%s", script.source.file, script.name)
        listed_problems = {str(p) for p in wanted.problems}
        for file in list(self._failed):
            if file not in by_file and not any(p.file == file for p in wanted.problems):
                del self._failed[file]
                self._failed_on.pop(file, None)
        for found in wanted.problems:
            if str(found) not in self._listed_problems:
                await self._load_failed(found.file, found)
        self._listed_problems = listed_problems
        for source in wanted.sources:
            current = next((s for s in self._scripts.values() if s.source.file == source.file),
                           None)
            if source.file in wanted.held_off:
                continue
            if current is not None and current.source == source and (current.enabled
                                                                     or current.failed):
                continue
            if current is None and self._failed_on.get(source.file) == source:
                continue
            await self._enable(source)

    async def stop_scripts(self) -> None:
        """`wsStop` of every enabled script, each within its budget (the service stops)."""
        for script in list(self._scripts.values()):
            if script.enabled:
                try:
                    async with asyncio.timeout(2 * self.limits.seconds + 1):
                        await self._disable(script, run_stop=True)
                except TimeoutError:
                    script.enabled = False
        if self._sending and not self._closing:
            # Writes queued by wsStop get 2 s while the devices are still there.
            await asyncio.wait(set(self._sending), timeout=2.0)

    async def _shutdown(self) -> None:
        self._closing = True
        self._may_go_on.set()
        await self.stop_scripts()
        if self._background:
            # Writes queued by wsStop get 2 s; a poll loop already stopped never takes them.
            _, pending = await asyncio.wait(self._background, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._thread.stop()

    async def enable(self, source: ScriptSource) -> bool:
        """Load (compile, chunk, header) and `wsInit`; False when it failed (logged, alarmed).
        Raises `Stopping` (a `ScriptError`) once the service stops."""
        async with self._lifecycle:
            return await self._enable(source)

    async def _enable(self, source: ScriptSource) -> bool:
        current = next((s for s in self._scripts.values() if s.source.file == source.file), None)
        if current is not None and current.enabled:
            await self._disable(current, run_stop=True)
        wd = Wd(self.host, source.default_name, self._data.get(source.file, {}))
        try:
            async with self._turn() as generation:
                wd.host = self.host
                state, header = await self._thread.run(lambda: self._load(source, wd))
        except HeaderProblem as err:
            await self._load_failed(source.file, err.problem, name=source.default_name)
            self._failed_on[source.file] = source
            return False
        wd.name = header.name
        wd.log = logging.getLogger(f"sunpm.script.{header.name}")
        script = _Script(source=source, header=header, wd=wd, state=state)
        self._scripts = {n: s for n, s in self._scripts.items() if s.source.file != source.file}
        self._scripts[header.name] = script
        self._failed.pop(source.file, None)
        self._failed_on.pop(source.file, None)
        await self._after(script, generation)
        log.info("Script enabled. file=%s name=%s version=%s", source.file, header.name,
                 header.version)
        outcome = await self._call(script, "wsInit", lambda state: state.call("wsInit"))
        return not isinstance(outcome, _Failed) and script.enabled

    def _load(self, source: ScriptSource, wd: Wd) -> tuple[LuaState, Header]:
        """In the Lua thread: a new state, the chunk, the header."""
        state: LuaState | None = LuaState(source.file, wd.callbacks(), self.limits)
        assert state is not None
        wd.state = state
        found: Problem | None = None
        try:
            state.run_chunk(source.source)
            header = check_header(source, from_lua(state.header(), "header"), [
                n for n, s in self._scripts.items() if s.source.file != source.file])
        except Overrun as err:
            found = problem(source.file, None, "chunk", str(err))
        except LuaCallError as err:
            message = err.message
            if err.line is not None and ": " in message:
                message = message.split(": ", 1)[1]
            found = problem(source.file, err.line, "syntax" if err.syntax else "chunk", message)
        except ValueError as err:
            found = problem(source.file, source.header_line, "header",
                            str(err).removeprefix("header: "))
        except HeaderProblem as err:
            found = err.problem
        if found is not None:
            # Dropped here, in the Lua thread, not by a traceback reaching the event loop.
            wd.state = state = None
            raise HeaderProblem(found)
        return state, header

    async def _load_failed(self, file: str, found: Problem, *, name: str | None = None) -> None:
        # In the script's own category when it has a name: its log on the web shows why it
        # does not run.
        (logging.getLogger(f"sunpm.script.{name}") if name else log).error("%s", found)
        subject = name or file
        self._failed[file] = ScriptStatus(file=file, name=subject, label="", version="",
                                          enabled=False, last_error=str(found))
        await self._alarm(SCRIPT_FAILURE, subject, None)

    def release(self, file: str) -> None:
        """The file was uploaded again (its bytes may be the same): a script a failure disabled
        starts again at the next `attach`."""
        for script in self._scripts.values():
            if script.source.file == file:
                script.failed = False

    async def disable(self, name: str) -> None:
        """Disable an enabled script (web UI): `wsStop`, timers cancelled, state dropped."""
        async with self._lifecycle:
            script = self._scripts.get(name)
            if script is None:
                raise ScriptError(f"unknown script '{name}'")
            await self._disable(script, run_stop=True)

    async def _disable(self, script: _Script, *, run_stop: bool) -> None:
        if not script.enabled:
            return
        if run_stop:
            await self._call(script, "wsStop", lambda state: state.call("wsStop"), final=True)
            if not script.enabled:
                return      # wsStop itself failed the script: already disabled
        script.enabled = False
        current = asyncio.current_task()
        for task in script.timers.values():
            if task is not current:
                task.cancel()
        script.timers.clear()
        script.wd.timers.clear()
        holder = [script.state] if script.state is not None else []
        script.state = script.wd.state = None
        # The state is dropped in the Lua thread: closing it runs the script's finalizers.
        await self._thread.run(lambda: _drop(holder))
        log.info("Script disabled. name=%s", script.name)

    def scripts(self) -> list[ScriptStatus]:
        listed = [ScriptStatus(file=s.source.file, name=s.name, label=s.header.label,
                               version=s.header.version, enabled=s.enabled,
                               last_error=s.last_error) for s in self._scripts.values()]
        return listed + list(self._failed.values())

    # ----------------------------------------------------------------- calls

    async def _call(self, script: _Script, what: str, work: Callable[[LuaState], T], *,
                    final: bool = False) -> T | _Failed:
        """Run one call in the Lua thread; failures are logged and counted here. `final`: a
        `wsStop`, which runs while the runner closes too."""
        def in_thread() -> T:
            state = script.state
            assert state is not None
            return work(state)

        try:
            async with self._turn(final=final) as generation:
                if not script.enabled or script.state is None:
                    return _Failed(f"{script.name}: script is disabled")
                try:
                    result = await self._thread.run(in_thread)
                except Overrun as err:
                    outcome: T | _Failed = _Failed(str(err))
                    overrun: str | None = str(err)
                except LuaCallError as err:
                    outcome, overrun = _Failed(err.message), None
                    script.last_error = f"{what}: {err.message}"
                else:
                    outcome, overrun = result, None
        except Stopping as err:
            return _Failed(str(err))
        await self._after(script, generation)
        if overrun is not None:
            script.last_error = f"{what}: {overrun}"
            script.wd.log.error("%s stopped: %s; script disabled", what, overrun)
            script.failed = True
            await self._disable(script, run_stop=False)
            await self._alarm(SCRIPT_FAILURE, script.name, None)
        elif isinstance(outcome, _Failed):
            await self._script_error(script, what, outcome.message)
        return outcome

    async def _script_error(self, script: _Script, what: str, message: str) -> None:
        script.wd.log.warning("%s failed: %s", what, message)
        now = time.monotonic()
        script.errors.append(now)
        while script.errors and now - script.errors[0] > ERROR_WINDOW_S:
            script.errors.popleft()
        if len(script.errors) >= ERRORS_TO_DISABLE and script.enabled:
            script.wd.log.error("%d errors within %.0f s; script disabled", len(script.errors),
                                ERROR_WINDOW_S)
            script.failed = True
            await self._disable(script, run_stop=False)
            await self._alarm(SCRIPT_FAILURE, script.name, None)

    async def _after(self, script: _Script, generation: int) -> None:
        """Carry out what the call (made under attach `generation`) queued (see the module
        docstring)."""
        for effect in script.wd.take_effects():
            if isinstance(effect, Write):
                self._spawn(self._write(script, effect, generation),
                            f"script-write:{script.name}")
            elif isinstance(effect, Relay):
                self._spawn(self._relay(script, effect.state), f"script-relay:{script.name}")
            elif isinstance(effect, Alarm):
                await self._alarm(SCRIPT_ALARM, script.name, effect.text)
            elif isinstance(effect, StartTimer):
                if script.enabled and self._group is not None:
                    script.timers[effect.timer] = self._group.create_task(
                        self._timer(script, effect), name=f"script-timer:{script.name}")
            elif isinstance(effect, CancelTimer):
                task = script.timers.pop(effect.timer, None)
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
        if script.wd.data_changed:
            script.wd.data_changed = False
            data = dict(script.wd.data)
            self._data[script.source.file] = data
            try:
                await self.host.save_script_data(script.source.file, data)
            except SunpmError as err:
                script.wd.log.error("Saved data not journaled: %s", err)

    async def _timer(self, script: _Script, start: StartTimer) -> None:
        clock = self.host.clock
        period_ns = max(1, round(start.seconds * NS_PER_S))
        due = clock.monotonic_ns() + period_ns
        try:
            while True:
                await clock.wait_until(due)
                if not script.enabled or start.timer not in script.wd.timers:
                    return
                if start.once:
                    script.wd.timers.discard(start.timer)
                await self._call(script, f"timer {start.timer}",
                                 lambda state: state.fire(start.timer, start.once))
                if start.once:
                    return
                now = clock.monotonic_ns()
                due += period_ns
                if due <= now:
                    # Ticks due while the call ran are skipped (docs/behaviour.md §9.2).
                    due += ((now - due) // period_ns + 1) * period_ns
        finally:
            if script.timers.get(start.timer) is asyncio.current_task():
                del script.timers[start.timer]

    async def call(self, rpc_name: str, parameters: Mapping[str, JsonValue]) -> JsonValue:
        """RPC `<name>.<function>` (docs/behaviour.md §9.4); raises `ScriptError` with the answer's
        error text."""
        if self._closing:
            raise ScriptError(f"{rpc_name}: {Stopping()}")
        name, _, function = rpc_name.partition(".")
        script = self._scripts.get(name)
        if script is None:
            failed = next((f for f in self._failed.values() if f.name == name), None)
            if failed is not None:
                raise ScriptError(f"{name}: script is disabled")
            raise ScriptError(f"unknown script '{name}'")
        if not script.enabled:
            raise ScriptError(f"{name}: script is disabled")
        if not function or function in ("wsInit", "wsStop") or function.startswith("_"):
            raise ScriptError(f"unknown function '{rpc_name}'")

        def work(state: LuaState) -> tuple[bool, JsonValue | ValueError]:
            try:
                argument = state.to_lua(dict(parameters))
            except ValueError as err:
                return True, ValueError(f"parameters: {err}")
            found, result = state.call(function, argument)
            if not found:
                return False, None
            try:
                return True, from_lua(result)
            except ValueError as err:
                return True, err

        outcome = await self._call(script, function, work)
        if isinstance(outcome, _Failed):
            raise ScriptError(f"{rpc_name}: {outcome.message}")
        found, value = outcome
        if not found:
            raise ScriptError(f"unknown function '{rpc_name}'")
        if isinstance(value, ValueError):
            raise ScriptError(f"{rpc_name}: {value}")
        return value

    # ----------------------------------------------------------------- effects

    async def _write(self, script: _Script, write: Write, generation: int) -> None:
        what = f"{write.device.device.name}: {write.var.key or write.var.name}"
        if generation != self._generation or not self._attached.is_set():
            # Checked against the configuration the call saw: the device may be gone or
            # another one now.
            script.wd.log.warning("wd.set: %s not written: the configuration was reloaded",
                                  what)
            return
        host, index = self.host, write.device.device.index
        if script.wd.host is not host and not host.same_device(script.wd.host, index):
            # Validated against the configuration before the reload (the `wsStop` of a script
            # it removed or changed): sent only to a device the reload left as it was.
            script.wd.log.warning("wd.set: %s not written: the reload removed or changed the "
                                  "device", what)
            return
        sending = asyncio.current_task()
        assert sending is not None
        self._sending.add(sending)
        try:
            await host.write(index, write.var.index, write.raw)
        except asyncio.CancelledError:
            if self._closing or (generation == self._generation and self._attached.is_set()):
                raise
            # Given up by `detach`: the poller it waits on has stopped.
            script.wd.log.warning("wd.set: %s not confirmed: its configuration ended while it "
                                  "waited", what)
        except SunpmError as err:
            script.wd.log.warning("wd.set: %s not written: %s", what, err)
        finally:
            self._sending.discard(sending)

    async def _relay(self, script: _Script, state: int) -> None:
        try:
            await self.host.set_relay(state)
        except SunpmError as err:
            script.wd.log.warning("wd.setRelay: %s", err)

    async def _alarm(self, name: str, subject: str, text: str | None) -> None:
        try:
            await self.host.alarm(name, subject, text)
        except SunpmError as err:
            log.error("%s alarm not raised: %s. script=%s", name, err, subject)

    def _spawn(self, work: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


@dataclass(frozen=True, slots=True)
class _Configuration:
    sources: list[ScriptSource]
    problems: list[Problem]
    held_off: Collection[str]


def _drop(holder: list[LuaState]) -> None:
    holder.clear()

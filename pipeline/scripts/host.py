"""What a script's `wd` API needs from the gateway: `ScriptHost`, and `PollerHost`, the host over
a running `Poller` and `Log` that the service plugs in.

Threads: the read methods (`devices`, `last_good`, `wall_ns`) are called from the Lua thread while
a script runs; they only read data the event loop replaces whole (dict lookups of immutable
objects), so they need no lock. The coroutines are always awaited on the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

from config.model import DefinitionFile, Device
from pipeline.clock import NS_PER_S, Clock
from pipeline.drivers._base import GoodReadings, RawValue, Readings
from pipeline.poller import Poller, PollError, poll_period_s
from pipeline.scripts.errors import ScriptError
from store.events import JsonValue, ScriptData
from store.log import Log
from store.state import replay

#: How often `PollerHost.run` looks for new polls; a poll period is at least 1 s, so each poll
#: of every device is seen.
SAMPLE_S: Final = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptDevice:
    """A daq device as scripts see it (`wd.devices()`, device and variable look-ups)."""

    device: Device
    definition: DefinitionFile | None   # None: not polled (port without driver or path)
    poll_period_s: int
    state: str                          # ok, fail, absent, full


@dataclass(frozen=True, slots=True)
class GoodValue:
    raw: RawValue
    ts_ns: int


class ScriptHost(Protocol):
    """The gateway as the scripts' `wd` API uses it."""

    def devices(self) -> Sequence[ScriptDevice]:
        """Every daq device in daq order (Lua thread)."""
        ...

    def last_good(self, index: str, var: int) -> GoodValue | None:
        """The variable's last good polled raw value and its poll time (Lua thread)."""
        ...

    def wall_ns(self) -> int:
        """UTC now (Lua thread and loop)."""
        ...

    @property
    def clock(self) -> Clock:
        """Timers sleep on its monotonic clock."""
        ...

    def same_device(self, previous: ScriptHost, index: str) -> bool:
        """The device `index` of `previous` (the configuration before a reload) is polled here
        as it was there: a write validated against `previous` means the same here."""
        ...

    async def write(self, index: str, var: int, raw: RawValue) -> None:
        """Queue a write of a raw value (docs/behaviour.md §2.7) and wait for it; raises
        `SunpmError` with the driver's one-line reason."""
        ...

    async def set_relay(self, state: int) -> None:
        """Set the I/O relay; raises `SunpmError` when there is none or it fails."""
        ...

    async def alarm(self, name: str, subject: str, text: str | None) -> None:
        """Raise a gateway alarm (`Script alarm`, `Script failure`) with the script as subject."""
        ...

    async def save_script_data(self, script: str, data: Mapping[str, JsonValue]) -> None:
        """Journal a script's whole `wd.save` data (a `scriptdata` event), acknowledged."""
        ...

    async def load_script_data(self) -> Mapping[str, JsonValue]:
        """Every script's saved data, by script, as the journal replays it."""
        ...

    async def run(self) -> None:
        """Background work of the host while scripts run (following polls); may return."""
        ...


AlarmRaiser = Callable[[str, str, str | None], Awaitable[object]]
RelaySetter = Callable[[int], Awaitable[object]]


class PollerHost:
    """`ScriptHost` over the gateway's pieces: its daq devices and definitions, `Poller` (live
    values, writes), `Log` (script data, quota state), an alarm raiser and the relay."""

    def __init__(self, *, devices: Sequence[Device], definitions: Mapping[str, DefinitionFile],
                 poller: Poller, store: Log, alarm: AlarmRaiser, clock: Clock,
                 set_relay: RelaySetter | None = None, daq_poll_period_s: int = 10) -> None:
        self._devices = tuple(devices)
        self._definitions = dict(definitions)
        self._poller = poller
        self._store = store
        self._alarm = alarm
        self._set_relay = set_relay
        self._clock = clock
        self._period = daq_poll_period_s
        self._polled = {d.index for d in self._devices if self._definition(d) is not None}
        #: Each device's newest poll looked at; `_good` has the good values of the polls before
        #: it, kept only when a newer poll failed some of them (a poll whose every value is good
        #: replaces the one before it whole: nothing to copy, value by value, at every poll).
        self._seen: dict[str, Readings] = {}
        self._good: dict[tuple[str, int], GoodValue] = {}

    @property
    def clock(self) -> Clock:
        return self._clock

    def keep_values_of(self, previous: PollerHost) -> None:
        """A configuration reload: the last good values of the devices polled as before (the
        same daq row but its line, the same definition), so a script that runs on does not
        see them turn nil until the new poller's first polls. Before scripts use this host."""
        for device in self._devices:
            if not self.same_device(previous, device.index):
                continue
            previous._latest(device.index)
            for key, good in previous._good.items():
                if key[0] == device.index:
                    self._good[key] = good
            readings = previous._seen.get(device.index)
            if readings is not None:
                self._keep_good(readings)

    def same_device(self, previous: ScriptHost, index: str) -> bool:
        """The same daq row but its line, the same definition, polled in both."""
        if not isinstance(previous, PollerHost):
            return False
        device = next((d for d in self._devices if d.index == index), None)
        before = next((d for d in previous._devices if d.index == index), None)
        return (device is not None and before is not None and index in self._polled
                and index in previous._polled and replace(before, line=device.line) == device
                and previous._definition(before) == self._definition(device))

    def _definition(self, device: Device) -> DefinitionFile | None:
        return self._definitions.get(device.def_file)

    def devices(self) -> Sequence[ScriptDevice]:
        return tuple(ScriptDevice(device=d, definition=self._definition(d),
                                  poll_period_s=poll_period_s(d, self._period),
                                  state=self._state(d)) for d in self._devices)

    def _state(self, device: Device) -> str:
        if device.index not in self._polled:
            return "absent"
        readings = self._latest(device.index)
        if device.index not in self._polled:
            return "absent"
        if self._store.stats(device.index).full:
            return "full"
        if readings is not None and any(r.quality.is_good for r in readings.values.values()):
            return "ok"
        return "fail"

    def _latest(self, index: str) -> Readings | None:
        try:
            readings = self._poller.latest(index)
        except PollError:
            # In the definitions but not on a link (a serial port without `path`): absent.
            self._polled.discard(index)
            return None
        if readings is not None:
            previous = self._seen.get(index)
            if previous is not readings:
                self._seen[index] = readings
                if previous is not None and not _covers(readings, previous):
                    self._keep_good(previous)
        return readings

    def _keep_good(self, readings: Readings) -> None:
        """The good values of a poll a newer one does not wholly replace, into `_good`."""
        index, ts_ns, values = readings.device, readings.ts_ns, readings.values
        if type(values) is GoodReadings:
            raw = values.raw
            for var, row in values.positions.items():
                self._good[(index, var)] = GoodValue(raw[row], ts_ns)
            return
        for var, reading in values.items():
            if reading.quality.is_good and reading.value is not None:
                self._good[(index, var)] = GoodValue(reading.value, ts_ns)

    def last_good(self, index: str, var: int) -> GoodValue | None:
        if index not in self._polled:
            return None
        readings = self._latest(index)
        if readings is not None:
            reading = readings.values.get(var)
            if reading is not None and reading.quality.is_good and reading.value is not None:
                return GoodValue(reading.value, readings.ts_ns)
        return self._good.get((index, var))

    def wall_ns(self) -> int:
        return self._clock.wall_ns()

    async def write(self, index: str, var: int, raw: RawValue) -> None:
        device = next((d for d in self._devices if d.index == index), None)
        definition = self._definition(device) if device is not None else None
        if definition is None:
            raise ScriptError(f"writeVariable: device {index} is not polled")
        await self._poller.write(index, definition.variable(var), raw)

    async def set_relay(self, state: int) -> None:
        if self._set_relay is None:
            raise ScriptError("setRelay: no IO device is configured")
        await self._set_relay(state)

    async def alarm(self, name: str, subject: str, text: str | None) -> None:
        await self._alarm(name, subject, text)

    async def save_script_data(self, script: str, data: Mapping[str, JsonValue]) -> None:
        await self._store.append_journal("scriptdata",
                                         ScriptData(script=script, data=data).to_fields(),
                                         ts_ns=self._clock.wall_ns(), commit_now=True)

    async def load_script_data(self) -> Mapping[str, JsonValue]:
        state = await asyncio.to_thread(replay, self._store)
        saved: dict[str, JsonValue] = {}
        for script, data in state.script_data.items():
            # Round trip through JSON: replay hands back what the body held, typed `object`.
            saved[script] = json.loads(json.dumps(data))
        return saved

    async def run(self) -> None:
        """Look at every device's last poll twice a second, so a good value followed by a
        failed poll is still found (`wd.get` returns the last *good* poll)."""
        while True:
            for index in list(self._polled):
                self._latest(index)
            await self._clock.sleep(SAMPLE_S)


def _covers(newer: Readings, older: Readings) -> bool:
    """Every value of `older` is good in `newer` too (two block decodes of one plan, the
    common case): `older`'s values are then never asked for again and need not be kept."""
    new, old = newer.values, older.values
    return (type(new) is GoodReadings and type(old) is GoodReadings
            and (new.positions is old.positions or new.positions.keys() >= old.positions.keys()))


def age_s(host: ScriptHost, good: GoodValue) -> float:
    return max(0.0, (host.wall_ns() - good.ts_ns) / NS_PER_S)

"""The recorder: polls in, one record per device and recording period out (docs/behaviour.md §2.2).

Per device it keeps, for the open period, one accumulator per recorded variable (actions 2, 4, 8,
9) in parallel lists, and at the period's end builds one Arrow record batch of RECORDS_SCHEMA
column by column. Invariants:

- period ends are multiples of `acqPeriod` from each 00:00 UTC, plus every UTC midnight; a poll
  belongs to the period holding its answer time;
- a period gets a record only if the device was polled in it (a gateway that was stopped, a cycle
  skipped by an overrun or a wall clock stepped forward leave no record);
- record times only increase per device: a poll whose period ends at or before the last recorded
  one (the wall clock stepped back) is not recorded; a step back of more than an hour between two
  polls is a clock reset (docs/behaviour.md §11) and record times restart from the new clock;
- a value is the period's last good one (actions 4, 8, 9) or min/max/mean of its good ones
  (action 2, mean = exact sum ÷ count, nearest float64); with no good poll it is missing, with the
  quality of the period's last failed poll, never a value from an earlier period;
- `seq` is left 0: the store numbers records when it commits them.

It also reports, at the poll, each change of an action 8/9 variable (`ValueChanged`, for alarms),
and when a device's parameters (actions 1, 9) are due: first good poll after start-up, each
*return* (first good poll after a (re)connection or after ≥ 3 failed polls) and on request.
"""

from __future__ import annotations

import decimal
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Final

import pyarrow as pa

from config.errors import SunpmError
from config.model import Action, DefinitionFile, Device, Protocol, Quality, Variable
from pipeline.drivers._base import GoodReadings, RawValue, Reading, Readings, tic_number
from pipeline.drivers.modbus.codec import value_text
from store.events import JsonValue, ParamRead
from store.schema import RECORDS_SCHEMA

NS_PER_S: Final = 1_000_000_000
DAY_NS: Final = 86_400 * NS_PER_S
#: A wall clock step back larger than this between two polls is a reset (docs/behaviour.md §11).
RESET_STEP_NS: Final = 3_600 * NS_PER_S
#: Failed polls in a row after which the next good poll is a *return* (docs/behaviour.md §2.2).
RETURN_AFTER_FAILED_POLLS: Final = 3

_NO_FAILURE: Final = -1
_ABSENT: Final = Reading(None, Quality.TIMEOUT)
#: Floats (and ints) are summed exactly as integers counting units of 2**-1074, the smallest
#: float64 step; far cheaper per poll than Fraction, and exact all the same.
_FLOAT_SCALE_BITS: Final = 1074
#: Decimals (scale-factored values) are summed exactly: at this precision an addition never rounds.
_EXACT: Final = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX,
                                Emin=decimal.MIN_EMIN)
_EXACT_FLOAT_INT: Final = 2**53
_FIELDS = ("info1", "info2", "info3", "info4", "action")
_TS_TYPE: Final = RECORDS_SCHEMA.field("ts").type

Number = int | float | Decimal


class RecorderError(SunpmError):
    """The recorder was asked about a device it does not record."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordReady:
    """One record of one device: a batch of RECORDS_SCHEMA, a row per recorded variable."""

    device: str
    end_ns: int
    batch: pa.RecordBatch


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueChanged:
    """A good value of an action 8/9 variable differing from its previous good value."""

    ts_ns: int           # the poll's time (its answer)
    device: str          # daq index
    var: int             # definition-file Index
    old: RawValue
    new: RawValue
    def_id: str          # `<sha256>:<file name>` of the definition in force

    @property
    def new_text(self) -> str:
        """The raw value as raised, in docs/formats.md §9.3 notation (ALARM files, journal)."""
        return value_text(self.new)

    @property
    def is_text(self) -> bool:
        """A text value (String, IP, IPV6, MAC, TIC data), not a number."""
        return isinstance(self.new, str)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParameterRead:
    """A device's parameter read (actions 1 and 9), dated at the read, for the journal."""

    ts_ns: int
    device: str
    def_id: str
    values: Mapping[int, str | None]     # Index -> value text (docs/formats.md §9.3), None missing
    qualities: Mapping[int, Quality]

    def journal_body(self) -> dict[str, JsonValue]:
        """The `param` journal event's body: every parameter's text by Index, and the quality
        of the missing ones only."""
        missing = {k: int(self.qualities[k]) for k in self.values if self.values[k] is None}
        return ParamRead(values=self.values, quality=missing).to_fields()


@dataclass(frozen=True, slots=True, kw_only=True)
class PollOutcome:
    """What one poll produced: records of periods it closed, value changes, parameters due."""

    records: tuple[RecordReady, ...] = ()
    changes: tuple[ValueChanged, ...] = ()
    parameters_due: bool = False
    recorded: bool = True    # False: its period was already recorded (wall clock stepped back)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCounters:
    """Per-device counts for the web UI and status (docs/behaviour.md §2.2)."""

    device: str
    polls: int
    readings_by_quality: tuple[int, ...]   # indexed by Quality code
    records: int
    polls_not_recorded: int                # period already recorded (clock stepped back)
    extra: Mapping[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- time arithmetic


def period_end_ns(ts_ns: int, acq_period_s: int) -> int:
    """End of the recording period holding `ts_ns`: next multiple of the period, or midnight."""
    day = ts_ns - ts_ns % DAY_NS
    period_ns = acq_period_s * NS_PER_S
    end = day + ((ts_ns - day) // period_ns + 1) * period_ns
    return min(end, day + DAY_NS)


# --------------------------------------------------------------------------- value text


def _exact_text(raw: Number, as_float: float) -> str | None:
    """The value's exact text when its float64 would print something else (U64, I64, scaled)."""
    if isinstance(raw, float):
        return None
    if isinstance(raw, int) and -_EXACT_FLOAT_INT <= raw <= _EXACT_FLOAT_INT:
        return None
    exact = value_text(raw)
    return None if value_text(as_float) == exact else exact


# --------------------------------------------------------------------------- per-device state


def _same_variable(a: Variable, b: Variable) -> bool:
    return all(getattr(a, name) == getattr(b, name) for name in _FIELDS)


class _Device:
    """One device's recorded variables (sorted by Index) and their open-period accumulators."""

    __slots__ = (
        "acq_period_s",
        "alarms",
        "by_quality",
        "columns",
        "count",
        "def_id",
        "definition",
        "disconnected",
        "dsum",
        "ever_good",
        "failed",
        "failed_polls",
        "index",
        "indexes",
        "is_tic",
        "last",
        "last_end",
        "last_poll_ts",
        "min_max_mean",
        "not_recorded",
        "open_end",
        "parameter_indexes",
        "parameters_due",
        "polls",
        "previous",
        "records",
        "slot_of",
        "unsynced",
        "variables",
        "vmax",
        "vmin",
        "vsum",
    )

    def __init__(self, device: Device, definition: DefinitionFile) -> None:
        self.index = device.index
        self.acq_period_s = device.acq_period_s
        self.open_end: int | None = None
        self.last_end: int | None = None
        self.last_poll_ts: int | None = None
        self.unsynced = False
        self.failed_polls = 0
        self.ever_good = False
        self.disconnected = False
        self.parameters_due = False
        self.polls = 0
        self.by_quality = [0] * len(Quality)
        self.records = 0
        self.not_recorded = 0
        self._load(definition)
        n = len(self.indexes)
        self.count = [0] * n
        self.last: list[RawValue | None] = [None] * n
        self.vmin: list[Number | None] = [None] * n
        self.vmax: list[Number | None] = [None] * n
        self.vsum = [0] * n                  # ints and floats, in units of 2**-1074
        self.dsum: list[Decimal | None] = [None] * n
        self.failed = [_NO_FAILURE] * n
        self.previous: list[RawValue | None] = [None] * n

    def _load(self, definition: DefinitionFile) -> None:
        self.columns: _DeviceColumns | None = None
        self.definition = definition
        self.def_id = definition.snapshot_id
        self.is_tic = definition.protocol is Protocol.TIC
        recorded = sorted((v for v in definition.variables if v.action.is_polled),
                          key=lambda v: v.index)
        self.variables = recorded
        self.indexes = [v.index for v in recorded]
        self.min_max_mean = [v.action is Action.MIN_MAX_MEAN for v in recorded]
        self.alarms = [v.action.raises_alarm for v in recorded]
        self.slot_of = {idx: i for i, idx in enumerate(self.indexes)}
        self.parameter_indexes = sorted(v.index for v in definition.variables
                                        if v.action.is_parameter)

    def redefine(self, definition: DefinitionFile) -> None:
        """New definition mid-period: earlier polls count only for unchanged variables."""
        old_vars, old_slot = self.variables, self.slot_of
        self._load(definition)
        # slot in the new definition -> slot in the old one, for variables that kept their meaning
        kept: dict[int, int] = {}
        for i, var in enumerate(self.variables):
            j = old_slot.get(var.index)
            if j is not None and _same_variable(old_vars[j], var):
                kept[i] = j
        n = len(self.indexes)
        self.count = [self.count[kept[i]] if i in kept else 0 for i in range(n)]
        self.last = [self.last[kept[i]] if i in kept else None for i in range(n)]
        self.vmin = [self.vmin[kept[i]] if i in kept else None for i in range(n)]
        self.vmax = [self.vmax[kept[i]] if i in kept else None for i in range(n)]
        self.vsum = [self.vsum[kept[i]] if i in kept else 0 for i in range(n)]
        self.dsum = [self.dsum[kept[i]] if i in kept else None for i in range(n)]
        self.failed = [self.failed[kept[i]] if i in kept else _NO_FAILURE for i in range(n)]
        self.previous = [self.previous[kept[i]] if i in kept else None for i in range(n)]

    def carry_previous(self, old: _Device) -> None:
        """The previous good values of `old`'s alarm variables (actions 8, 9) that kept their
        meaning here: the device of the configuration this one replaced."""
        for i, var in enumerate(self.variables):
            j = old.slot_of.get(var.index)
            if j is not None and self.alarms[i] and _same_variable(old.variables[j], var):
                self.previous[i] = old.previous[j]

    def reset_period(self) -> None:
        n = len(self.indexes)
        self.count = [0] * n
        self.last = [None] * n
        self.vmin = [None] * n
        self.vmax = [None] * n
        self.vsum = [0] * n
        self.dsum = [None] * n
        self.failed = [_NO_FAILURE] * n
        self.unsynced = False


# --------------------------------------------------------------------------- the recorder


class Recorder:
    """Turns each device's `Readings` into records, value changes and parameter events.

    Synchronous and free of I/O: the poll loop feeds it and routes what it returns. Set
    `clock_synchronised` to False while the clock check fails (docs/behaviour.md §11): good values
    of the records and parameters made meanwhile get quality 7.
    """

    def __init__(self, *, clock_synchronised: bool = True,
                 replacing: Recorder | None = None) -> None:
        self.clock_synchronised = clock_synchronised
        self._devices: dict[str, _Device] = {}
        #: The devices of the recorder this one replaces (a configuration reload, which is no
        #: start): a device set here compares its first values with their previous good values.
        self._replaced: dict[str, _Device] = dict(replacing._devices) if replacing else {}

    # ----------------------------------------------------------------- configuration

    def set_device(self, device: Device, definition: DefinitionFile) -> None:
        """Start recording a device, or apply a changed daq row or definition to it."""
        state = self._devices.get(device.index)
        if state is None:
            state = self._devices[device.index] = _Device(device, definition)
            old = self._replaced.pop(device.index, None)
            if old is not None:
                state.carry_previous(old)
            return
        if device.acq_period_s != state.acq_period_s:
            state.acq_period_s = device.acq_period_s
            if state.open_end is not None and state.last_poll_ts is not None:
                # A shorter period: the open record ends at the new period's end instead of
                # holding back every poll until the old end.
                state.open_end = min(state.open_end,
                                     period_end_ns(state.last_poll_ts, device.acq_period_s))
        if definition.snapshot_id != state.def_id or definition != state.definition:
            state.redefine(definition)
            # A new definition may bring new parameters: the `_P_` file gets them at once.
            state.parameters_due = True

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self._devices)

    def request_parameters(self, index: str) -> None:
        """`getParameters`: read the device's parameters at its next good poll."""
        self._state(index).parameters_due = True

    def parameters_due(self, index: str) -> bool:
        return self._state(index).parameters_due

    def counters(self, index: str) -> DeviceCounters:
        st = self._state(index)
        return DeviceCounters(device=index, polls=st.polls,
                              readings_by_quality=tuple(st.by_quality), records=st.records,
                              polls_not_recorded=st.not_recorded)

    def _state(self, index: str) -> _Device:
        try:
            return self._devices[index]
        except KeyError:
            raise RecorderError(f"device {index}: not recorded (absent, or not in daq.csv)") from None

    # ----------------------------------------------------------------- polls

    def feed(self, readings: Readings) -> PollOutcome:
        """Account one poll of one device; returns the records of the periods it closed."""
        st = self._state(readings.device)
        ts = readings.ts_ns
        st.polls += 1
        records: list[RecordReady] = []
        if st.last_poll_ts is not None and ts < st.last_poll_ts - RESET_STEP_NS:
            # Clock reset: the open period is closed with the time it had, then times restart.
            if st.open_end is not None:
                records.extend(self._close(st))
            st.last_end = None
        st.last_poll_ts = ts
        recorded = self._enter_period(st, ts, records)
        if recorded and not self.clock_synchronised:
            st.unsynced = True
        changes = self._account(st, readings, recorded)
        if not recorded:
            st.not_recorded += 1
        return PollOutcome(records=tuple(records), changes=tuple(changes),
                           parameters_due=self._track_return(st, readings), recorded=recorded)

    def _enter_period(self, st: _Device, ts: int, records: list[RecordReady]) -> bool:
        end = period_end_ns(ts, st.acq_period_s)
        if st.open_end is not None:
            if end < st.open_end:
                return False
            if end > st.open_end:
                records.extend(self._close(st))
        if st.open_end is None:
            if st.last_end is not None and end <= st.last_end:
                return False
            st.open_end = end
        return True

    def _account(self, st: _Device, readings: Readings, recorded: bool) -> list[ValueChanged]:
        changes: list[ValueChanged] = []
        values = readings.values
        alarms, previous, failed = st.alarms, st.previous, st.failed
        min_max_mean, last, count = st.min_max_mean, st.last, st.count
        # A block decode's column is read as it is: no Reading per value.
        column = values if type(values) is GoodReadings else None
        for i, idx in enumerate(st.indexes):
            if column is not None:
                row = column.positions.get(idx)
                raw, quality = (_ABSENT if row is None else (column.raw[row], Quality.GOOD))
            else:
                raw, quality = values.get(idx, _ABSENT)
            # int comparisons: cheaper than the enum's property on this per-value path
            if (raw is None or not (quality == 0 or quality == 7)
                    or (type(raw) is float and not math.isfinite(raw))):
                if recorded:
                    failed[i] = _failed_quality(Reading(raw, quality))
                continue
            if alarms[i]:
                prev = previous[i]
                if prev is not None and _differs(prev, raw):
                    changes.append(ValueChanged(ts_ns=readings.ts_ns, device=st.index, var=idx,
                                                old=prev, new=raw, def_id=st.def_id))
                previous[i] = raw
            if not recorded:
                continue
            if min_max_mean[i]:
                self._accumulate(st, i, raw)
            else:
                last[i] = raw
                count[i] += 1
        return changes

    def _accumulate(self, st: _Device, i: int, raw: RawValue) -> None:
        number: Number | None = None
        if not isinstance(raw, str):
            number = raw
        elif st.is_tic:
            number = tic_number(raw)
        if number is None:
            # Text that is not a number has no min/max/mean (docs/formats.md §8.2).
            st.failed[i] = Quality.DECODE_ERROR
            return
        lo, hi = st.vmin[i], st.vmax[i]
        if lo is None or number < lo:
            st.vmin[i] = number
        if hi is None or number > hi:
            st.vmax[i] = number
        if isinstance(number, int):
            st.vsum[i] += number << _FLOAT_SCALE_BITS
        elif isinstance(number, float):
            # the denominator is a power of two, at most 2**1074
            numerator, denominator = number.as_integer_ratio()
            st.vsum[i] += numerator << (_FLOAT_SCALE_BITS + 1 - denominator.bit_length())
        else:
            total = st.dsum[i]
            st.dsum[i] = number if total is None else _EXACT.add(total, number)
        st.count[i] += 1

    def _track_return(self, st: _Device, readings: Readings) -> bool:
        any_good = False
        disconnected = False
        by_quality = st.by_quality
        values = readings.values
        if type(values) is GoodReadings and values:
            by_quality[Quality.GOOD] += len(values)
            any_good = True
            values = {}
        for reading in values.values():
            quality = reading.quality
            by_quality[quality] += 1
            if (quality == 0 or quality == 7) and reading.value is not None:
                any_good = True
            elif quality == Quality.DISCONNECTED:
                disconnected = True
        if not any_good:
            st.failed_polls += 1
            # A new connection is reported once, at its first poll: if that poll failed, the
            # first good one is still the return.
            st.disconnected = st.disconnected or disconnected or readings.reconnected
            return False
        returned = (not st.ever_good or st.disconnected or readings.reconnected
                    or st.failed_polls >= RETURN_AFTER_FAILED_POLLS)
        st.ever_good, st.disconnected, st.failed_polls = True, False, 0
        if returned:
            st.parameters_due = True
        return st.parameters_due and bool(st.parameter_indexes)

    def feed_parameters(self, readings: Readings) -> ParameterRead:
        """Account a parameter read (actions 1, 9); the request is done once a value was good."""
        st = self._state(readings.device)
        good_quality = Quality.GOOD if self.clock_synchronised else Quality.GOOD_CLOCK_UNSYNCHRONISED
        values: dict[int, str | None] = {}
        qualities: dict[int, Quality] = {}
        for idx in st.parameter_indexes:
            reading = readings.values.get(idx)
            if reading is None:
                values[idx], qualities[idx] = None, Quality.TIMEOUT
            elif reading.value is None or not reading.quality.is_good:
                values[idx], qualities[idx] = None, reading.quality
            else:
                values[idx], qualities[idx] = value_text(reading.value), good_quality
        if any(v is not None for v in values.values()):
            st.parameters_due = False
        return ParameterRead(ts_ns=readings.ts_ns, device=st.index, def_id=st.def_id,
                             values=values, qualities=qualities)

    # ----------------------------------------------------------------- records

    def flush(self, now_ns: int, devices: Sequence[str] | None = None) -> list[RecordReady]:
        """Records of every open period that ended at or before `now_ns` (wall clock)."""
        out: list[RecordReady] = []
        for index in (self._devices if devices is None else devices):
            st = self._devices.get(index)
            if st is not None and st.open_end is not None and st.open_end <= now_ns:
                out.extend(self._close(st))
        return out

    def _close(self, st: _Device) -> list[RecordReady]:
        end = st.open_end
        assert end is not None
        st.open_end = None
        st.last_end = end
        batch = self._build(st, end) if st.indexes else None
        st.reset_period()
        if batch is None:
            return []
        st.records += 1
        return [RecordReady(device=st.index, end_ns=end, batch=batch)]

    def _build(self, st: _Device, end: int) -> pa.RecordBatch:
        n = len(st.indexes)
        good_q = int(Quality.GOOD_CLOCK_UNSYNCHRONISED if st.unsynced else Quality.GOOD)
        value: list[float | None] = [None] * n
        vmin: list[float | None] | None = None
        vmax: list[float | None] | None = None
        text: list[str | None] | None = None
        quality = bytearray(n)
        counts, last, min_max_mean = st.count, st.last, st.min_max_mean
        for i in range(n):
            count = counts[i]
            if count == 0:
                failed = st.failed[i]
                quality[i] = Quality.TIMEOUT if failed == _NO_FAILURE else failed
                continue
            quality[i] = good_q
            if min_max_mean[i]:
                if vmin is None or vmax is None:
                    vmin, vmax = [None] * n, [None] * n
                value[i], vmin[i], vmax[i], exact = _min_max_mean(
                    st.vmin[i], st.vmax[i], st.vsum[i], st.dsum[i], count)
            else:
                raw = last[i]
                # the common cases inline: a float, or an int a float64 holds exactly
                kind = type(raw)
                if kind is float:
                    value[i] = raw  # type: ignore[assignment]
                    continue
                if kind is int and -_EXACT_FLOAT_INT <= raw <= _EXACT_FLOAT_INT:  # type: ignore[operator]
                    value[i] = float(raw)  # type: ignore[arg-type]
                    continue
                assert raw is not None
                value[i], exact = _instant(raw, st.is_tic)
            if exact is not None:
                if text is None:
                    text = [None] * n
                text[i] = exact
        # Only the columns that vary from record to record are built here; the others (seq, var,
        # def, and the all-null vmin/vmax/text of most records) are the device's, built once.
        const = st.columns
        if const is None:
            const = st.columns = _DeviceColumns(st.indexes, st.def_id)
        ts = pa.Array.from_buffers(_TS_TYPE, n, [None, pa.py_buffer(array("q", [end]) * n)])
        columns = [
            ts,
            const.seq,
            const.var,
            _float_array(value),
            const.null_float if vmin is None else _float_array(vmin),
            const.null_float if vmax is None else _float_array(vmax),
            const.null_text if text is None else _string_array(text),
            pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(quality)]),
            const.def_,
        ]
        return pa.RecordBatch.from_arrays(columns, schema=RECORDS_SCHEMA)


class _DeviceColumns:
    """The columns of a device's records that do not change from one record to the next."""

    __slots__ = ("def_", "null_float", "null_text", "seq", "var")

    def __init__(self, indexes: Sequence[int], def_id: str) -> None:
        n = len(indexes)
        self.seq = pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(bytes(8 * n))])
        self.var = pa.Array.from_buffers(pa.int32(), n,
                                         [None, pa.py_buffer(array("i", indexes))])
        self.null_float = pa.nulls(n, pa.float64())
        self.null_text = pa.nulls(n, pa.string())
        self.def_ = pa.DictionaryArray.from_arrays(
            pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(bytes(4 * n))]),
            _string_array([def_id]))


# Arrays straight from Python buffers: `pa.array` on a list first asks whether it is a pandas
# object, which imports pandas when it is installed (0.6 s and 57 MB resident, measured), and
# costs more per call besides.


def _validity(values: Sequence[object]) -> tuple[pa.Buffer | None, int]:
    """The validity bitmap of `values` (None: missing) and the null count."""
    bits = 0
    nulls = 0
    for i, v in enumerate(values):
        if v is None:
            nulls += 1
        else:
            bits |= 1 << i
    if nulls == 0:
        return None, 0
    return pa.py_buffer(bits.to_bytes((len(values) + 7) // 8, "little")), nulls


def _float_array(values: Sequence[float | None]) -> pa.Array:
    validity, nulls = _validity(values)
    data = array("d", [0.0 if v is None else v for v in values])
    return pa.Array.from_buffers(pa.float64(), len(values), [validity, pa.py_buffer(data)],
                                 null_count=nulls)


def _string_array(values: Sequence[str | None]) -> pa.Array:
    validity, nulls = _validity(values)
    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = array("i", [0])
    total = 0
    for item in encoded:
        total += len(item)
        offsets.append(total)
    return pa.Array.from_buffers(pa.string(), len(values),
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
                                 null_count=nulls)


def _differs(old: RawValue, new: RawValue) -> bool:
    """Numbers compare exactly (Python compares int, float and Decimal exactly), text by bytes."""
    if isinstance(old, str) or isinstance(new, str):
        return not (isinstance(old, str) and isinstance(new, str) and old == new)
    return old != new


def _instant(raw: RawValue, is_tic: bool) -> tuple[float | None, str | None]:
    if isinstance(raw, str):
        number = tic_number(raw) if is_tic else None
        return (float(number) if number is not None else None), raw
    as_float = float(raw)
    return as_float, _exact_text(raw, as_float)


def _min_max_mean(lo: Number | None, hi: Number | None, scaled_sum: int,
                  decimal_sum: Decimal | None, count: int) -> tuple[float, float, float, str | None]:
    assert lo is not None and hi is not None
    # int / int and Fraction -> float both round correctly: the mean is the float64 nearest to
    # the exact sum divided by the count (docs/formats.md §9.3).
    if decimal_sum is None:
        mean = scaled_sum / (count << _FLOAT_SCALE_BITS)
    else:
        exact = Fraction(scaled_sum, 1 << _FLOAT_SCALE_BITS) + Fraction(decimal_sum)
        mean = float(exact / count)
    lo_f, hi_f = float(lo), float(hi)
    lo_text, hi_text = _exact_text(lo, lo_f), _exact_text(hi, hi_f)
    text = None
    if lo_text is not None or hi_text is not None:
        text = f"{value_text(lo)};{value_text(hi)}"
    return mean, lo_f, hi_f, text


def _failed_quality(reading: Reading) -> Quality:
    if reading.value is None:
        # A "good" reading without a value is a driver fault; it counts as failed.
        return Quality.DECODE_ERROR if reading.quality.is_good else reading.quality
    return Quality.NOT_IMPLEMENTED     # NaN or an infinity (docs/formats.md §8.3)

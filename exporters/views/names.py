"""File names and the pure window arithmetic shared by the outbox and offline re-exports.

Names (docs/formats.md §3, §9.1; `<ts>` = the window end, UTC, `YYMMDD_HHMMSS`):

    /DATA   <uid>_<MODBUS|IO|TIC>_<ts>.csv.gz, <uid>_<MODBUS|IO|TIC>_P_<ts>.csv.gz
    /ALARM  <uid>_AL_<ts>.csv.gz
    /CMD    <uid>_ACK_<ts>.json
    /LOG    <uid>_LOG_<ts>.log.gz, <uid>_SUNSPEC_<ts>.log.gz, <uid>_<interface>_<ts>.log.gz
            (traces: serial1..3, ethernet, io, tic), <uid>_SYSTEME_<ts>.tar.gz
    --out   <uid>_MQTT_<ts>_<k>.json (an MQTT window's k-th document, docs/behaviour.md §5.3)

Windows (docs/behaviour.md §5.1): `[start, cut)` is one window when 24 h or shorter, else cut at
every UTC midnight inside. An item (record or journal event) belongs to the first window, in build
order, whose end is after its time and whose watermark covers it (per device the last committed
record number; for the journal the last `seq`): `select_records` and `select_journal` apply that
rule to Arrow tables given a window and the one built before it in the same stream.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from store.events import Watermark
from store.traces import TRACE_INTERFACES

from .context import Interface

NS_PER_S: Final = 1_000_000_000
DAY_NS: Final = 86_400 * NS_PER_S


DATA_NAME: Final = re.compile(r"^(?P<uid>[A-Za-z0-9-]{1,32})_(?P<interface>MODBUS|IO|TIC)"
                              r"(?P<param>_P)?_(?P<ts>[0-9]{6}_[0-9]{6})\.csv\.gz$")


def file_timestamp(ts_ns: int) -> str:
    """`YYMMDD_HHMMSS` in UTC, truncated to the second."""
    return datetime.fromtimestamp(ts_ns // NS_PER_S, UTC).strftime("%y%m%d_%H%M%S")


def parse_file_timestamp(text: str) -> int:
    """UTC ns of a `YYMMDD_HHMMSS` file-name time."""
    moment = datetime.strptime(text, "%y%m%d_%H%M%S").replace(tzinfo=UTC)
    return int(moment.timestamp()) * NS_PER_S


def data_file_name(uid: str, interface: Interface, end_ns: int, *, parameters: bool = False) -> str:
    param = "_P" if parameters else ""
    return f"{uid}_{interface.value}{param}_{file_timestamp(end_ns)}.csv.gz"


def alarm_file_name(uid: str, end_ns: int) -> str:
    return f"{uid}_AL_{file_timestamp(end_ns)}.csv.gz"


def ack_file_name(uid: str, end_ns: int) -> str:
    return f"{uid}_ACK_{file_timestamp(end_ns)}.json"


def log_file_name(uid: str, end_ns: int) -> str:
    return f"{uid}_LOG_{file_timestamp(end_ns)}.log.gz"


def sunspec_log_file_name(uid: str, end_ns: int) -> str:
    return f"{uid}_SUNSPEC_{file_timestamp(end_ns)}.log.gz"


def trace_file_name(uid: str, interface: str, end_ns: int) -> str:
    if interface not in TRACE_INTERFACES:
        known = ", ".join(TRACE_INTERFACES)
        raise ValueError(f"trace interface {interface!r} is not one of {known}")
    return f"{uid}_{interface}_{file_timestamp(end_ns)}.log.gz"


def system_archive_name(uid: str, made_ns: int) -> str:
    return f"{uid}_SYSTEME_{file_timestamp(made_ns)}.tar.gz"


def mqtt_export_name(uid: str, end_ns: int, number: int) -> str:
    """`--out` name of an MQTT window's document `number` (from 1)."""
    return f"{uid}_MQTT_{file_timestamp(end_ns)}_{number}.json"


# --------------------------------------------------------------------------- windows


def split_window(start_ns: int, cut_ns: int) -> list[tuple[int, int]]:
    """New windows of `[start, cut)`: none when cut <= start, split at UTC midnights if > 24 h."""
    if cut_ns <= start_ns:
        return []
    if cut_ns - start_ns <= DAY_NS:
        return [(start_ns, cut_ns)]
    bounds = [start_ns]
    midnight = (start_ns // DAY_NS + 1) * DAY_NS
    while midnight < cut_ns:
        bounds.append(midnight)
        midnight += DAY_NS
    bounds.append(cut_ns)
    return list(itertools.pairwise(bounds))


def cut_of(session_start_ns: int) -> int:
    """The cut: a session's start truncated to the second."""
    return session_start_ns // NS_PER_S * NS_PER_S


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowBounds:
    """A built window's end and watermark: all that its membership depends on."""

    end_ns: int
    watermark: Watermark


def _covered(ts: pa.Array, seq: pa.Array, end_ns: int, limit: int | None) -> pa.Array:
    if limit is None or limit < 0:
        return pa.array([False] * len(ts), pa.bool_())
    before = pc.less(ts.cast(pa.int64()), pa.scalar(end_ns, pa.int64()))
    return pc.and_(before, pc.less_equal(seq, pa.scalar(limit, pa.uint64())))


def _member_mask(table: pa.Table, window: WindowBounds, previous: Sequence[WindowBounds],
                 limit_of: _Limit) -> pa.Array:
    ts = table.column("ts").combine_chunks()
    seq = table.column("seq").combine_chunks()
    mask = _covered(ts, seq, window.end_ns, limit_of(window.watermark))
    for earlier in previous:
        mask = pc.and_(mask, pc.invert(_covered(ts, seq, earlier.end_ns,
                                                limit_of(earlier.watermark))))
    return mask


class _Limit:
    def __init__(self, device: str | None) -> None:
        self.device = device

    def __call__(self, watermark: Watermark) -> int | None:
        return watermark.journal if self.device is None else watermark.record_limit(self.device)


def select_records(table: pa.Table, device: str, window: WindowBounds,
                   previous: Sequence[WindowBounds] = ()) -> pa.Table:
    """The rows of one device's records table that belong to `window`.

    `previous`: the windows built before it in the same stream; since ends and watermarks only
    grow in a stream, the one built just before is enough.
    """
    if table.num_rows == 0:
        return table
    return table.filter(_member_mask(table, window, previous, _Limit(device)))


def select_journal(table: pa.Table, window: WindowBounds,
                   previous: Sequence[WindowBounds] = ()) -> pa.Table:
    """The journal rows (any kind) that belong to `window`; filter kinds before or after."""
    if table.num_rows == 0:
        return table
    return table.filter(_member_mask(table, window, previous, _Limit(None)))


def member_window(ts_ns: int, seq: int, device: str | None,
                  windows: Sequence[WindowBounds]) -> int | None:
    """Position in `windows` (build order) of the window an item belongs to, None if none yet."""
    for position, window in enumerate(windows):
        limit = (window.watermark.journal if device is None
                 else window.watermark.record_limit(device))
        if ts_ns < window.end_ns and limit is not None and seq <= limit:
            return position
    return None

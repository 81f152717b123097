"""Frame trace files `<uid>_<interface>_<ts>.log.gz` of a LOG window (docs/formats.md §11).

The store keeps trace entries as UTC times and raw fields (`store.traces.TraceEntry`); here they
become lines in the window's time zone through `log.frame_trace_line` / `log.io_trace_line`.
Files come in the upload order of docs/behaviour.md §4.2 step 8 (`serial1`..`3`, `ethernet`, `io`,
`tic`), after the gateway log and the SunSpec log.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from store.traces import TRACE_INTERFACES, TraceEntry

from .context import Dates, ViewConfig
from .log import frame_trace_line, io_trace_line, traces_file
from .names import trace_file_name


def trace_line(entry: TraceEntry, dates: Dates) -> str:
    if entry.interface == "io":
        return io_trace_line(entry.ts_ns, dates, entry.channels)
    return frame_trace_line(entry.ts_ns, dates, entry.direction, entry.data,
                            peer=entry.peer or None, error=entry.error or None)


def trace_lines(entries: Iterable[TraceEntry], dates: Dates) -> Iterator[str]:
    return (trace_line(e, dates) for e in entries)


def trace_text(entries: Iterable[TraceEntry], config: ViewConfig) -> str:
    """One interface's file text ("" when it has no entry)."""
    dates = Dates(config.time_zone)
    return "".join(line + "\n" for line in trace_lines(entries, dates))


def trace_texts(by_interface: Mapping[str, Sequence[TraceEntry]], config: ViewConfig,
                end_ns: int) -> list[tuple[str, str]]:
    """`(file name, text)` of every interface with entries, in upload order."""
    out = []
    for interface in TRACE_INTERFACES:
        entries = by_interface.get(interface, ())
        if entries:
            out.append((trace_file_name(config.uid, interface, end_ns),
                        trace_text(entries, config)))
    return out


def trace_files(by_interface: Mapping[str, Sequence[TraceEntry]], config: ViewConfig,
                end_ns: int) -> list[tuple[str, bytes]]:
    """The gzip files of `trace_texts`."""
    out = []
    for name, text in trace_texts(by_interface, config, end_ns):
        data = traces_file(text.splitlines())
        if data is not None:
            out.append((name, data))
    return out

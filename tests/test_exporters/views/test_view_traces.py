"""Trace files of a LOG window from stored trace entries (docs/formats.md §11's examples)."""

from __future__ import annotations

import gzip
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from exporters.rendering.source import window_trace_texts
from exporters.retention import traces_delivered
from exporters.views.context import ViewConfig
from exporters.views.traces import trace_files, trace_text, trace_texts
from store.delivery import DeliveryState
from store.traces import TRACE_INTERFACES, TraceEntry, TraceStore

PARIS = ZoneInfo("Europe/Paris")
CONFIG = ViewConfig(uid="WPM00BDE4", time_zone="Europe/Paris")
END = 1_612_518_000_000_000_000  # 2021-02-05 09:40:00 UTC


def at(local: str) -> int:
    """UTC ns of a `DD/MM/YYYY hh:mm:ss.mmm` Paris time."""
    stamp, ms = local.split(".")
    when = datetime.strptime(stamp, "%d/%m/%Y %H:%M:%S").replace(tzinfo=PARIS)
    return int(when.timestamp()) * 1_000_000_000 + int(ms) * 1_000_000 + 999_999


def test_ethernet_and_serial_lines_are_the_spec_example() -> None:
    ethernet = [
        TraceEntry(ts_ns=at("05/02/2021 09:49:50.012"), interface="ethernet", direction="=>",
                   peer="192.168.10.23:502",
                   data=bytes.fromhex("002A00000006 7E03 9C94 0002")),
        TraceEntry(ts_ns=at("05/02/2021 09:49:50.031"), interface="ethernet", direction="<=",
                   peer="192.168.10.23:502",
                   data=bytes.fromhex("002A00000007 7E03 04 07F9 0000")),
    ]
    serial = [
        TraceEntry(ts_ns=at("05/02/2021 09:49:51.102"), interface="serial1", direction="=>",
                   data=bytes.fromhex("0304 0000 0002 7029")),
        TraceEntry(ts_ns=at("05/02/2021 09:49:51.131"), interface="serial1", direction="<=",
                   data=bytes.fromhex("0304 04 0901 0000 8A18")),
        TraceEntry(ts_ns=at("05/02/2021 09:50:01.102"), interface="serial1", direction="=>",
                   data=bytes.fromhex("0304 0000 0002 7029")),
        TraceEntry(ts_ns=at("05/02/2021 09:50:02.103"), interface="serial1", direction="<=",
                   error="*** TIMEOUT ***"),
    ]
    assert trace_text(ethernet, CONFIG) + trace_text(serial, CONFIG) == (
        "05/02/2021 09:49:50.012;=> 192.168.10.23:502 00 2A 00 00 00 06 7E 03 9C 94 00 02\n"
        "05/02/2021 09:49:50.031;<= 192.168.10.23:502 00 2A 00 00 00 07 7E 03 04 07 F9 00 00\n"
        "05/02/2021 09:49:51.102;=> 03 04 00 00 00 02 70 29\n"
        "05/02/2021 09:49:51.131;<= 03 04 04 09 01 00 00 8A 18\n"
        "05/02/2021 09:50:01.102;=> 03 04 00 00 00 02 70 29\n"
        "05/02/2021 09:50:02.103;*** TIMEOUT *** <=\n")


def test_io_and_tic_lines() -> None:
    io = TraceEntry(ts_ns=at("05/02/2021 09:49:50.004"), interface="io",
                    channels=(("AI1", "12.25"), ("AI2", "4.2"), ("DI1", "0"), ("DI2", "10452"),
                              ("RELAY", "0")))
    tic = TraceEntry(ts_ns=at("05/02/2021 09:49:50.004"), interface="tic", direction="<=",
                     data=b"\x02\nADCO 1\r\x03")
    assert trace_text([io], CONFIG) == "05/02/2021 09:49:50.004;AI1=12.25;AI2=4.2;DI1=0;DI2=10452;RELAY=0\n"
    assert trace_text([tic], CONFIG) == "05/02/2021 09:49:50.004;<= 02 0A 41 44 43 4F 20 31 0D 03\n"


def test_files_come_in_upload_order_and_only_for_interfaces_with_lines() -> None:
    by_interface = {i: [TraceEntry(ts_ns=END - 1, interface=i, direction="=>", data=b"\x01")]
                    for i in reversed(TRACE_INTERFACES) if i != "serial2"}
    names = [name for name, _ in trace_texts(by_interface, CONFIG, END)]
    assert names == [f"WPM00BDE4_{i}_210205_094000.log.gz"
                     for i in ("serial1", "serial3", "ethernet", "io", "tic")]
    files = trace_files({"tic": by_interface["tic"], "serial2": []}, CONFIG, END)
    assert [n for n, _ in files] == ["WPM00BDE4_tic_210205_094000.log.gz"]
    assert gzip.decompress(files[0][1]) == b"05/02/2021 10:39:59.999;=> 01\n"
    assert trace_files({}, CONFIG, END) == []


def test_a_bad_stored_direction_is_a_view_error_not_a_line() -> None:
    with pytest.raises(ValueError, match="trace direction"):
        trace_text([TraceEntry(ts_ns=END, interface="serial1", direction="->")], CONFIG)


def test_a_window_takes_the_lines_after_the_previous_end_and_before_its_own(
        tmp_path: Path) -> None:
    with TraceStore.open(tmp_path) as traces:
        for k in range(-2, 3):
            traces.append(TraceEntry(ts_ns=END + k, interface="ethernet", direction="=>",
                                     data=bytes([k & 0xFF])))
        traces.flush()
        first = window_trace_texts(traces, None, END, CONFIG)
        second = window_trace_texts(traces, END, END + 2, CONFIG)
    assert [n for n, _ in first] == ["WPM00BDE4_ethernet_210205_094000.log.gz"]
    assert [line[-2:] for line in first[0][1].splitlines()] == ["FE", "FF"]
    assert [line[-2:] for line in second[0][1].splitlines()] == ["00", "01"]


def _window(server: int, end: int, files: list[str]) -> dict[str, object]:
    return {"server": server, "stream": "LOG", "start": end - 600, "end": end,
            "watermark": {"devices": {}, "journal": 0}, "after": None, "config": "c",
            "files": [{"name": n, "dir": "/LOG", "size": 1, "sha256": "0", "text_sha256": "0"}
                      for n in files]}


def test_traces_are_delivered_once_behind_every_file_servers_log_cursor() -> None:
    state = DeliveryState()
    state.reduce("window", _window(1, 1000, ["a"]))
    state.reduce("window", _window(1, 2000, ["b"]))
    state.reduce("window", _window(2, 1000, []))            # empty window: passes at once
    state.reduce("delivered", {"server": 1, "stream": "LOG", "end": 1000, "file": "a"})
    both = traces_delivered(state, [1, 2])
    assert both("ethernet", 999) and not both("ethernet", 1000)
    state.reduce("delivered", {"server": 1, "stream": "LOG", "end": 2000, "file": "b"})
    assert traces_delivered(state, [1])("tic", 1999)
    assert not traces_delivered(state, [1, 2])("tic", 1000)  # server 2 is at 1000
    assert not traces_delivered(state, [1, 3])("tic", 0)     # server 3 delivered nothing yet
    assert not traces_delivered(state, [])("tic", 0)         # no file server: the cap only

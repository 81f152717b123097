"""ALARM, LOG, SunSpec log, frame traces and ACK files: the examples of docs/formats.md §10-§12."""

from __future__ import annotations

import gzip

from _views_site import DEFINITIONS, IO, TIC, Golden, config, journal, ns

from exporters.views.ack import ack_file, ack_text
from exporters.views.alarm import alarm_file, alarm_text
from exporters.views.context import Dates, SetAside, ViewError
from exporters.views.gz import HEADER
from exporters.views.log import (
    RECEIVED,
    SENT,
    frame_trace_line,
    io_trace_line,
    log_file,
    log_text,
    sunspec_log_file,
    traces_file,
)
from exporters.views.names import alarm_file_name, log_file_name
from store.events import (
    Channel,
    CommandResult,
    DeviceAlarm,
    GatewayAlarm,
    JournalItem,
    LogLevel,
    LogLine,
    Source,
    journal_items,
)

DELTA = "0" * 64 + ":MODBUS_DELTA_M88H-COM1.20-Sunspec.csv"


def _alarm_journal() -> list[JournalItem]:
    def dev(source: Source, name: str, var: int, value: str, text: bool = False) -> str:
        return DeviceAlarm(source=source, name=name, var=var, value=value, is_text=text).to_body()

    rows = [
        # Deliberately not in time order: the file is.
        ("2021-02-12 06:02:00", "alarm", "IO", IO.snapshot_id, dev(Source.IO, "Io", 5, "1")),
        ("2021-02-12 06:00:19.900", "alarm", "7", DELTA, dev(Source.MODBUS, "OndA", 48, "0")),
        ("2021-02-12 06:00:49", "alarm", "7", DELTA, dev(Source.MODBUS, "OndA", 48, "3")),
        ("2021-02-12 06:03:00", "heartbeat", None, None, "{}"),
        ("2021-02-12 06:05:00", "alarm", "TIC1", TIC.snapshot_id,
         dev(Source.TIC, "Linky", 5, "HP..", text=True)),
        ("2021-02-12 06:06:10", "alarm", None, None, GatewayAlarm(alarm="Power OFF").to_body()),
        ("2021-02-12 06:08:31", "alarm", None, None, GatewayAlarm(alarm="Power ON").to_body()),
        ("2021-02-12 06:09:00", "alarm", None, None,
         GatewayAlarm(alarm="Storage full", subject="inv_a").to_body()),
    ]
    return journal_items(journal(rows))


def test_alarm_file_of_the_spec_example(golden: Golden) -> None:
    end = ns("2021-02-12 08:15:00")
    data = alarm_file(_alarm_journal(), DEFINITIONS, config())
    assert data is not None and data[:10] == HEADER
    golden(alarm_file_name("WPM00BDE4", end).removesuffix(".gz"), gzip.decompress(data))


def test_alarm_values_round_the_exact_decimal_half_even() -> None:
    rows = [("2021-02-12 06:00:00", "alarm", "7", DELTA,
             DeviceAlarm(source=Source.MODBUS, name="a;b", var=1, value=v).to_body())
            for v in ("2.0000005", "2.0000015", "-0.0000001", "12345678901234567890.25")]
    lines = alarm_text(journal_items(journal(rows)), DEFINITIONS, config()).splitlines()
    assert [line.rsplit(";", 1)[1] for line in lines] == [
        "2.000000", "2.000002", "0.000000", "12345678901234567890.250000"]
    assert lines[0].split(";")[3] == "a b"


def test_alarm_euro_dates_and_script_alarm_text() -> None:
    rows = [("2021-02-12 06:00:00", "alarm", None, None,
             GatewayAlarm(alarm="Script alarm", subject="limit", text="too hot").to_body())]
    assert alarm_text(journal_items(journal(rows)), DEFINITIONS, config(euro_date_format=True)) == \
        "12/02/21-07:00:00;GATEWAY;Script alarm;limit;too hot\n"


def test_no_alarm_gives_no_alarm_file() -> None:
    rows = [("2021-02-12 06:03:00", "heartbeat", None, None, "{}")]
    assert alarm_file(journal_items(journal(rows)), DEFINITIONS, config()) is None


def test_device_alarm_without_definition_snapshot_is_left_out_and_told() -> None:
    rows = [("2021-02-12 06:00:00", "alarm", "7", None,
             DeviceAlarm(source=Source.MODBUS, name="x", var=1, value="1").to_body()),
            ("2021-02-12 06:00:01", "alarm", "8", None,
             GatewayAlarm(alarm="Power ON").to_body())]
    aside: list[SetAside] = []
    text = alarm_text(journal_items(journal(rows)), DEFINITIONS, config(), aside)
    assert text.endswith(";GATEWAY;Power ON\n") and text.count("\n") == 1
    assert [(item.device, type(err), str(err)) for item, err in aside] == [
        ("7", ViewError, f"alarm event {aside[0][0].seq} about a device has no definition "
                         "snapshot")]
    # Told or not, every rendering leaves it out alike.
    assert alarm_text(journal_items(journal(rows)), DEFINITIONS, config()) == text


def _log_rows() -> list[tuple[str, str, str | None, str | None, str]]:
    def line(level: LogLevel, category: str, message: str) -> str:
        return LogLine(level=level, category=category, message=message).to_body()

    info, warning = LogLevel.INFO, LogLevel.WARNING
    return [
        ("2021-02-05 09:15:00.012999", "log", None, None,
         line(info, "session", "server 1 sftp 203.0.113.10:22: session started (schedule)")),
        ("2021-02-05 09:15:01.340", "log", None, None, line(
            warning, "config", "WPM00BDE4_var.ini:7: Interval: '3600' is outside 1..1440; "
                               "default 1440 used")),
        ("2021-02-05 09:15:01.340", "log", None, None, line(
            warning, "config", "WPM00BDE4_var.ini:8: Interval: '86400' is outside 1..1440; "
                               "default 1440 used")),
        ("2021-02-05 09:15:01.341", "log", None, None,
         line(info, "config", "WPM00BDE4_var.ini applied; warnings: 2")),
        ("2021-02-05 09:15:01.500", "heartbeat", None, None, "{}"),
        ("2021-02-05 09:15:02.877", "log", None, None, line(
            info, "session", "server 1: uploaded /DATA/WPM00BDE4_MODBUS_210205_091500.csv.gz "
                             "(412 bytes)")),
        ("2021-02-05 09:15:03.001", "log", None, None,
         line(info, "session", "server 1: session ended OK (6 files uploaded, 0 commands)")),
        ("2021-02-05 09:16:10", "log", None, None,
         line(info, "script:limit", "export 36500 VA, limit 90 %")),
        ("2021-02-03 08:56:10", "log", None, None,
         line(info, "sunspec", "NON SUNSPEC device found at @1 192.93.121.23:502")),
    ]


def test_log_file_of_the_spec_example(golden: Golden) -> None:
    data = log_file(journal_items(journal(_log_rows())), config())
    assert data is not None and data[:10] == HEADER
    golden(log_file_name("WPM00BDE4", ns("2021-02-05 09:16:00")).removesuffix(".gz"),
           gzip.decompress(data))


def test_log_messages_lose_line_breaks() -> None:
    body = LogLine(level=LogLevel.ERROR, category="store", message="a\r\nb\nc\rd").to_body()
    items = journal_items(journal([("2021-02-05 09:15:00", "log", None, None, body)]))
    assert log_text(items, config(time_zone="UTC")) == \
        "2021-02-05 09:15:00.000 ERROR store: a b c d\n"


def test_sunspec_log_of_the_spec_example(golden: Golden) -> None:
    messages = [
        ("08:56:10", "NON SUNSPEC device found at @1 192.93.121.23:502"),
        ("08:56:21", "SunSpec device found at @126 192.93.121.23:502"),
        ("08:56:21.999", "Found table 1:66 at 40004@126 192.93.121.23:502"),
        ("08:56:53", "End of SunSpec detection on ethernet1. 1 devices found."),
    ]
    rows = [(f"2021-02-03 {t}", "log", None, None,
             LogLine(level=LogLevel.INFO, category="sunspec", message=m).to_body())
            for t, m in messages]
    rows.insert(1, ("2021-02-03 08:56:11", "log", None, None,
                    LogLine(level=LogLevel.INFO, category="discovery", message="x").to_body()))
    data = sunspec_log_file(journal_items(journal(rows)), config())
    assert data is not None
    golden("WPM00BDE4_SUNSPEC_210203_090000.log", gzip.decompress(data))


def test_frame_traces_of_the_spec_example(golden: Golden) -> None:
    dates = Dates("Europe/Paris")
    peer = "192.168.10.23:502"
    lines = [
        frame_trace_line(ns("2021-02-05 08:49:50.012"), dates, SENT,
                         bytes.fromhex("002A000000067E039C940002"), peer=peer),
        frame_trace_line(ns("2021-02-05 08:49:50.031"), dates, RECEIVED,
                         bytes.fromhex("002A000000077E030407F90000"), peer=peer),
        frame_trace_line(ns("2021-02-05 08:49:51.102"), dates, SENT,
                         bytes.fromhex("0304000000027029")),
        frame_trace_line(ns("2021-02-05 08:49:51.131"), dates, RECEIVED,
                         bytes.fromhex("030404090100008A18")),
        frame_trace_line(ns("2021-02-05 08:50:01.102"), dates, SENT,
                         bytes.fromhex("0304000000027029")),
        frame_trace_line(ns("2021-02-05 08:50:02.103"), dates, RECEIVED, b"",
                         error="*** TIMEOUT ***"),
    ]
    data = traces_file(lines)
    assert data is not None
    golden("WPM00BDE4_ethernet_210205_085000.log", gzip.decompress(data))


def test_io_trace_line_of_the_spec_example() -> None:
    line = io_trace_line(ns("2021-02-05 08:49:50.004"), Dates("Europe/Paris"),
                         [("AI1", "12.25"), ("AI2", "4.2"), ("DI1", "0"), ("DI2", "10452"),
                          ("RELAY", "0")])
    assert line == "05/02/2021 09:49:50.004;AI1=12.25;AI2=4.2;DI1=0;DI2=10452;RELAY=0"


def _results() -> list[CommandResult]:
    return [
        CommandResult(channel=Channel.FILE, caller_id="c-0001", rpc_name="sunpm.getParameters",
                      result="OK"),
        CommandResult(channel=Channel.MQTT, caller_id="m-1", rpc_name="sunpm.setRelay",
                      result="OK"),
        CommandResult(channel=Channel.FILE, caller_id="c-0002", rpc_name="sunpm.writeVariable",
                      result={"written": {"ethernet_192.168.10.24_502_126": 80}, "failed": {}}),
        CommandResult(channel=Channel.FILE, caller_id="c-0003", rpc_name="sunpm.setRelay",
                      error="setRelay: state must be 0 or 1, got 2"),
        CommandResult(channel=Channel.FILE, caller_id="3d9311ed-0076-4f28-ac59-a2debfa35b86",
                      rpc_name="test.testFunction", result={"value": 42}),
    ]


def test_ack_file_of_the_spec_example(golden: Golden) -> None:
    rows = [("2021-02-05 09:15:00", "result", None, None, r.to_body()) for r in _results()]
    data = ack_file(journal_items(journal(rows)))
    assert data is not None
    golden("WPM00BDE4_ACK_210205_091500.json", data)


def test_ack_keeps_text_unescaped_and_no_result_gives_no_file() -> None:
    result = CommandResult(channel=Channel.FILE, caller_id=7, error="writeVariable: «é» ✓")
    items = journal_items(journal([("2021-02-05 09:15:00", "result", None, None,
                                    result.to_body())]))
    assert ack_text(items) == '[{"error":"writeVariable: «é» ✓","callerId":7}]\n'
    assert ack_file([]) is None


# A script's result holds Lua floats (`1e20`, `2^53`, `10/10`): json would write `1e+20`,
# `9007199254740992.0`, `1.0`, which docs/formats.md §9.3 plain notation forbids.
FLOATS = {"big": 1e20, "power": 2.0 ** 53, "one": 1.0, "tiny": 1e-7, "minus_zero": -0.0,
          "half": [0.5, -2.5e-3, 3], "text": "1e+20", "flag": True, "none": None}
PLAIN = ('{"big":100000000000000000000,"power":9007199254740992,"one":1,"tiny":0.0000001,'
         '"minus_zero":0,"half":[0.5,-0.0025,3],"text":"1e+20","flag":true,"none":null}')


def test_ack_writes_a_scripts_float_results_in_plain_notation() -> None:
    result = CommandResult(channel=Channel.FILE, caller_id="c-1", rpc_name="calc.run",
                           result=FLOATS)
    items = journal_items(journal([("2021-02-05 09:15:00", "result", None, None,
                                    result.to_body())]))
    assert ack_text(items) == f'[{{"result":{PLAIN},"callerId":"c-1"}}]\n'

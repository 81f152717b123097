"""Property tests: model -> write -> parse gives the model; mutated bytes only ever raise ours."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import tempfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from config_support import CASES, GOLDEN, golden
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import config
from config import ConfigError
from config._ini import IniLine
from config._text import split_fields
from config.decimal_text import read_decimal, read_integer
from config.model import (
    Action,
    ByteOrder,
    Daq,
    DataType,
    DefinitionFile,
    Device,
    IoKind,
    IoPoint,
    LanRow,
    ModbusPoint,
    Parity,
    Protocol,
    RegisterKind,
    Schedule,
    ScheduleType,
    SerialPort,
    Variable,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Control characters (C0, DEL, C1) are read as spaces with a warning, so a model has none.
_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x17F,
                                       blacklist_categories=("Cc",), blacklist_characters=';"'),
                max_size=12) \
    .map(lambda s: s.strip(" \t"))
_name = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_ .%",
                min_size=1, max_size=16).map(lambda s: s.strip(" ")).filter(bool)
_decimal_text = st.decimals(min_value=-10**6, max_value=10**6, places=4,
                            allow_nan=False, allow_infinity=False).map(lambda d: format(d, "f"))


# ---------------------------------------------------------------------------- definition files

_FIXED = [t for t in DataType if t is not DataType.STRING]


@st.composite
def _modbus_point(draw: st.DrawFn) -> tuple[ModbusPoint, str, str, str]:
    kind = draw(st.sampled_from(list(RegisterKind)))
    if kind.is_bit:
        address = draw(st.integers(0, 65535))
        info3 = draw(st.sampled_from(["", "U16", "bit"]))
        return ModbusPoint(kind=kind, address=address, data_type=None), str(kind.value), \
            str(address), info3
    dtype = draw(st.sampled_from(list(DataType)))
    order = draw(st.sampled_from(list(ByteOrder)))
    address = draw(st.integers(0, 65535 - 125))
    info3 = dtype.value + order.value
    if dtype is DataType.STRING:
        nbytes = draw(st.integers(1, 250))
        point = ModbusPoint(kind=kind, address=address, data_type=dtype, byte_order=order,
                            string_bytes=nbytes)
        return point, str(kind.value), f"{address}_{nbytes}", info3
    if dtype in (DataType.U8, DataType.I8) and draw(st.booleans()):
        byte = draw(st.integers(0, 1))
        point = ModbusPoint(kind=kind, address=address, data_type=dtype, byte_order=order,
                            byte=byte)
        return point, str(kind.value), f"{address}_{byte}", info3
    if dtype is DataType.BITS and draw(st.booleans()):
        bit = draw(st.integers(0, 15))
        nbits = draw(st.integers(1, 16 - bit))
        point = ModbusPoint(kind=kind, address=address, data_type=dtype, byte_order=order,
                            bit=bit, nbits=nbits)
        return point, str(kind.value), f"{address}_{bit}_{nbits}", info3
    return ModbusPoint(kind=kind, address=address, data_type=dtype, byte_order=order), \
        str(kind.value), str(address), info3


_TIC_LABEL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-", min_size=1, max_size=16)


@st.composite
def _io_point(draw: st.DrawFn) -> tuple[IoPoint, str, str, str]:
    kind = draw(st.sampled_from(list(IoKind)))
    channel = 1 if kind is IoKind.RELAY else draw(st.integers(1, 4))
    mode = None if kind is IoKind.RELAY else draw(st.integers(1, 2))
    return IoPoint(kind=kind, channel=channel, mode=mode), str(int(kind)), str(channel), \
        "" if mode is None else str(mode)


@st.composite
def definition_files(draw: st.DrawFn) -> DefinitionFile:
    protocol = draw(st.sampled_from(list(Protocol)))
    count = draw(st.integers(0, 12))
    indexes = draw(st.lists(st.integers(0, 2147483647), min_size=count, max_size=count,
                            unique=True))
    names = draw(st.lists(_name, min_size=count, max_size=count, unique=True))
    tags = draw(st.lists(_name, min_size=count, max_size=count, unique=True))
    variables: list[Variable] = []
    io_used: set[tuple[IoKind, int]] = set()
    for index, name, tag in zip(indexes, names, tags, strict=True):
        point: ModbusPoint | IoPoint | str
        if protocol is Protocol.TIC:
            point = info1 = draw(_TIC_LABEL)
            info2, info3 = draw(_name), ""
        elif protocol is Protocol.IO:
            point, info1, info2, info3 = draw(_io_point())
            if (point.kind, point.channel) in io_used:
                continue  # each channel once (docs/formats.md §8.2)
            io_used.add((point.kind, point.channel))
        else:
            point, info1, info2, info3 = draw(_modbus_point())
        coef_a = draw(st.one_of(st.just(""), _decimal_text))
        coef_b = draw(st.one_of(st.just(""), _decimal_text))
        variables.append(Variable(
            line=len(variables) + 2, index=index, info1=info1, info2=info2, info3=info3, info4="",
            name=name, tag=tag if draw(st.booleans()) else "",
            coef_a=Decimal(coef_a or "1"), coef_b=Decimal(coef_b or "0"),
            unit=draw(_text), action=draw(st.sampled_from(list(Action))),
            coef_a_text=coef_a or "1", coef_b_text=coef_b or "0", key=name,
            modbus=point if isinstance(point, ModbusPoint) else None,
            io=point if isinstance(point, IoPoint) else None,
            tic_label=point if isinstance(point, str) else None))
    return DefinitionFile(file_name="gen.csv", protocol=protocol, category=draw(_text),
                          manufacturer=draw(_text), model=draw(_text),
                          variables=tuple(variables), sha256="")


@FAST
@given(definition_files())
def test_definition_model_written_then_parsed_is_the_model(defn: DefinitionFile) -> None:
    data = config.render_definition(defn)
    parsed = config.parse_definition(data, "gen.csv")
    assert parsed.value == dataclasses.replace(defn, sha256=hashlib.sha256(data).hexdigest())
    assert config.render_definition(parsed.value) == data


# ---------------------------------------------------------------------------- ini files


@st.composite
def var_inis(draw: st.DrawFn) -> config.VarIni:
    comments = draw(st.lists(_text.map(lambda t: f"# {t}".strip()), max_size=3))
    other = [IniLine(i + 1, c) for i, c in enumerate(comments)]
    if draw(st.booleans()):
        other.append(IniLine(len(other) + 1, "VENDOR_Key=v", "VENDOR_Key", "v"))
    line = len(other)
    families = []
    for _ in (1, 2):
        ids = draw(st.lists(st.integers(0, 999999), max_size=4, unique=True))
        family = []
        for sid in ids:
            line += 1
            family.append(Schedule(line=line, id=sid, type=draw(st.sampled_from(ScheduleType)),
                                   start_s=draw(st.integers(0, 86399)),
                                   interval_min=draw(st.integers(1, 1440)),
                                   count=draw(st.integers(1, 1440))))
        families.append(tuple(family))
    return config.VarIni(server1=families[0], server2=families[1], other_lines=tuple(other))


@FAST
@given(var_inis())
def test_var_ini_model_written_then_parsed_is_the_model(v: config.VarIni) -> None:
    data = config.render_var_ini(v)
    assert config.parse_var_ini(data, "u_var.ini").value == v


@FAST
@given(st.lists(_name, max_size=5, unique=True))
def test_script_list_written_then_parsed_is_the_model(names: list[str]) -> None:
    model = config.ScriptList(scripts=tuple(
        config.ScriptEntry(line=i + 1, file=f"{n}.lua", n=i) for i, n in enumerate(names)))
    assert config.parse_scl(config.render_scl(model), "u_scl.ini").value == model


# Lines a person or another tool leaves in an .ini file: blank, comments, a key of its own.
_OTHER_LINE = st.one_of(st.just(""), st.just("   "), _text.map(lambda t: f"# {t}".strip()),
                        _text.map(lambda t: f"; {t}".strip()), st.just("VENDOR_Key=v"))


def _canonical_schedule(family: str, n: int, sid: int, draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(ScheduleType)).value
    start = draw(st.integers(0, 86399))
    return (f"{family}[{n}]={sid}|{kind}|{start // 3600:02d}:{start // 60 % 60:02d}:"
            f"{start % 60:02d}|{draw(st.integers(1, 1440))}|{draw(st.integers(1, 1440))}")


@st.composite
def var_ini_files(draw: st.DrawFn) -> bytes:
    """A var.ini of canonical entries numbered in file order, other lines anywhere (a trailing
    blank line included)."""
    lines = draw(st.lists(_OTHER_LINE, max_size=4))
    for family in ("SCHEDULE_Params", "SCHEDULE2_Params"):
        ids = draw(st.lists(st.integers(0, 999999), max_size=4, unique=True))
        for n, sid in enumerate(ids):
            # Numbered in file order by `_renumbered`, as the writer numbers them.
            lines.insert(draw(st.integers(0, len(lines))),
                         _canonical_schedule(family, n, sid, draw))
    lines = _renumbered(_renumbered(lines, "SCHEDULE_Params"), "SCHEDULE2_Params")
    return "".join(ln + "\n" for ln in lines).encode()


def _renumbered(lines: list[str], family: str) -> list[str]:
    """Entries of `family` numbered 0, 1, 2 ... in file order, other keys made distinct."""
    out, n = [], 0
    for ln in lines:
        if ln == "VENDOR_Key=v":
            ln = f"VENDOR_Key{len(out)}=v"
        if ln.startswith(f"{family}["):
            ln = f"{family}[{n}]=" + ln.partition("=")[2]
            n += 1
        out.append(ln)
    return out


@FAST
@given(var_ini_files())
def test_var_ini_read_then_written_is_the_same_bytes(data: bytes) -> None:
    assert config.render_var_ini(config.parse_var_ini(data, "u_var.ini").value) == data


@st.composite
def scl_ini_files(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_OTHER_LINE, max_size=4))
    for name in draw(st.lists(_name.filter(lambda n: n.strip() == n and n), max_size=4,
                              unique=True)):
        lines.insert(draw(st.integers(0, len(lines))), f"SCRIPT_File[0]={name}.lua")
    return "".join(ln + "\n" for ln in _renumbered(lines, "SCRIPT_File")).encode()


@FAST
@given(scl_ini_files())
def test_scl_ini_read_then_written_is_the_same_bytes(data: bytes) -> None:
    assert config.render_scl(config.parse_scl(data, "u_scl.ini").value) == data


def test_a_trailing_blank_line_of_scl_ini_stays_where_it_is() -> None:
    data = b"SCRIPT_File[0]=a.lua\n\n"
    assert config.render_scl(config.parse_scl(data, "u_scl.ini").value) == data


def test_a_script_added_goes_after_the_listed_ones_before_a_trailing_comment() -> None:
    listed = config.parse_scl(b"# boot scripts\nSCRIPT_File[0]=a.lua\n# end\n", "u_scl.ini").value
    more = config.ScriptList(scripts=(*listed.scripts, config.ScriptEntry(line=None, file="b.lua")),
                             other_lines=listed.other_lines)
    assert config.render_scl(more) == (b"# boot scripts\nSCRIPT_File[0]=a.lua\n"
                                       b"SCRIPT_File[1]=b.lua\n# end\n")
    assert config.render_scl(config.ScriptList(other_lines=listed.other_lines)) == \
        b"# boot scripts\n# end\n"


_CONFIG_VALUES: dict[str, Any] = {
    "LOG_Level": st.sampled_from(["debug", "info", "warning", "error"]),
    "WEB_Port": st.integers(1, 65535).map(str),
    "WEB_User": _name,
    "NTP_TimeZone": st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]),
    "STORE_FlushSeconds": st.sampled_from(["0.05", "1", "2.5", "60"]),
    "DAQ_ModbusMaxGap": st.integers(0, 124).map(str),
    "FTP_Passive": st.sampled_from(["0", "1"]),
    "MQTT2_Qos": st.sampled_from(["0", "1", "2"]),
    "VENDOR_Unknown": _name,
}


@st.composite
def config_inis(draw: st.DrawFn) -> config.ConfigIni:
    keys = draw(st.lists(st.sampled_from(sorted(_CONFIG_VALUES)), unique=True))
    lines: list[IniLine] = []
    for key in keys:
        if draw(st.booleans()):
            lines.append(IniLine(len(lines) + 1, "# note"))
        value = draw(_CONFIG_VALUES[key])
        lines.append(IniLine(len(lines) + 1, f"{key}={value}", key, value))
    values = {ln.key: ln.value for ln in lines if ln.key}
    return config.ConfigIni(uid="u", lines=tuple(lines), values=values)


@FAST
@given(config_inis())
def test_config_ini_model_written_then_parsed_is_the_model(cfg: config.ConfigIni) -> None:
    parsed = config.parse_config_ini(config.render_config_ini(cfg), "u_config.ini")
    assert parsed.value == cfg
    assert {w.field for w in parsed.warnings} == set(cfg.unknown_keys)


# ---------------------------------------------------------------------------- daq.csv


def _lines_dropped(daq: Daq) -> Daq:
    return dataclasses.replace(
        daq, lan=tuple(dataclasses.replace(r, line=0) for r in daq.lan),
        serial=tuple(dataclasses.replace(p, line=None) for p in daq.serial),
        devices=tuple(dataclasses.replace(d, line=0) for d in daq.devices))


_ip = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))


@st.composite
def daqs(draw: st.DrawFn) -> Daq:
    lan = tuple(LanRow(line=0, name=name, ip=draw(_ip), mask=draw(st.one_of(st.none(), _ip)),
                       gateway=None, dns1=draw(st.one_of(st.none(), _ip)), dns2=None,
                       zero_fields=frozenset({"dns2"}) if draw(st.booleans()) else frozenset())
                for name in draw(st.sampled_from([[], ["LAN1"], ["LAN1", "LAN2"]])))
    serial = tuple(SerialPort(line=None, port=f"SERIAL{k}",
                              speed=draw(st.sampled_from([1200, 9600, 115200])),
                              parity=draw(st.sampled_from(list(Parity))),
                              inter_frame_ms=draw(st.integers(0, 10000)),
                              forward_tcp_port=1500 + k if draw(st.booleans()) else None,
                              path=f"/dev/ttyUSB{k}" if draw(st.booleans()) else None)
                   for k in (1, 2, 3))
    indexes = draw(st.lists(st.integers(0, 65535), max_size=6, unique=True))
    devices = []
    for index in indexes:
        if draw(st.booleans()):
            interface = draw(_ip)
            if draw(st.booleans()):
                interface += f":{draw(st.integers(1, 65535))}"
            parameters = draw(st.sampled_from(["", "0", "1"]))
        else:
            interface, parameters = f"SERIAL{draw(st.integers(1, 3))}", draw(_name)
        devices.append(Device(line=0, index=str(index), interface=interface,
                              name=f"dev_{index}", address=draw(st.integers(1, 240)),
                              acq_period_s=draw(st.integers(1, 86400)),
                              timeout_ms=draw(st.integers(50, 60000)),
                              serial_number=draw(_text), parameters=parameters,
                              category=draw(_text), model=draw(_text),
                              def_file=draw(_name) + ".csv"))
    if draw(st.booleans()):
        devices.append(Device(line=0, index="IO", interface="", name="Io", address=None,
                              def_file="io.csv"))
    blocks = {"devices"} if devices else set()
    tcp = draw(st.integers(0, 10000))
    if draw(st.booleans()):
        blocks.add("tcpInterFrameMs")
    if lan:
        blocks.add("ethernet")
    blocks.add("serial")
    if tcp:
        blocks.add("tcpInterFrameMs")
    return Daq(lan=lan, tcp_inter_frame_ms=tcp, serial=serial, devices=tuple(devices),
               blocks=frozenset(blocks))


@FAST
@given(daqs())
def test_daq_model_written_then_parsed_is_the_model(daq: Daq) -> None:
    data = config.render_daq(daq)
    parsed = config.parse_daq(data, "u_daq.csv")
    assert _lines_dropped(parsed.value) == _lines_dropped(daq)
    assert config.render_daq(parsed.value) == data


# ---------------------------------------------------------------------------- mutations

_PARSERS = {
    ".csv": config.parse_definition,
    "_daq.csv": config.parse_daq,
    "_var.ini": config.parse_var_ini,
    "_config.ini": config.parse_config_ini,
    "_scl.ini": config.parse_scl,
}
_FILES = sorted(p.name for p in GOLDEN.iterdir())


def _parser(name: str) -> Any:
    for suffix in ("_daq.csv", "_var.ini", "_config.ini", "_scl.ini"):
        if name.endswith(suffix):
            return _PARSERS[suffix]
    return config.parse_scl if name.endswith("scl.ini") else \
        config.parse_var_ini if name.endswith("var.ini") else config.parse_definition


_mutation = st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, 10**6),
                      st.binary(min_size=1, max_size=3))


def _mutate(data: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, pos, payload in mutations:
        at = pos % (len(buf) + 1)
        if op == "insert":
            buf[at:at] = payload
        elif op == "delete":
            del buf[at:at + len(payload)]
        else:
            buf[at:at + len(payload)] = payload
    return bytes(buf)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(_FILES), st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_files_raise_nothing_but_config_error(name: str,
                                                      mutations: list[Any]) -> None:
    parse = _parser(name)
    original = golden(name)
    before = parse(original, name)
    try:
        parsed = parse(_mutate(original, mutations), name)
    except ConfigError as err:
        assert err.errors and all(str(p) for p in err.problems)
    else:
        assert parsed.value is not None
    # parsing is pure: a rejected (or accepted) neighbour leaves the original's result as it was
    assert parse(original, name) == before


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_nothing_but_config_error(data: bytes) -> None:
    for parse, name in ((config.parse_definition, "x.csv"), (config.parse_daq, "u_daq.csv"),
                        (config.parse_var_ini, "u_var.ini"),
                        (config.parse_config_ini, "u_config.ini"),
                        (config.parse_scl, "u_scl.ini")):
        with contextlib.suppress(ConfigError):
            parse(data, name)


_SITE_FILES = ["CONFIG/WPM00BDE4_config.ini", "CONFIG/WPM00BDE4_var.ini",
               "CONFIG/WPM00BDE4_daq.csv", "CONFIG/WPM00BDE4_scl.ini",
               "DEF/inv_small.csv", "DEF/WPM00BDE4_IO.csv"]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(_SITE_FILES), st.lists(_mutation, min_size=1, max_size=3))
def test_a_site_with_a_mutated_file_reports_problems_and_never_crashes(
        rel: str, mutations: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        site_dir = Path(tmp) / "site"
        shutil.copytree(CASES / "warnings_only", site_dir)
        target = site_dir / rel
        target.write_bytes(_mutate(target.read_bytes(), mutations))
        problems = config.check_site(site_dir)
        assert all(p.file and p.field and p.message for p in problems)
        try:
            site = config.load_site(site_dir)
        except ConfigError as err:
            assert [str(p) for p in err.problems] == [str(p) for p in problems]
        else:
            assert [str(p) for p in site.warnings] == [str(p) for p in problems]


# ---------------------------------------------------------------------------- text and schedules

_cell = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8)


@FAST
@given(st.lists(_cell, min_size=1, max_size=6))
def test_quoted_fields_split_back_to_themselves(cells: list[str]) -> None:
    line = ";".join('"' + c.replace('"', '""') + '"' for c in cells)
    assert split_fields(line) == (cells, [])


@FAST
@given(st.lists(_cell.map(lambda c: c.replace(";", "").replace('"', "").strip(" \t")),
                min_size=1, max_size=6))
def test_plain_fields_split_back_to_themselves(cells: list[str]) -> None:
    assert split_fields(" ; ".join(cells)) == (cells, [])


@FAST
@given(st.lists(st.builds(Schedule, line=st.none(), id=st.integers(0, 9),
                          type=st.sampled_from(list(ScheduleType)),
                          start_s=st.integers(0, 86399), interval_min=st.integers(1, 1440),
                          count=st.integers(1, 1440)), min_size=1, max_size=3),
       st.integers(0, 365 * 3), st.integers(1, 40))
def test_connection_times_in_utc_match_the_plain_day_arithmetic(
        schedules: list[Schedule], day0: int, days: int) -> None:
    start = datetime(2021, 1, 1, tzinfo=UTC) + timedelta(days=day0)
    end = start + timedelta(days=days)
    expected = set()
    for d in range(days):
        day = start + timedelta(days=d)
        for s in schedules:
            if not _day_matches(s.type, day.date()):
                continue
            for k in range(s.count):
                offset = s.start_s + k * s.interval_min * 60
                if offset < 86400:
                    expected.add(day + timedelta(seconds=offset))
    assert config.connection_times(schedules, start, end, "UTC") == sorted(expected)


def _day_matches(stype: ScheduleType, day: date) -> bool:
    if stype is ScheduleType.EVERYDAY:
        return True
    if stype is ScheduleType.FIRST:
        return day.day == 1
    if stype is ScheduleType.MIDDLE:
        return day.day == 15
    if stype is ScheduleType.LAST:
        return (day + timedelta(days=1)).day == 1
    return day.strftime("%A").lower() == stype.value


@FAST
@given(st.integers(0, 365 * 2), st.sampled_from(["Europe/Paris", "America/New_York",
                                                 "Australia/Lord_Howe", "Asia/Kolkata"]))
def test_connection_times_are_sorted_unique_and_inside_the_window(day0: int, tz: str) -> None:
    schedules = [Schedule(line=None, id=1, start_s=30 * 60, interval_min=30, count=48),
                 Schedule(line=None, id=2, type=ScheduleType.LAST, start_s=3600)]
    start = datetime(2021, 1, 1, tzinfo=UTC) + timedelta(days=day0, hours=7)
    end = start + timedelta(days=3)
    times = config.connection_times(schedules, start, end, tz)
    assert times == sorted(set(times))
    assert all(start <= t < end and t.tzinfo is UTC for t in times)
    assert 3 * 47 - 4 <= len(times) <= 3 * 47 + 4  # 47 half-hours a day, +/- DST hours


# ---------------------------------------------------------------------------- number syntax

# Digits of every script, and the characters `int()`/`Decimal()` accept around them.
_NUMBERISH = st.text(alphabet=st.one_of(st.sampled_from("0123456789-+_.eE \t"),
                                        st.characters(categories=["Nd", "No"])), max_size=10)


@FAST
@given(_NUMBERISH)
def test_a_number_is_read_from_ascii_digits_only(text: str) -> None:
    """docs/formats.md §1.1: `int()` and `Decimal()` alone take `1_000`, full-width digits, `+5`
    and spaces; every reader of a number takes only the ASCII syntax."""
    ascii_integer = text.isascii() and text.removeprefix("-").isdigit()
    integer = read_integer(text)
    assert (integer is not None) == ascii_integer
    if integer is not None:
        assert integer == int(text)
    decimal = read_decimal(text)
    if decimal is not None:
        assert text.isascii() and "_" not in text and not text.startswith("+") \
            and text.strip() == text and decimal == Decimal(text)
    port_ok = ascii_integer and 1 <= int(text) <= 65535
    assert (config.config_ini.port_problem(text) == "") == port_ok
    # A value is trimmed of spaces and tabs (§1.1 `.ini`) before it is read.
    value = text.strip(" \t")
    parsed = config.parse_config_ini(f"WEB_Port={text}\n".encode(), "u_config.ini")
    in_range = value.isascii() and value.isdigit() and 1 <= int(value) <= 65535
    assert parsed.value.settings("u").web_port == (int(value) if in_range else 8080)

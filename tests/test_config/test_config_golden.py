"""Every example file and line of docs/formats.md parses; canonical files round-trip byte for byte."""

from __future__ import annotations

from decimal import Decimal

import pytest
from config_support import EXAMPLE_DEFS, golden

import config
from config.model import (
    Action,
    ByteOrder,
    DataType,
    IoKind,
    Protocol,
    RegisterKind,
    ScheduleType,
    ServerType,
)

CANONICAL_DEFS = EXAMPLE_DEFS


@pytest.mark.parametrize("name", CANONICAL_DEFS)
def test_example_definition_files_round_trip_byte_for_byte(name: str) -> None:
    data = golden(name)
    parsed = config.parse_definition(data, name)
    assert parsed.warnings == ()
    assert config.render_definition(parsed.value) == data
    assert parsed.value.file_name == name
    assert len(parsed.value.variables) == data.count(b"\n") - 1


def test_example_daq_round_trips_and_reads_every_block() -> None:
    data = golden("WPM00BDE4_daq.csv")
    parsed = config.parse_daq(data, "WPM00BDE4_daq.csv")
    assert parsed.warnings == ()
    assert config.render_daq(parsed.value) == data
    daq = parsed.value
    assert [lan.name for lan in daq.lan] == ["LAN1", "LAN2"]
    assert daq.lan[0].dns2 is None and daq.lan[1].gateway is None
    serial2 = daq.port("SERIAL2")
    assert (serial2.speed, serial2.parity.value, serial2.inter_frame_ms,
            serial2.forward_tcp_port, serial2.path) == (19200, "E", 20, 1502, "/dev/ttyUSB1")
    assert daq.port("SERIAL3").path is None
    assert [d.index for d in daq.devices] == ["IO", "TIC1", "1", "2", "3"]
    inv = daq.device("1")
    assert inv.tcp_endpoint == ("192.168.10.23", 502) and inv.address == 126
    assert inv.timeout_ms == 5000 and inv.keep_alive
    assert daq.device("2").serial_port == "SERIAL2"
    assert daq.device("3").tcp_endpoint == ("192.168.10.24", 502)
    assert daq.device("TIC1").serial_number == "041676011381"


def test_manual_var_ini_example_reads_with_the_two_interval_warnings() -> None:
    parsed = config.parse_var_ini(golden("WPM00BDE4_var.ini"), "WPM00BDE4_var.ini")
    assert [str(w) for w in parsed.warnings] == [
        "WPM00BDE4_var.ini:7: Interval: '3600' is outside 1..1440; default 1440 used",
        "WPM00BDE4_var.ini:8: Interval: '86400' is outside 1..1440; default 1440 used",
    ]
    assert [s.id for s in parsed.value.server1] == [1, 2, 3, 4, 5]
    assert parsed.value.server1[4].type is ScheduleType.LAST
    assert parsed.value.server1[4].start_s == 2 * 3600 + 2 * 60
    assert all(s.interval_min == 1440 for s in parsed.value.server2)


@pytest.mark.parametrize("name,render,parse", [
    ("canonical_var.ini", config.render_var_ini, config.parse_var_ini),
    ("canonical_scl.ini", config.render_scl, config.parse_scl),
    ("WPM00BDE4_scl.ini", config.render_scl, config.parse_scl),
    ("WPM00BDE4_config.ini", config.render_config_ini, config.parse_config_ini),
])
def test_canonical_ini_files_round_trip_byte_for_byte(name: str, render, parse) -> None:  # type: ignore[no-untyped-def]
    data = golden(name)
    parsed = parse(data, name)
    # The examples keep one vendor key each (`VENDOR_...`): reported, kept, written back.
    assert all(w.field.startswith("VENDOR_") and w.message == "unknown key; ignored"
               for w in parsed.warnings)
    assert render(parsed.value) == data


def test_example_config_ini_settings_and_unknown_key_kept() -> None:
    parsed = config.parse_config_ini(golden("WPM00BDE4_config.ini"), "WPM00BDE4_config.ini")
    cfg = parsed.value
    assert cfg.unknown_keys == ("VENDOR_Extra",)
    settings = cfg.settings("WPM00BDE4")
    s1, s2 = settings.servers
    assert settings.uid == "WPM00BDE4" and settings.log_level == "debug"
    assert settings.time_zone == "Europe/Paris" and settings.store_flush_s == 0.25
    assert settings.sms_allowed_numbers == ("+33612345678", "+33798765432")
    assert (s1.type, s1.host, s1.port, s1.user, s1.password) == (
        ServerType.SFTP, "is.example.net", 22, "wpm", "s3cret=with=equals")
    assert s1.euro_date_format and s1.header_option and s1.two_step
    assert (s2.type, s2.host, s2.port, s2.mqtt_client_id) == (
        ServerType.MQTTS, "broker.example.net", 8883, "WPM00BDE4-2")
    assert (s2.topic_data, s2.topic_command, s2.topic_result) == (
        "plant/data", "plant/cmd", "plant/result")
    # the manual's `FTP2-HeaderOption` spelling is the key FTP2_HeaderOption
    assert cfg.resolved()["FTP2_HeaderOption"] == "0"


def test_example_scl_lists_both_scripts() -> None:
    parsed = config.parse_scl(golden("WPM00BDE4_scl.ini"), "WPM00BDE4_scl.ini")
    assert parsed.value.files == ("Test script 1.lua", "Test script 2.lua")


def test_io_example_points() -> None:
    defn = config.parse_definition(golden("WPM00BDE4_IO.csv"), "WPM00BDE4_IO.csv").value
    assert defn.protocol is Protocol.IO and defn.model == "ioSunPM"
    ai2 = defn.variable(2)
    assert ai2.io is not None and (ai2.io.kind, ai2.io.channel, ai2.io.mode) == (
        IoKind.ANALOG, 2, 2)
    relay = defn.variable(8)
    assert relay.io is not None and relay.io.kind is IoKind.RELAY and relay.io.mode is None
    assert defn.variable(6).unit == "Wh" and defn.variable(5).action is Action.ALARM_ON_CHANGE


def test_tic_example_labels() -> None:
    defn = config.parse_definition(golden("WPM00BDE4_TIC_LINKY.csv"),
                                   "WPM00BDE4_TIC_LINKY.csv").value
    assert defn.protocol is Protocol.TIC
    assert [v.tic_label for v in defn.variables][:4] == ["ADCO", "OPTARIF", "ISOUSC", "BASE"]
    assert defn.variable(8).action is Action.MIN_MAX_MEAN


def test_sunspec_example_scale_factors_strings_and_tags() -> None:
    name = "WPM00BDE4_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP.csv"
    defn = config.parse_definition(golden(name), name).value
    assert defn.protocol is Protocol.MODBUS_TCP and defn.manufacturer == "SMA"
    mn = defn.variable(3).modbus
    assert mn is not None and (mn.data_type, mn.address, mn.string_bytes, mn.register_count) == (
        DataType.STRING, 40004, 32, 16)
    wh = defn.variable(34)
    assert wh.modbus is not None and wh.modbus.data_type is DataType.U32
    assert wh.scale_factor_index == 35
    assert defn.variable(60).tag == "cmdPwrPercent" and defn.variable(60).scale_factor_index == 78
    assert defn.variable(60).unit == "% WMax"
    assert defn.variable(65).unit == "cos()"
    assert all(v.modbus is not None and v.modbus.kind is RegisterKind.HOLDING_REGISTER
               for v in defn.variables)


def test_meter_example_byte_orders_and_coefficients() -> None:
    defn = config.parse_definition(golden("meter_small.csv"), "meter_small.csv").value
    v_l1 = defn.variable(1)
    assert v_l1.modbus is not None
    assert (v_l1.modbus.kind, v_l1.modbus.data_type, v_l1.modbus.byte_order) == (
        RegisterKind.INPUT_REGISTER, DataType.I32, ByteOrder.SWAP_WORDS)
    assert v_l1.coef_a == Decimal("0.1") and v_l1.coef_a_text == "0.1"
    assert v_l1.coef_b == 0 and v_l1.coef_b_text == "0"


@pytest.mark.parametrize("line", [
    # docs/formats.md §8.1: generated I/O lines, first and last
    b"1;1;1;1;;AI1;;1;0;mA;0",
    b"9;3;1;;;Relay;;1;0;;0",
])
def test_spec_io_lines_parse(line: bytes) -> None:
    data = b"io;WebdynSunPM;Webdyn;ioSunPM\n" + line + b"\n"
    assert config.render_definition(config.parse_definition(data, "x.csv").value) == data


def test_padded_header_line_is_accepted_and_kept() -> None:
    # docs/formats.md §8.1: some generators pad line 1
    data = b"modbusRTU;Inverter;HUAWEI;V4;;;;;;;\n1;3;40000;U16;;W;;1;0;W;4\n"
    parsed = config.parse_definition(data, "huawei.csv")
    assert parsed.value.model == "V4" and parsed.value.header_extra == ("",) * 7
    assert config.render_definition(parsed.value) == data


def test_script_list_example_line_reads_names_with_spaces() -> None:
    parsed = config.parse_scl(b"SCRIPT_File[0]=Test script 1.lua\n", "u_scl.ini")
    assert parsed.value.files == ("Test script 1.lua",)


def test_a_misspelt_script_key_names_the_one_meant() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse_scl(b"SCRIPT_Fle[0]=a.lua\nSCRIPT=b.lua\n", "u_scl.ini")
    assert [str(p) for p in caught.value.problems] == [
        "u_scl.ini:1: SCRIPT_Fle[0]: malformed key (did you mean SCRIPT_File[0]?); file rejected",
        "u_scl.ini:2: SCRIPT: malformed key (SCRIPT_File[<n>]); file rejected"]

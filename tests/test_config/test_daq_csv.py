"""daq.csv (docs/formats.md §6): blocks in any order, defaults, rejections, canonical writer."""

from __future__ import annotations

import pytest
from config_support import golden

import config
from config import ConfigError

F = "WPM00BDE4_daq.csv"
DEV = ("index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;category;"
       "model;defFile\n")
SER = "port;speed;dataBits;parity;stopBits;wires;protocol;interFrame(ms);forwardTcpPort;path\n"


def _parse(text: str) -> config.Parsed[config.model.Daq]:
    return config.parse_daq(text.encode(), F)


def _rejected(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        _parse(text)
    return [str(p) for p in exc.value.errors]


def test_blocks_in_any_order_and_any_header_case_are_written_in_canonical_order() -> None:
    canonical = golden(F).decode()
    blocks = canonical.split("tcpInterFrameMs;0\n")
    ethernet, rest = blocks
    serial, devices = rest.split("index;", 1)
    shuffled = "INDEX;" + devices + serial.replace("port;", "Port;") + "tcpinterframems;0\n" + \
        ethernet
    parsed = _parse(shuffled)
    assert parsed.warnings == ()
    assert config.render_daq(parsed.value).decode() == canonical


def test_absent_blocks_mean_defaults_and_stay_absent() -> None:
    daq = _parse(DEV + "1;10.0.0.5;inv;1;;;;;;;inv.csv\n").value
    assert daq.lan == () and daq.tcp_inter_frame_ms == 0
    assert [p.port for p in daq.serial] == ["SERIAL1", "SERIAL2", "SERIAL3"]
    assert all(p.line is None and p.speed == 9600 for p in daq.serial)
    dev = daq.devices[0]
    assert (dev.acq_period_s, dev.timeout_ms, dev.keep_alive) == (600, 1000, True)
    assert config.render_daq(daq).decode() == DEV + "1;10.0.0.5;inv;1;600;1000;;;;;inv.csv\n"


def test_empty_name_is_the_index_and_index_case_is_normalised() -> None:
    daq = _parse(DEV + "tic1;;;;600;;041676011381;;;;t.csv\nio;;;;600;;;;;;io.csv\n").value
    assert [(d.index, d.name) for d in daq.devices] == [("TIC1", "TIC1"), ("IO", "IO")]


@pytest.mark.parametrize("row,message", [
    ("1;10.0.0.5;inv;1;0;;;;;;inv.csv", "acqPeriod(s): '0' is outside 1..86400; default 600 used"),
    ("1;10.0.0.5;inv;1;600;10;;;;;inv.csv", ("timeout(ms): '10' is outside 50..60000; default "
                                            "1000 used")),
    ("1;10.0.0.5;inv;1;600;;;2;;;inv.csv", "parameters: '2' is not 0 or 1; default 1 used"),
    ("TIC1;;Linky;;600;;;4800;;;t.csv", ("parameters: '4800' is not 1200, 9600 or empty; "
                                        "default (empty) used")),
    ("1;10.0.0.5;in\x01v;1;600;;;;;;inv.csv", "name: control character 0x01; default 1 used"),
])
def test_bad_device_values_with_defaults_warn(row: str, message: str) -> None:
    assert [str(w) for w in _parse(DEV + row + "\n").warnings] == [f"{F}:2: {message}"]


@pytest.mark.parametrize("row,field,code", [
    ("TIC1;;Linky;;600;;0416\x1b[2J76011381;;;;t.csv", "serialNumber", 0x1B),
    ("1;10.0.0.5;inv;1;600;;;;Inv\x07erter;;inv.csv", "category", 0x07),
    ("1;10.0.0.5;inv;1;600;;;;;M\x009b\x9b;inv.csv", "model", 0x00),
])
def test_control_characters_of_text_columns_become_spaces_with_a_warning(
        row: str, field: str, code: int) -> None:
    # These columns reach DATA files, MQTT JSON, the web UI and logs: a line break or an escape
    # sequence must not.
    parsed = _parse(DEV + row + "\n")
    device = parsed.value.devices[0]
    assert [str(w) for w in parsed.warnings] == [
        f"{F}:2: {field}: control character 0x{code:02X}; replaced by a space"]
    texts = (device.serial_number, device.category, device.model)
    assert all(t.isprintable() for t in texts), texts


@pytest.mark.parametrize("row,message", [
    ("1;SERIAL1;m;0;600;;;;;;m.csv", "address: '0' is outside 1..240"),
    ("1;SERIAL1;m;;600;;;;;;m.csv", "address: missing (1..240)"),
    ("70000;SERIAL1;m;1;600;;;;;;m.csv", "index: '70000' is not 0..65535, IO or TIC1"),
    ("1;;m;1;600;;;;;;m.csv", "interface: missing (SERIAL1..3, <ipv4> or <ipv4>:<port>)"),
    ("1;10.0.0.256;m;1;600;;;;;;m.csv", ("interface: '10.0.0.256' is not SERIAL1..3, <ipv4> or "
                                        "<ipv4>:<port>")),
    ("1;10.0.0.1:0;m;1;600;;;;;;m.csv", "interface: port '0' is not an integer from 1 to 65535"),
    ("IO;SERIAL1;io;;600;;;;;;io.csv", "interface: 'SERIAL1' given, must be empty for IO"),
    ("IO;;io;;600;;;sim;;;io.csv", ("parameters: 'sim' is not empty or modbus:<index> of a Modbus "
                                   "device here")),
    ("1;SERIAL1;m;1;600;;;;;;", "defFile: missing"),
    ("1;SERIAL1;m;1;600;;;;;;../m.csv", "defFile: '../m.csv' is not a file name in /DEF"),
    ("1;SERIAL1;m;1;600;;;;;;m.csv;x", "line: 12 fields but the header at line 1 has 11"),
])
def test_bad_device_rows_reject(row: str, message: str) -> None:
    assert _rejected(DEV + row + "\n") == [f"{F}:2: {message}; file rejected"]


def test_io_module_reference_to_a_modbus_device_of_the_file_is_accepted() -> None:
    daq = _parse(DEV + "IO;;io;;600;;;modbus:4;;;io.csv\n4;SERIAL1;mod;2;60;;;;;;m.csv\n").value
    assert daq.device("IO").parameters == "modbus:4"


@pytest.mark.parametrize("written", ["modbus:04", "modbus:" + "0" * 50 + "4"])
def test_io_module_index_with_leading_zeros_is_the_device_index(written: str) -> None:
    # docs/formats.md §1.1: an integer may have leading zeros, in the index column (`04` is
    # device 4) and so in the `<index>` of `modbus:<index>`; the file is written canonical.
    daq = _parse(DEV + f"IO;;io;;600;;;{written};;;io.csv\n04;SERIAL1;mod;2;60;;;;;;m.csv\n").value
    assert daq.device("IO").parameters == "modbus:4"
    assert "IO;;io;;600;;;modbus:4;" in config.render_daq(daq).decode()


@pytest.mark.parametrize("written", ["modbus:-4", "modbus:\uff14", "modbus:+4", "modbus:1_0",
                                     "modbus:", "modbus:4x", "modbus:99999999999"])
def test_io_module_index_not_an_integer_is_refused(written: str) -> None:
    assert _rejected(DEV + f"IO;;io;;600;;;{written};;;io.csv\n4;SERIAL1;mod;2;60;;;;;;m.csv\n") \
        == [f"{F}:2: parameters: '{written}' is not empty or modbus:<index> of a Modbus "
            "device here; file rejected"]


def test_address_zero_is_allowed_on_a_port_without_driver() -> None:
    daq = _parse(SER + "SERIAL3;;;;;;smanet;;;\n" + DEV + "1;SERIAL3;sb;0;600;;;;;;s.bin\n").value
    assert daq.devices[0].address == 0 and not daq.port("SERIAL3").has_driver


@pytest.mark.parametrize("row,message", [
    ("SERIAL1;14400;8;N;1;2;modbusRTU;0;;", ("speed: '14400' is not one of 1200, 2400, 4800, "
                                            "9600, 19200, 38400, 57600, 115200; default 9600 used")),
    ("SERIAL1;9600;9;N;1;2;modbusRTU;0;;", "dataBits: '9' is not one of 7, 8; default 8 used"),
    ("SERIAL1;9600;8;X;1;2;modbusRTU;0;;", "parity: 'X' is not N, E or O; default N used"),
    ("SERIAL1;9600;8;N;3;2;modbusRTU;0;;", "stopBits: '3' is not one of 1, 2; default 1 used"),
    ("SERIAL1;9600;8;N;1;3;modbusRTU;0;;", "wires: '3' is not one of 2, 4; default 2 used"),
    ("SERIAL1;9600;8;N;1;2;bacnet;0;;", ("protocol: 'bacnet' is not one of modbusRTU, smanet, "
                                        "PW1, delta; default modbusRTU used")),
    ("SERIAL1;9600;8;N;1;2;modbusRTU;20000;;", ("interFrame(ms): '20000' is outside 0..10000; "
                                               "default 0 used")),
    ("SERIAL1;9600;8;N;1;2;modbusRTU;0;99999;", ("forwardTcpPort: '99999' is not an integer "
                                                "from 1 to 65535; default (empty) used")),
    ("SERIAL1;9600;8;N;1;2;modbusRTU;0;502.5;", ("forwardTcpPort: '502.5' is not an integer "
                                                "from 1 to 65535; default (empty) used")),
])
def test_bad_serial_values_warn(row: str, message: str) -> None:
    assert [str(w) for w in _parse(SER + row + "\n").warnings] == [f"{F}:2: {message}"]


@pytest.mark.parametrize("rows,message", [
    ("SERIAL4;9600", "2: port: 'SERIAL4' is not SERIAL1, SERIAL2 or SERIAL3"),
    ("SERIAL1;9600\nserial1;9600", "3: port: 'SERIAL1' is already used at line 2"),
    ("SERIAL1;;;;;;;;1502;\nSERIAL2;;;;;;;;1502;", ("3: forwardTcpPort: '1502' is already used at "
                                                   "line 2")),
    ("SERIAL1;;;;;;;;;/dev/x\nSERIAL2;;;;;;;;;/dev/x", ("3: path: '/dev/x' is already used at "
                                                       "line 2")),
])
def test_serial_structure_errors_reject(rows: str, message: str) -> None:
    assert _rejected(SER + rows + "\n") == [f"{F}:{message}; file rejected"]


@pytest.mark.parametrize("text,message", [
    ("1;SERIAL1;m;1;600;;;;;;m.csv\n", "1: line: row outside a block (no header above it)"),
    (SER + SER, "2: port: block repeated (first at line 1)"),
    ("type;ip\nLAN3;1.2.3.4\n", "2: type: 'LAN3' is not LAN1 or LAN2"),
    ("type;ip;mask\nLAN1;1.2.3.4;255.255.255\n", ("2: mask: '255.255.255' is not a dotted IPv4 "
                                                 "address")),
    (DEV + "1;SERIAL1;a;1;;;;;;;m.csv\n1;SERIAL2;b;1;;;;;;;m.csv\n",
     "3: index: '1' is already used at line 2"),
    (DEV + "1;SERIAL1;a;1;;;;;;;m.csv\n01;SERIAL2;b;1;;;;;;;m.csv\n",
     "3: index: '1' is already used at line 2"),
    ("tcpInterFrameMs;0;5\n", "1: line: 3 fields, at most 2"),
])
def test_structural_errors_reject(text: str, message: str) -> None:
    assert _rejected(text) == [f"{F}:{message}; file rejected"]


def test_tcp_inter_frame_out_of_range_warns() -> None:
    parsed = _parse("tcpInterFrameMs;20000\n")
    assert parsed.value.tcp_inter_frame_ms == 0
    assert [str(w) for w in parsed.warnings] == [
        f"{F}:1: tcpInterFrameMs: '20000' is outside 0..10000; default 0 used"]


def test_all_problems_of_the_file_are_reported() -> None:
    errors = _rejected(DEV + "1;SERIAL1;a;300;;;;;;;m.csv\n2;SERIAL9;b;1;;;;;;;m.csv\n"
                             "3;SERIAL1;a;1;;;;;;;m.csv\n")
    assert [e.split(": ")[1] for e in errors] == ["address", "interface", "name"]


def test_a_rejected_row_reports_its_period_and_timeout_problems_too() -> None:
    # A form shows every field's problem at once, not the next one after each fix.
    with pytest.raises(ConfigError) as caught:
        config.parse_daq((DEV + "1;10.0.0.1:0;m;300;0;10;;;;;m.csv\n").encode(), F)
    assert [str(p) for p in caught.value.problems] == [
        f"{F}:2: interface: port '0' is not an integer from 1 to 65535; file rejected",
        f"{F}:2: address: '300' is outside 1..240; file rejected",
        f"{F}:2: acqPeriod(s): '0' is outside 1..86400; default 600 used",
        f"{F}:2: timeout(ms): '10' is outside 50..60000; default 1000 used"]


def test_ports_with_thousands_of_leading_zeros_are_their_value() -> None:
    # docs/formats.md §1.1: leading zeros allowed, as many as a file holds (`int()` refuses
    # over 4,300 digits: a traceback instead of the port).
    zeros = "0" * 5000
    daq = _parse(SER + f"SERIAL1;9600;8;N;1;2;modbusRTU;0;{zeros}1502;\n" + DEV +
                 f"1;10.0.0.5:{zeros}1502;inv;1;;;;;;;inv.csv\n").value
    assert daq.port("SERIAL1").forward_tcp_port == 1502
    assert daq.devices[0].tcp_endpoint == ("10.0.0.5", 1502)


def test_rows_of_one_modbus_unit_are_kept_with_a_warning_naming_both() -> None:
    """docs/spec-notes.md: a row copied without changing its address is polled twice; the
    later row says so, naming the first (each of several copies names the first)."""
    parsed = _parse(SER + "SERIAL1;;;;;;;;;\nSERIAL2;;;;;;;;;\n" + DEV +
                    "1;10.0.0.5;a;1;;;;;;;inv.csv\n"
                    "2;10.0.0.5:502;b;1;;;;;;;inv.csv\n"      # port 502 written or not: one unit
                    "3;10.0.0.5:1502;c;1;;;;;;;inv.csv\n"     # another port: another unit
                    "4;10.0.0.6;d;1;;;;;;;inv.csv\n"
                    "5;10.0.0.5;e;2;;;;;;;inv.csv\n"
                    "6;SERIAL1;f;7;;;;;;;m.csv\n"
                    "7;serial1;g;7;;;;;;;m.csv\n"
                    "8;SERIAL2;h;7;;;;;;;m.csv\n"
                    "9;10.0.0.5;i;1;;;;;;;inv.csv\n"
                    "IO;;io;;;;;modbus:1;;;io.csv\n")
    assert [d.index for d in parsed.value.devices] == [str(k) for k in range(1, 10)] + ["IO"]
    assert [str(w) for w in parsed.warnings] == [
        f"{F}:6: address: index 2 shares 10.0.0.5:502 unit 1 with index 1 at line 5: the unit "
        "is polled twice; both kept",
        f"{F}:11: address: index 7 shares SERIAL1 unit 7 with index 6 at line 10: the unit is "
        "polled twice; both kept",
        f"{F}:13: address: index 9 shares 10.0.0.5:502 unit 1 with index 1 at line 5: the unit "
        "is polled twice; both kept"]
    assert all(config.errors.kept_as_written(w) for w in parsed.warnings)

"""Definition files (docs/formats.md §8): Info2/Info3 forms, scale factors, tolerances, errors."""

from __future__ import annotations

import pytest

import config
from config import ConfigError
from config.model import ByteOrder, DataType, ModbusPoint, RegisterKind

HEAD = "modbusRTU;Meter;ACME;M\n"


def _point(info1: str, info2: str, info3: str) -> ModbusPoint:
    data = (HEAD + f"1;{info1};{info2};{info3};;v;;1;0;;4\n").encode()
    point = config.parse_definition(data, "x.csv").value.variables[0].modbus
    assert point is not None
    return point


def _rejected(lines: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config.parse_definition((HEAD + lines).encode(), "x.csv")
    return [str(p) for p in exc.value.errors]


# Every type with every byte-order suffix, any case on read: (Info3, type, order, registers).
TYPE_TABLE = [
    (f"{name}{suffix}", dtype, order, regs)
    for name, dtype, regs in [("U8", DataType.U8, 1), ("I8", DataType.I8, 1),
                              ("U16", DataType.U16, 1), ("I16", DataType.I16, 1),
                              ("U32", DataType.U32, 2), ("I32", DataType.I32, 2),
                              ("U64", DataType.U64, 4), ("I64", DataType.I64, 4),
                              ("F32", DataType.F32, 2), ("F64", DataType.F64, 4),
                              ("Bits", DataType.BITS, 1), ("IP", DataType.IP, 2),
                              ("IPV6", DataType.IPV6, 8), ("MAC", DataType.MAC, 3)]
    for suffix, order in [("", ByteOrder.BIG_ENDIAN), ("_B", ByteOrder.SWAP_BYTES),
                          ("_W", ByteOrder.SWAP_WORDS), ("_WB", ByteOrder.SWAP_BOTH)]
]


@pytest.mark.parametrize("info3,dtype,order,registers", TYPE_TABLE)
def test_every_type_and_byte_order_suffix(info3: str, dtype: DataType, order: ByteOrder,
                                          registers: int) -> None:
    for spelling in (info3, info3.lower()):
        point = _point("3", "100", spelling)
        assert (point.data_type, point.byte_order, point.register_count, point.address) == (
            dtype, order, registers, 100)


@pytest.mark.parametrize("info1,info2,info3,expected", [
    # the Info2 column of the decoding table of docs/formats.md §8.3
    ("3", "40000_0", "U8", {"byte": 0}),
    ("3", "40000_1", "U8", {"byte": 1}),
    ("3", "40000_1", "I8", {"byte": 1}),
    ("3", "40005_4_8", "Bits", {"bit": 4, "nbits": 8}),
    ("3", "40008_1", "Bits", {"bit": 1, "nbits": 1}),
    ("3", "40004_8", "String", {"string_bytes": 8}),
    ("4", "40000 10", "String", {"string_bytes": 10}),   # the manual prints a space
    ("3", "40000_250", "String", {"string_bytes": 250}),
    ("3", "40000_1", "String", {"string_bytes": 1}),
    ("3", "40000 15", "Bits", {"bit": 15, "nbits": 1}),
    ("3", "65535", "U16", {}),
])
def test_info2_forms(info1: str, info2: str, info3: str, expected: dict[str, int]) -> None:
    point = _point(info1, info2, info3)
    for attr, value in expected.items():
        assert getattr(point, attr) == value
    assert point.address == int(info2.replace(" ", "_").split("_")[0])


def test_string_byte_count_rounds_up_to_registers() -> None:
    assert _point("3", "0_7", "String").register_count == 4


@pytest.mark.parametrize("info1", ["1", "2"])
def test_coils_and_discrete_inputs_are_one_bit_and_info3_is_not_checked(info1: str) -> None:
    for info3 in ("", "whatever", "U16"):
        point = _point(info1, "17", info3)
        assert point.kind is RegisterKind(int(info1)) and point.data_type is None
        assert point.register_count == 1


@pytest.mark.parametrize("info1,info2,info3,field,problem", [
    ("3", "40000_2", "U8", "Info2", "byte 2 is outside 0..1"),
    ("3", "40000_1", "U16", "Info2", "form '40000_1' does not fit type U16"),
    ("3", "40000_1_2", "U8", "Info2", "form '40000_1_2' does not fit type U8"),
    ("3", "40000_16", "Bits", "Info2", "bit 16 is outside 0..15"),
    ("3", "40000_10_7", "Bits", "Info2", "bits 10+7 pass bit 15"),
    ("3", "40000_251", "String", "Info2", "byte count 251 is outside 1..250"),
    ("3", "4000a", "U16", "Info2", "'4000a' is not a numeric address"),
    ("3", "", "U16", "Info2", "missing (register address)"),
    ("3", "65536", "U16", "Info2", "register 65536 is outside 0..65535"),
    ("3", "65535", "U32", "Info2", "'65535' runs past register 65535"),
    ("3", "0", "U24", "Info3", "'U24' is not a known type"),
    ("3", "0", "U16_X", "Info3", "'U16_X' is not a known type"),
    ("5", "0", "U16", "Info1", "'5' is outside 1..4"),
    ("1", "3_1", "", "Info2", "'3_1' is not a plain address (a coil or discrete input is one bit)"),
])
def test_bad_forms_reject_the_file(info1: str, info2: str, info3: str, field: str,
                                   problem: str) -> None:
    assert _rejected(f"1;{info1};{info2};{info3};;v;;1;0;;4\n") == [
        f"x.csv:2: {field}: {problem}; file rejected"]


def test_scale_factor_resolution_takes_the_nearest_repeated_name_above() -> None:
    defn = config.parse_definition((HEAD + "1;3;100;I16;;SF;;1;0;;1\n2;3;101;U16;SF;A;;1;0;;4\n3;3;200;I16;;SF;;1;0;;1\n4;3;201;U16;SF;B;;1;0;;4\n5;3;99;U16;SF;C;;1;0;;4\n").encode(), "x.csv")
    by_index = {v.index: v for v in defn.value.variables}
    assert by_index[2].scale_factor_index == 1
    assert by_index[4].scale_factor_index == 3
    assert by_index[5].scale_factor_index == 3      # nearest above line 6 is Index 3
    assert by_index[3].key == "SF_3" and by_index[1].key == "SF"
    assert [str(w) for w in defn.warnings] == [
        "x.csv:4: Name: 'SF' is already used at line 2; kept, key SF_3"]


def test_scale_factor_named_before_its_line_takes_the_first() -> None:
    defn = config.parse_definition(
        (HEAD + "1;3;101;U16;SF;A;;1;0;;4\n2;3;100;I16;;SF;;1;0;;1\n").encode(), "x.csv").value
    assert defn.variable(1).scale_factor_index == 2


@pytest.mark.parametrize("lines,message", [
    ("1;3;101;U16;Nope;A;;1;0;;4\n", "x.csv:2: Info4: 'Nope' names no variable of this file"),
    ("1;3;100;F32;;SF;;1;0;;1\n2;3;101;U16;SF;A;;1;0;;4\n",
     "x.csv:3: Info4: 'SF' is not a U8..I64 register variable"),
    ("1;3;100;I16;;SF;;1;0;;1\n2;3;101;F32;SF;A;;1;0;;4\n",
     "x.csv:3: Info4: scale factor on type F32 (U8..I64 registers only)"),
    ("1;3;100;I16;X;SF;;1;0;;1\n2;3;101;U16;SF;A;;1;0;;4\n3;3;102;I16;;X;;1;0;;1\n",
     "x.csv:3: Info4: 'SF' has a scale factor of its own"),
])
def test_bad_scale_factor_references_reject(lines: str, message: str) -> None:
    assert _rejected(lines) == [f"{message}; file rejected"]


def test_string_without_byte_count_spans_to_the_next_register_of_its_kind() -> None:
    parsed = config.parse_definition((HEAD + "1;3;40004;String;;Mn;;1;0;;1\n2;4;40010;U16;;other kind;;1;0;;1\n3;3;40020;String;;Md;;1;0;;1\n4;3;40500;U16;;far;;1;0;;1\n5;3;40600;String;;last;;1;0;;1\n").encode(), "x.csv")
    spans = {v.index: v.modbus.register_count for v in parsed.value.variables if v.modbus}
    assert (spans[1], spans[3], spans[5]) == (16, 125, 1)
    assert [str(w) for w in parsed.warnings] == [
        "x.csv:2: Info2: String without a byte count; spans 16 registers",
        "x.csv:4: Info2: String without a byte count; spans 125 registers",
        "x.csv:6: Info2: String without a byte count; spans 1 register",
    ]


def test_control_characters_become_spaces_with_a_warning() -> None:
    parsed = config.parse_definition((HEAD + "1;3;1;U16;;Current\x02day;;1;0;;4\n").encode(),
                                     "inverter.csv")
    assert parsed.value.variables[0].name == "Current day"
    assert [str(w) for w in parsed.warnings] == [
        "inverter.csv:2: Name: control character 0x02; replaced by a space"]


def test_a_control_character_at_a_fields_end_leaves_no_space_the_file_written_would_lose(
        ) -> None:
    data = "modbusRTU;Meter;ACME;M\n1;3;1;U16;;\x02Volts;\tt\x7f;1;0;\x85V;4\n".encode()
    parsed = config.parse_definition(data, "inverter.csv")
    var = parsed.value.variables[0]
    assert (var.name, var.tag, var.unit) == ("Volts", "t", "V")
    again = config.parse_definition(config.render_definition(parsed.value), "inverter.csv")
    assert again.value.variables == parsed.value.variables and again.warnings == ()


def test_control_characters_of_the_header_and_c1_ones_become_spaces_too() -> None:
    # The header's text reaches the web UI and logs as Name does; U+009B starts a terminal
    # sequence as ESC [ does.
    data = "modbusRTU;Met\x1ber;AC\x9bME;M\x00\n1;3;1;U16;;Curr\x85ent;;1;0;;4\n".encode()
    parsed = config.parse_definition(data, "inverter.csv")
    defn = parsed.value
    assert (defn.category, defn.manufacturer, defn.model) == ("Met er", "AC ME", "M")
    assert defn.variables[0].name == "Curr ent"
    assert [str(w) for w in parsed.warnings] == [
        "inverter.csv:1: Category: control character 0x1B; replaced by a space",
        "inverter.csv:1: Manufacturer: control character 0x9B; replaced by a space",
        "inverter.csv:1: Model: control character 0x00; replaced by a space",
        "inverter.csv:2: Name: control character 0x85; replaced by a space"]


@pytest.mark.parametrize("lines,message", [
    ("1;3;1;U16;;A;;1;0;;4\n1;3;2;U16;;B;;1;0;;4\n", ("x.csv:3: Index: '1' is already used at "
                                                     "line 2")),
    ("1;3;1;U16;;A;t;1;0;;4\n2;3;2;U16;;B;t;1;0;;4\n", ("x.csv:3: Tag: 't' is already used at "
                                                       "line 2")),
    ("1;3;1;U16;;A;;1;0;;3\n", "x.csv:2: Action: '3' is not 0, 1, 2, 4, 8 or 9"),
    ("1;3;1;U16;;A;;1;0;;16\n", "x.csv:2: Action: '16' is not 0, 1, 2, 4, 8 or 9"),
    ("1;3;1;U16;;A;;1;0;;\n", "x.csv:2: Action: empty, expected an integer"),
    ("1;3;1;U16;;;;1;0;;4\n", "x.csv:2: Name: missing"),
    ("-1;3;1;U16;;A;;1;0;;4\n", "x.csv:2: Index: '-1' is outside 0..2147483647"),
    ("1;3;1;U16;;A;;1;0;;4;;x\n", "x.csv:2: line: 13 fields, at most 11"),
])
def test_variable_errors_reject(lines: str, message: str) -> None:
    assert _rejected(lines) == [f"{message}; file rejected"]


def test_unknown_protocol_rejects() -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse_definition(b"bacnet;x;y;z\n1;3;1;U16;;A;;1;0;;4\n", "x.csv")
    assert str(exc.value) == ("x.csv:1: Protocol: 'bacnet' is not modbusRTU, modbusTCP, io or "
                              "tic; file rejected")


def test_protocol_any_case_written_canonically_and_title_line_kept() -> None:
    data = b"MODBUSTCP;a;b;c\nIndex;Info1;Info2;Info3;Info4;Name;Tag;CoefA;CoefB;Unit;Action\n" \
           b"1;3;1;U16;;A;;1;0;;4\n"
    defn = config.parse_definition(data, "x.csv").value
    assert defn.protocol.value == "modbusTCP"
    assert config.render_definition(defn) == data.replace(b"MODBUSTCP", b"modbusTCP")


@pytest.mark.parametrize("line,message", [
    ("1;4;1;1;;AI;;1;0;;4", "Info1: '4' is outside 1..3"),
    ("1;1;5;1;;AI;;1;0;;4", "Info2: '5' is outside 1..4"),
    ("1;3;2;;;R;;1;0;;4", "Info2: '2' is outside 1..1"),
    ("1;1;1;3;;AI;;1;0;;4", "Info3: '3' is outside 1..2"),
])
def test_io_rules(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse_definition(f"io;a;b;c\n{line}\n".encode(), "x.csv")
    assert str(exc.value) == f"x.csv:2: {message}; file rejected"


def test_io_channel_used_twice_rejects_and_four_digital_inputs_are_accepted() -> None:
    ok = "io;a;b;c\n" + "".join(f"{k};2;{k};1;;DI{k};;1;0;;0\n" for k in range(1, 5))
    assert len(config.parse_definition(ok.encode(), "x.csv").value.variables) == 4
    with pytest.raises(ConfigError) as exc:
        config.parse_definition(b"io;a;b;c\n1;1;1;1;;A;;1;0;;0\n2;1;1;2;;B;;1;0;;0\n", "x.csv")
    assert str(exc.value) == ("x.csv:3: Info2: channel 1 of Info1 1 is already used at line 2; "
                              "file rejected")


def test_tic_label_rule() -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse_definition(b"tic;a;b;c\n1;adco;;;;ADCO;;1;0;;1\n", "x.csv")
    assert str(exc.value) == ("x.csv:2: Info1: 'adco' is not a TIC group label (1..16 of A-Z 0-9 "
                              "+ -); file rejected")


def test_all_problems_of_a_file_are_reported_not_only_the_first() -> None:
    errors = _rejected("1;3;x;U16;;A;;1;0;;4\n2;9;1;U16;;B;;1;0;;4\n3;3;1;U16;;C;;1;0;;7\n")
    assert len(errors) == 3 and [e.split(":")[1] for e in errors] == ["2", "3", "4"]


def test_sha256_and_snapshot_id_come_from_the_bytes() -> None:
    import hashlib
    data = (HEAD + "1;3;1;U16;;A;;1;0;;4\n").encode()
    defn = config.parse_definition(data, "m.csv").value
    assert defn.snapshot_id == f"{hashlib.sha256(data).hexdigest()}:m.csv"

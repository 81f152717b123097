"""Text rules of docs/formats.md §1.1: encodings, line ends, separators, quoting, empty files."""

from __future__ import annotations

import pytest

import config
from config import ConfigError

DEF_HEAD = "modbusTCP;Inverter;ACME;X\n"


def _errors(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(p) for p in exc.value.errors]


def test_crlf_lone_cr_and_lf_files_read_alike() -> None:
    lf = (DEF_HEAD + "1;3;40000;U16;;W;;1;0;W;4\n2;3;40001;I16;;SF;;1;0;;1\n").encode()
    crlf = lf.replace(b"\n", b"\r\n")
    cr = lf.replace(b"\n", b"\r")
    parsed = [config.parse_definition(d, "x.csv").value for d in (lf, crlf, cr)]
    assert parsed[0].variables == parsed[1].variables == parsed[2].variables
    assert config.render_definition(parsed[1]) == lf  # writers use LF


def test_last_line_without_line_end_is_read() -> None:
    parsed = config.parse_var_ini(b"SCHEDULE_Params[0]=1|monday", "u_var.ini")
    assert parsed.value.server1[0].type.value == "monday"


def test_utf8_bom_is_skipped() -> None:
    data = b"\xef\xbb\xbf" + DEF_HEAD.encode() + b"1;3;40000;U16;;W;;1;0;W;4\n"
    assert config.parse_definition(data, "x.csv").value.protocol.value == "modbusTCP"
    ini = config.parse_config_ini(b"\xef\xbb\xbfLOG_Level=debug\n", "u_config.ini").value
    assert ini.settings("u").log_level == "debug"


def test_cp1252_definition_file_reads_with_a_warning_naming_the_line() -> None:
    data = (DEF_HEAD + "1;3;40000;I16;;Temp;;1;0;\xb0C;4\n").encode("cp1252")
    parsed = config.parse_definition(data, "x.csv")
    assert parsed.value.variables[0].unit == "°C"
    assert [str(w) for w in parsed.warnings] == [
        "x.csv:2: encoding: not valid UTF-8 (byte 0xB0); read as Windows-1252"]


def test_cp1252_daq_reads_with_a_warning() -> None:
    data = ("index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;"
            "category;model;defFile\n1;SERIAL1;compteur_é;3;600;1000;;;;;m.csv\n").encode("cp1252")
    parsed = config.parse_daq(data, "u_daq.csv")
    assert parsed.value.devices[0].name == "compteur_é"
    assert [str(w) for w in parsed.warnings] == [
        "u_daq.csv:2: encoding: not valid UTF-8 (byte 0xE9); read as Windows-1252"]


def test_non_utf8_ini_file_is_rejected() -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse_config_ini(b"# ok\nWEB_User=J\xe9r\xf4me\n", "u_config.ini")
    assert _errors(exc) == [("u_config.ini:2: encoding: not valid UTF-8 (byte 0xE9); "
                            "file rejected")]


def test_byte_undefined_in_cp1252_rejects_even_a_definition_file() -> None:
    data = (DEF_HEAD + "1;3;40000;U16;;W;;1;0;W;4\n").encode() + b"2;3;1;U16;;\x81;;1;0;;4\n"
    with pytest.raises(ConfigError) as exc:
        config.parse_definition(data, "x.csv")
    assert _errors(exc) == ["x.csv:3: encoding: not valid UTF-8 (byte 0x81); file rejected"]


@pytest.mark.parametrize("bom", [b"\xff\xfe", b"\xfe\xff"])
def test_utf16_bom_rejects_the_file(bom: bytes) -> None:
    data = bom + DEF_HEAD.encode("utf-16-le")
    with pytest.raises(ConfigError) as exc:
        config.parse_definition(data, "x.csv")
    assert _errors(exc) == [(f"x.csv:1: encoding: not valid UTF-8 (byte 0x{bom[0]:02X}: a "
                             "UTF-16 file; save it as UTF-8); "
                            "file rejected")]


def test_comma_separated_definition_file_is_rejected_with_the_spreadsheet_hint() -> None:
    data = b"# exported\nmodbusTCP,Inverter,ACME,X\n1,3,40000,U16,,W,,1,0,W,4\n"
    with pytest.raises(ConfigError) as exc:
        config.parse_definition(data, "x.csv")
    assert _errors(exc) == [
        ("x.csv:2: separator: ',' is used but must be ';' (a spreadsheet may have changed it "
        "when saving); file rejected")]


def test_comma_separated_daq_is_rejected() -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse_daq(b"index,interface,name\n1,SERIAL1,x\n", "u_daq.csv")
    assert _errors(exc)[0].startswith("u_daq.csv:1: separator: ',' is used but must be ';'")


def test_one_comma_or_tab_separated_line_in_a_good_file_names_the_separator() -> None:
    """A row pasted from a spreadsheet: its own line says the separator, not `index: '2,1...'
    is not 0..65535` (nor, for tabs, one error for each field it seems to lack)."""
    daq = (b"index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;"
           b"category;model;defFile\n1;SERIAL1;a;1;600;1000;;;;;x.csv\n"
           b"2,SERIAL1,b,2,600,1000,,,,,x.csv\n")
    with pytest.raises(ConfigError) as exc:
        config.parse_daq(daq, "u_daq.csv")
    assert _errors(exc) == [
        "u_daq.csv:3: separator: ',' is used but must be ';' (a spreadsheet may have changed it "
        "when saving); file rejected"]
    data = (DEF_HEAD + "1;3;40000;U16;;W;;1;0;W;4\n2\t3\t40001\tU16\t\tVA\t\t1\t0\tVA\t4\n"
            "3;3;40002;U16;;VAr;;1;0;VAr;4\n").encode()
    with pytest.raises(ConfigError) as exc:
        config.parse_definition(data, "x.csv")
    assert _errors(exc) == [
        "x.csv:3: separator: a tab is used but must be ';' (a spreadsheet may have changed it "
        "when saving); file rejected"]


def test_trailing_spaces_and_tabs_are_trimmed() -> None:
    data = (DEF_HEAD + "1 ;\t3; 40000 ;U16 ;; W  ;;1 ;0;W\t;4   \n").encode()
    var = config.parse_definition(data, "x.csv").value.variables[0]
    assert (var.index, var.info2, var.name, var.unit, int(var.action)) == (1, "40000", "W", "W", 4)
    ini = config.parse_config_ini(b"WEB_Port = 8081   \n", "u_config.ini").value
    assert ini.settings("u").web_port == 8081


@pytest.mark.parametrize("parse,name", [
    (config.parse_config_ini, "u_config.ini"), (config.parse_var_ini, "u_var.ini"),
    (config.parse_scl, "u_scl.ini"), (config.parse_daq, "u_daq.csv"),
])
def test_empty_configuration_files_mean_all_defaults(parse, name: str) -> None:  # type: ignore[no-untyped-def]
    assert parse(b"", name).warnings == ()


def test_empty_definition_file_is_rejected() -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse_definition(b"# only a comment\n\n", "x.csv")
    assert _errors(exc) == [("x.csv:1: Protocol: missing (the file has no header line); "
                            "file rejected")]


def test_quoted_field_keeps_its_semicolon_and_doubled_quotes() -> None:
    data = (DEF_HEAD + '1;3;40000;U16;;"Power; AC ""total"""  ;;1;0;W;4\n').encode()
    var = config.parse_definition(data, "x.csv").value.variables[0]
    assert var.name == 'Power; AC "total"'


def test_unbalanced_quote_is_taken_as_written_with_a_warning() -> None:
    data = (DEF_HEAD + '1;3;40000;U16;;"Power AC;;1;0;W;4\n').encode()
    parsed = config.parse_definition(data, "x.csv")
    assert parsed.value.variables[0].name == '"Power AC'
    assert [str(w) for w in parsed.warnings] == [
        "x.csv:2: Name: unbalanced quote; taken as written"]


def test_text_after_a_closing_quote_is_no_quoting() -> None:
    data = (DEF_HEAD + '1;3;40000;U16;;"Power" AC;;1;0;W;4\n').encode()
    parsed = config.parse_definition(data, "x.csv")
    assert parsed.value.variables[0].name == '"Power" AC'
    assert len(parsed.warnings) == 1


def test_empty_lines_lines_of_semicolons_and_comments_are_ignored() -> None:
    data = (DEF_HEAD + "\n;;;;\n# a comment;with;fields\n  \n1;3;40000;U16;;W;;1;0;W;4\n").encode()
    parsed = config.parse_definition(data, "x.csv")
    assert [v.line for v in parsed.value.variables] == [6]


def test_writer_replaces_separator_and_line_ends_inside_text_by_spaces() -> None:
    data = (DEF_HEAD + '1;3;40000;U16;;"a;b";;1;0;W;4\n').encode()
    defn = config.parse_definition(data, "x.csv").value
    assert config.render_definition(defn).endswith(b"1;3;40000;U16;;a b;;1;0;W;4\n")


@pytest.mark.parametrize("text,problem", [
    ("1,5", "'1,5' is not a number (use '.' as decimal point)"),
    ("+1", "'+1' is not a number"),
    ("inf", "'inf' is not a number"),
    ("1_000", "'1_000' is not a number"),
    ("١", "'١' is not a number"),
])
def test_bad_decimals_fall_back_to_default_with_the_rule_of_section_1(text: str,
                                                                      problem: str) -> None:
    data = (DEF_HEAD + f"1;3;40000;U16;;W;;{text};0;W;4\n").encode()
    parsed = config.parse_definition(data, "x.csv")
    assert parsed.value.variables[0].coef_a == 1
    assert [str(w) for w in parsed.warnings] == [f"x.csv:2: CoefA: {problem}; default 1 used"]


@pytest.mark.parametrize("text", ["5.", ".5", "1E-05", "-2.5e3", "007"])
def test_decimal_forms_the_spec_accepts(text: str) -> None:
    data = (DEF_HEAD + f"1;3;40000;U16;;W;;{text};0;W;4\n").encode()
    parsed = config.parse_definition(data, "x.csv")
    assert parsed.warnings == () and parsed.value.variables[0].coef_a_text == text

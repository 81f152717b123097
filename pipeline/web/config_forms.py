"""The Configuration page's forms (docs/behaviour.md §10.2): what each section shows, and the
`Edit` a submitted section makes of config.ini, var.ini or daq.csv.

Each section saves alone. A form field is named as what it edits: the config.ini key
(`FTP_Port`), `s<slot>_<row>_<Field>` for a schedule (`s1_0_StartTime`), `<port>_<column>` for a
serial port (`SERIAL1_speed`) and `<LAN>_<column>` for the network (`LAN1_ip`); `locate` maps
`config`'s problems back onto those names.

Secrets (passwords, the modem PIN) are never sent to the browser: their field is empty and an
empty submission keeps the value in force.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from config import (
    ConfigIni,
    parse_config_ini,
    parse_daq,
    parse_var_ini,
    render_config_ini,
    render_daq,
)
from config.config_ini import KEY_TABLE, KEYS, server_key
from config.daq_csv import ETHERNET_COLUMNS, SERIAL_COLUMNS
from config.decimal_text import INTEGER_SYNTAX
from config.errors import Problem, Severity
from config.model import Daq, FullPolicy, LanRow, ScheduleType, SerialPort, ServerType
from config.reference import CONFIG_KEYS
from config.var_ini import FIELDS as SCHEDULE_FIELDS
from config.var_ini import VarIni, format_start, placed_schedule_lines
from pipeline.web.editing import Edit

#: Keys that take effect only at the next start (docs/behaviour.md §10.2).
RESTART_KEYS: Final = frozenset({"STORE_Path", "WEB_Bind", "WEB_Port", "MODEM_Port", "TIC_Port",
                                 "GATEWAY_Uid"})
#: Never editable from a browser: the hash has its own form (the password change), and a
#: shell command to run at updates stays a file-only setting.
HIDDEN_KEYS: Final = frozenset({"WEB_PasswordHash", "SYSTEM_UpdateCommand"})
_BOOL: Final = ("0", "1")
_CHOICES: Final[Mapping[str, tuple[str, ...]]] = {
    "SERVER_Type": tuple(t.value for t in ServerType),
    "LOG_Level": ("debug", "info", "warning", "error"),
    "STORE_FullPolicy": tuple(p.value for p in FullPolicy),
    "MQTT_Qos": ("0", "1", "2"),
}
#: Blank schedule rows offered after the existing ones, for adding entries.
SPARE_SCHEDULE_ROWS: Final = 2
SERIAL_PORTS: Final = ("SERIAL1", "SERIAL2", "SERIAL3")
LANS: Final = ("LAN1", "LAN2")


#: The files of CONFIG/ the API reads and replaces whole (`/api/config/<file>`).
CONFIG_FILES: Final = ("config.ini", "daq.csv", "var.ini", "scl.ini")
#: What a secret's value is shown as in a whole config.ini; sent back, the value stays.
MASK: Final = "***"


def _secret_line(line: str) -> tuple[str, str] | None:
    """`(key, value)` of a `KEY=value` line whose key is a secret (or the password hash)."""
    key, sep, value = line.strip().partition("=")
    key = key.strip()
    if not sep or key.startswith("#") or not (is_secret(key) or key == "WEB_PasswordHash"):
        return None
    return key, value.strip()


def mask_secrets(text: str) -> str:
    """config.ini with every secret set shown as `***` (never sent to a browser)."""
    out = []
    for line in text.splitlines(keepends=True):
        found = _secret_line(line)
        if found is not None and found[1]:
            end = line[len(line.rstrip("\r\n")):]
            line = f"{found[0]}={MASK}{end}"
        out.append(line)
    return "".join(out)


def unmask_secrets(text: str, current: str) -> str:
    """A config.ini sent back: a secret still `***` takes its value on disk."""
    on_disk = {}
    for line in current.splitlines():
        found = _secret_line(line)
        if found is not None:
            on_disk[found[0]] = found[1]
    out = []
    for line in text.splitlines(keepends=True):
        found = _secret_line(line)
        if found is not None and found[1] == MASK:
            end = line[len(line.rstrip("\r\n")):]
            line = f"{found[0]}={on_disk.get(found[0], '')}{end}"
        out.append(line)
    return "".join(out)


def hidden_key_changes(text: str, current: bytes, file_name: str) -> list[Problem]:
    """A refusal for each key of `HIDDEN_KEYS` whose value a whole config.ini sent by a browser
    (secrets unmasked) changes: the files' own parser reads both, as the gateway would."""
    sent = parse_config_ini(text.encode(), file_name).value
    kept = parse_config_ini(current, file_name).value
    line_of = {line.key: line.line for line in sent.lines if line.key}
    return [Problem(file=file_name, line=line_of.get(key), field=key,
                    message="not changed from a browser: " + (
                        "the password has its form, which asks for the current one"
                        if key == "WEB_PasswordHash" else
                        "a shell command is set in the file on the gateway itself"),
                    severity=Severity.ERROR)
            for key in sorted(HIDDEN_KEYS) if (sent.get(key) or "") != (kept.get(key) or "")]


def is_secret(key: str) -> bool:
    base = _server1_name(key)
    return base.endswith("Password") or base == "MODEM_Pin"


def _server1_name(key: str) -> str:
    """`FTP2_Host` -> `FTP_Host` (the reference's spelling); other keys unchanged."""
    prefix, _, rest = key.partition("_")
    if prefix.endswith("2") and prefix[:-1] in ("SERVER", "FTP", "HTTP", "MQTT", "DIR"):
        return f"{prefix[:-1]}_{rest}"
    return key


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    title: str
    keys: tuple[str, ...]
    note: str = ""


def _server_keys(slot: int, mqtt: bool) -> tuple[str, ...]:
    """A slot's keys in table order: its type and file-server keys, or its MQTT keys."""
    ones = [spec.name for spec in KEY_TABLE
            if spec.name.partition("_")[0] in ("SERVER", "FTP", "HTTP", "MQTT", "DIR")]
    return tuple(server_key(k, slot) for k in ones if k.startswith("MQTT_") == mqtt)


def _keys(*prefixes: str) -> tuple[str, ...]:
    return tuple(spec.name for spec in KEY_TABLE
                 if spec.name.startswith(prefixes) and spec.name not in HIDDEN_KEYS)


CONFIG_SECTIONS: Final = (
    Section("server1", "Server 1", _server_keys(1, mqtt=False),
            "file servers (ftp, ftps, sftp, webdav, dir); MQTT settings below"),
    Section("mqtt1", "Server 1: MQTT", _server_keys(1, mqtt=True)),
    Section("server2", "Server 2", _server_keys(2, mqtt=False)),
    Section("mqtt2", "Server 2: MQTT", _server_keys(2, mqtt=True)),
    Section("time", "Time", ("NTP_Server1", "NTP_Server2", "NTP_TimeZone"),
            "both NTP servers empty: no clock check"),
    Section("storage", "Storage", _keys("STORE_", "SD_")),
    Section("alarms", "Alarms", _keys("ALARM_")),
    Section("acquisition", "Acquisition and logs", ("DAQ_PollPeriod", "DAQ_ModbusMaxGap",
                                                    "TIC_Port", "LOG_Level", "GATEWAY_Uid")),
    Section("modem", "Modem and SMS", _keys("MODEM_", "SMS_")),
    Section("web", "Web access", ("WEB_Bind", "WEB_Port", "WEB_User", "WEB_Hosts",
                                  "WEB_TrustedProxies")),
)
SECTION_BY_NAME: Final = {s.name: s for s in CONFIG_SECTIONS}


# ----------------------------------------------------------------------------- config.ini


def key_view(cfg: ConfigIni, key: str) -> dict[str, Any]:
    """What the form shows of one key: its text as written (never a secret's), the default,
    the reference's words, the choices of a closed set."""
    spec = KEYS[key]
    base = _server1_name(key)
    doc = CONFIG_KEYS.get(base)
    written = cfg.values.get(key)
    secret = is_secret(key)
    choices = _CHOICES.get(base)
    if choices is None and doc is not None and doc.values.startswith("`0`") and "`1`" in doc.values:
        choices = _BOOL
    default = doc.default if doc is not None and doc.default is not None else (spec.default or "")
    return {"key": key, "value": "" if secret else (written or ""),
            "default": default, "set": bool(written), "secret": secret,
            "choices": list(choices) if choices else None,
            "values": doc.values.replace("`", "") if doc is not None else "",
            "meaning": doc.meaning.replace("`", "") if doc is not None else "",
            "restart": key in RESTART_KEYS}


def section_view(cfg: ConfigIni, section: Section) -> dict[str, Any]:
    return {"name": section.name, "title": section.title, "note": section.note,
            "keys": [key_view(cfg, key) for key in section.keys]}


def config_ini_edit(path: str, current: bytes, section: Section,
                    form: Mapping[str, str]) -> Edit:
    """config.ini with the section's submitted keys set (only the lines of changed keys are
    rewritten); a key left empty and not written stays unwritten (its default), a secret left
    empty keeps its value."""
    file_name = path.rpartition("/")[2]
    cfg = parse_config_ini(current, file_name).value
    for key in section.keys:
        if key not in form:
            continue
        value = form[key].strip()
        if is_secret(key) and value == "":
            continue
        if value == "" and key not in cfg.values:
            continue
        if cfg.values.get(key) != value:
            cfg = cfg.with_value(key, value)

    def locate(problem: Problem) -> str | None:
        # Any key of the section: a missing required key is the form's to fill in too.
        if problem.file == file_name and problem.field in section.keys:
            return problem.field
        return None

    return Edit(files={path: render_config_ini(cfg)}, locate=locate)


def password_edit(path: str, current: bytes, stored_hash: str) -> Edit:
    file_name = path.rpartition("/")[2]
    cfg = parse_config_ini(current, file_name).value.with_value("WEB_PasswordHash", stored_hash)

    def locate(problem: Problem) -> str | None:
        return "newPassword" if problem.field == "WEB_PasswordHash" else None

    return Edit(files={path: render_config_ini(cfg)}, locate=locate)


# ----------------------------------------------------------------------------- var.ini


def schedules_view(var_ini: bytes, file_name: str) -> dict[str, list[dict[str, str]]]:
    """Per server (`"1"`, `"2"`) the rows of its schedules as texts, plus spare blank rows."""
    parsed = parse_var_ini(var_ini, file_name).value if var_ini else None
    out: dict[str, list[dict[str, str]]] = {}
    for slot in (1, 2):
        rows = [] if parsed is None else [
            {"Id": str(s.id), "Type": s.type.value, "StartTime": format_start(s.start_s),
             "Interval": str(s.interval_min), "Count": str(s.count)}
            for s in parsed.schedules(slot)]
        rows += [dict.fromkeys(SCHEDULE_FIELDS, "") for _ in range(SPARE_SCHEDULE_ROWS)]
        out[str(slot)] = rows
    return out


SCHEDULE_TYPES: Final = tuple(t.value for t in ScheduleType)


def schedule_rows(form: Mapping[str, str], slot: int | str) -> list[str]:
    """The rows of `slot`'s schedule fields (`s<slot>_<row>_<Field>`) in numeric order, each
    as the form wrote it (`01` looks up `s1_01_Id`): ASCII digits only (`"²".isdigit()` holds,
    `int("²")` raises), of any length (never converted: `int()` refuses 4,300 digits)."""
    rows = {key.split("_")[1] for key in form
            if key.startswith(f"s{slot}_") and key.count("_") == 2}
    digits = [row for row in rows if INTEGER_SYNTAX.fullmatch(row) and not row.startswith("-")]
    return sorted(digits, key=lambda row: (len(row.lstrip("0")), row.lstrip("0"), row))


def var_ini_edit(path: str, current: bytes, form: Mapping[str, str]) -> Edit:
    """var.ini from the schedule rows of the form (`s<slot>_<row>_<Field>`); a row whose fields
    are all empty is dropped; comments and other lines of the file stay where they are, the
    rows take the places of the file's entries (as `config`'s writer places them)."""
    file_name = path.rpartition("/")[2]
    held = parse_var_ini(current, file_name).value if current.strip() else VarIni()
    families: list[list[str]] = []
    rows_of: list[list[str]] = []
    for slot, family in ((1, "SCHEDULE_Params"), (2, "SCHEDULE2_Params")):
        texts: list[str] = []
        kept: list[str] = []
        for row in schedule_rows(form, slot):
            values = [form.get(f"s{slot}_{row}_{name}", "").strip() for name in SCHEDULE_FIELDS]
            if not any(values):
                continue
            texts.append(f"{family}[{len(texts)}]=" + "|".join(values))
            kept.append(f"s{slot}_{row}")
        families.append(texts)
        rows_of.append(kept)
    lines = placed_schedule_lines(held, families)
    row_of_line = {number: rows_of[rank][k]
                   for number, (rank, k, _) in enumerate(lines, start=1) if rank >= 0}

    def locate(problem: Problem) -> str | None:
        if problem.file != file_name or problem.line not in row_of_line:
            return None
        prefix = row_of_line[problem.line]
        return f"{prefix}_{problem.field if problem.field in SCHEDULE_FIELDS else 'Id'}"

    return Edit(files={path: "".join(text + "\n" for _, _, text in lines).encode()},
                locate=locate)


# ----------------------------------------------------------------------------- daq.csv blocks


def _serial_texts(port: SerialPort) -> dict[str, str]:
    return {"speed": str(port.speed), "dataBits": str(port.data_bits),
            "parity": port.parity.value, "stopBits": str(port.stop_bits),
            "wires": str(port.wires), "protocol": port.protocol,
            "interFrame(ms)": str(port.inter_frame_ms),
            "forwardTcpPort": "" if port.forward_tcp_port is None else str(port.forward_tcp_port),
            "path": port.path or ""}


def ports_view(daq_bytes: bytes, file_name: str) -> dict[str, Any]:
    """The serial ports (every column, defaults where the file has no row) and the LAN rows."""
    daq = parse_daq(daq_bytes, file_name).value if daq_bytes else Daq()
    serial = {p.port: p for p in daq.serial}
    ports = [{"port": name, "values": _serial_texts(serial.get(name) or
                                                    SerialPort(line=None, port=name))}
             for name in SERIAL_PORTS]
    lans = {row.name: row for row in daq.lan}
    network = []
    for name in LANS:
        row = lans.get(name)
        values = dict.fromkeys(ETHERNET_COLUMNS[1:], "")
        if row is not None:
            values.update({"ip": row.ip or "", "mask": row.mask or "",
                           "gateway": row.gateway or "", "dns1": row.dns1 or "",
                           "dns2": row.dns2 or ""})
        network.append({"lan": name, "values": values})
    return {"serial": ports, "network": network}


#: The field names of the schedules, serial and network sections.
_SECTION_FIELDS: Final = {
    "schedules": re.compile(f"s[12]_[0-9]+_(?:{'|'.join(SCHEDULE_FIELDS)})"),
    "serial": re.compile(f"(?:{'|'.join(SERIAL_PORTS)})_"
                         f"(?:{'|'.join(re.escape(c) for c in SERIAL_COLUMNS[1:])})"),
    "network": re.compile(f"(?:{'|'.join(LANS)})_(?:{'|'.join(ETHERNET_COLUMNS[1:])})"),
}


def section_fields(name: str) -> re.Pattern[str] | None:
    """The field names the schedules, serial or network section takes (None: another
    section). Any other is refused: left out, a misspelt field answered `saved` while nothing
    of it was, and for the schedules (whose rows sent replace the file's) a body of misspelt
    fields deleted every schedule."""
    return _SECTION_FIELDS.get(name)


def _lan_texts(row: LanRow | None) -> dict[str, str]:
    values = (row.ip, row.mask, row.gateway, row.dns1, row.dns2) if row is not None else \
        (None,) * 5
    return {column: value if value is not None else
            "0" if row is not None and column in row.zero_fields else ""
            for column, value in zip(ETHERNET_COLUMNS[1:], values, strict=True)}


def daq_blocks_edit(path: str, current: bytes, form: Mapping[str, str], block: str) -> Edit:
    """daq.csv with its serial block (`block` "serial") or its ethernet block ("network")
    written from the form, a field not sent keeping its text (a JSON client may send one
    field: the others were reset to their defaults, or emptied); a port or LAN row is written
    when it has a row in the file or a value other than the default."""
    file_name = path.rpartition("/")[2]
    daq = parse_daq(current, file_name).value if current.strip() else Daq()
    if block == "serial":
        existing = {p.port for p in daq.serial if p.line is not None}
        held_ports = {p.port: p for p in daq.serial}
        rest = dataclasses.replace(daq, serial=(), blocks=daq.blocks - {"serial"})
        header = ";".join(SERIAL_COLUMNS)
        rows: list[tuple[str, list[str]]] = []
        for name in SERIAL_PORTS:
            defaults = _serial_texts(SerialPort(line=None, port=name))
            held = _serial_texts(held_ports.get(name) or SerialPort(line=None, port=name))
            texts = [form.get(f"{name}_{column}", held[column]).strip()
                     for column in SERIAL_COLUMNS[1:]]
            if name in existing or texts != [defaults[c] for c in SERIAL_COLUMNS[1:]]:
                rows.append((name, [name, *texts]))
    else:
        lans = {row.name: row for row in daq.lan}
        rest = dataclasses.replace(daq, lan=(), blocks=daq.blocks - {"ethernet"})
        header = ";".join(ETHERNET_COLUMNS)
        rows = []
        for name in LANS:
            held = _lan_texts(lans.get(name))
            texts = [form.get(f"{name}_{column}", held[column]).strip()
                     for column in ETHERNET_COLUMNS[1:]]
            if name in lans or any(texts):
                rows.append((name, [name, *texts]))
    lines = [header, *(";".join(texts) for _, texts in rows)] if rows else []
    row_of_line = {k + 2: name for k, (name, _) in enumerate(rows)}
    lines += render_daq(rest).decode().splitlines()

    def locate(problem: Problem) -> str | None:
        if problem.file != file_name or problem.line not in row_of_line:
            return None
        name = row_of_line[problem.line]
        columns = SERIAL_COLUMNS if block == "serial" else ETHERNET_COLUMNS
        return f"{name}_{problem.field}" if problem.field in columns[1:] else \
            f"{name}_{columns[1]}"

    return Edit(files={path: "".join(line + "\n" for line in lines).encode()}, locate=locate)


def host_serial_devices(dev: Path = Path("/dev")) -> list[str]:
    """Serial devices of this host, offered for a port's `path` (docs/behaviour.md §10.2)."""
    found = [str(p) for pattern in ("ttyS[0-9]*", "ttyUSB*", "ttyACM*", "ttyAMA*")
             for p in sorted(dev.glob(pattern))]
    by_id = dev / "serial" / "by-id"
    if by_id.is_dir():
        found += [str(p) for p in sorted(by_id.iterdir())]
    return found[:64]

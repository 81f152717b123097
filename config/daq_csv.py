"""`<uid>_daq.csv` (docs/formats.md §6): Ethernet, `tcpInterFrameMs`, serial ports and devices.

Blocks are read in any order and written in the canonical one. Checks that need other files
(`defFile` exists and fits) belong to the site (`config.site`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from config._text import (
    CsvRow,
    Findings,
    csv_field,
    csv_rows,
    decode,
    file_name_problem,
    parse_int,
    replace_controls,
)
from config.config_ini import device_problem, port_problem
from config.decimal_text import INTEGER_SYNTAX, read_integer
from config.key_hint import closest_key
from config.model import Daq, Device, LanRow, Parity, SerialPort

_BLOCKS: Final = {"type": "ethernet", "tcpinterframems": "tcpInterFrameMs", "port": "serial",
                  "index": "devices"}
#: The first cell of each block's header as docs/formats.md §6 writes it (for hints).
_HEADER_CELLS: Final = ("type", "tcpInterFrameMs", "port", "index")
ETHERNET_COLUMNS: Final = ("type", "ip", "mask", "gateway", "dns1", "dns2")
SERIAL_COLUMNS: Final = ("port", "speed", "dataBits", "parity", "stopBits", "wires", "protocol",
                         "interFrame(ms)", "forwardTcpPort", "path")
DEVICE_COLUMNS: Final = ("index", "interface", "name", "address", "acqPeriod(s)", "timeout(ms)",
                         "serialNumber", "parameters", "category", "model", "defFile")
_COLUMNS: Final = {"ethernet": ETHERNET_COLUMNS, "serial": SERIAL_COLUMNS,
                   "devices": DEVICE_COLUMNS}
SERIAL_PROTOCOLS: Final = ("modbusRTU", "smanet", "PW1", "delta")
SPEEDS: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


@dataclass(slots=True)
class DaqFindings(Findings):
    """Also the definition files named on device rows that were rejected, so a site can still
    check those files and report every problem at once."""

    rejected_refs: list[tuple[int, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Block:
    name: str
    line: int
    width: int
    rows: list[CsvRow]


def parse(data: bytes, file_name: str) -> tuple[Daq, DaqFindings]:
    findings = DaqFindings(file_name)
    text = decode(data, findings, cp1252_fallback=True)
    if text is None:
        return Daq(), findings
    rows = csv_rows(text, findings)
    blocks: dict[str, _Block] = {}
    tcp_inter_frame_ms = 0
    current: _Block | None = None
    for row in rows:
        name = _BLOCKS.get(row.fields[0].lower())
        hint = None if name is not None else closest_key(row.fields[0], _HEADER_CELLS)
        if hint is not None:
            # A header typed wrong (`indx`, `tcpInterFrame`): said as such, and its rows still
            # read as that block's, so they are checked too instead of each being "outside a
            # block". No row of a block starts with a word this close to a header.
            findings.error(row.line, row.fields[0],
                           f"unknown block header (did you mean {hint}?)")
            name = _BLOCKS[hint.lower()]
        if name is not None:
            if name in blocks:
                findings.error(row.line, row.fields[0],
                               f"block repeated (first at line {blocks[name].line})")
                current = None
                continue
            width = len(row.fields)
            while width > 1 and row.fields[width - 1] == "":
                width -= 1
            blocks[name] = current = _Block(name, row.line, width, [])
            if name == "tcpInterFrameMs":
                tcp_inter_frame_ms = _tcp_inter_frame(row, findings)
                current = None
            continue
        if current is None:
            findings.error(row.line, "line", "row outside a block (no header above it)")
            continue
        if _fits(row, current, findings):
            current.rows.append(row)
    lan = _lan_rows(blocks.get("ethernet"), findings)
    serial = _serial_ports(blocks.get("serial"), findings)
    devices = _devices(blocks.get("devices"), serial, findings)
    daq = Daq(lan=lan, tcp_inter_frame_ms=tcp_inter_frame_ms, serial=serial, devices=devices,
              blocks=frozenset(blocks))
    return daq, findings


def named_definition_files(data: bytes, file_name: str) -> list[tuple[int, str]]:
    """`(line, defFile cell)` of every row of the devices block, as written: read as `parse`
    reads rows, judged by nothing (a session fetches what a candidate file names before the set
    is checked whole, docs/behaviour.md §4.5)."""
    findings = DaqFindings(file_name)
    text = decode(data, findings, cp1252_fallback=True)
    if text is None:
        return []
    out: list[tuple[int, str]] = []
    in_devices = False
    for row in csv_rows(text, findings):
        block = _BLOCKS.get(row.fields[0].lower())
        hint = None if block is not None else closest_key(row.fields[0], _HEADER_CELLS)
        if hint is not None:
            block = _BLOCKS[hint.lower()]
        if block is not None:
            in_devices = block == "devices"
            continue
        cell = _padded(row, 11)[10]
        if in_devices and cell:
            out.append((row.line, cell))
    return out


def _fits(row: CsvRow, block: _Block, findings: Findings) -> bool:
    columns = _COLUMNS[block.name]
    for i in row.unbalanced:
        col = columns[i] if i < len(columns) else f"field {i + 1}"
        findings.warn(row.line, col, "unbalanced quote; taken as written")
    extra = [f for f in row.fields[max(block.width, 1):] if f]
    if extra:
        findings.error(row.line, "line", f"{len(row.fields)} fields but the header at line "
                                         f"{block.line} has {block.width}")
        return False
    return True


def _padded(row: CsvRow, width: int) -> list[str]:
    return (row.fields + [""] * width)[:width]


def _tcp_inter_frame(row: CsvRow, findings: Findings) -> int:
    if any(row.fields[2:]):
        findings.error(row.line, "line", f"{len(row.fields)} fields, at most 2")
    text = row.fields[1] if len(row.fields) > 1 else ""
    if not text:
        return 0
    value, problem = parse_int(text, 0, 10000)
    if value is None:
        findings.default(row.line, "tcpInterFrameMs", problem, "0")
        return 0
    return value


def _lan_rows(block: _Block | None, findings: Findings) -> tuple[LanRow, ...]:
    if block is None:
        return ()
    out: list[LanRow] = []
    seen: dict[str, int] = {}
    for row in block.rows:
        f = _padded(row, 6)
        name = f[0].upper()
        if name not in ("LAN1", "LAN2"):
            findings.error(row.line, "type", f"'{f[0]}' is not LAN1 or LAN2")
            continue
        if name in seen:
            findings.error(row.line, "type", f"'{name}' is already used at line {seen[name]}")
            continue
        seen[name] = row.line
        values: list[str | None] = []
        zeros: set[str] = set()
        for col, text in zip(ETHERNET_COLUMNS[1:], f[1:], strict=True):
            if text in ("", "0"):
                values.append(None)
                if text == "0":
                    zeros.add(col)
                continue
            try:
                ipaddress.IPv4Address(text)
            except ValueError:
                findings.error(row.line, col, f"'{text}' is not a dotted IPv4 address")
            values.append(text)
        out.append(LanRow(line=row.line, name=name, ip=values[0], mask=values[1],
                          gateway=values[2], dns1=values[3], dns2=values[4],
                          zero_fields=frozenset(zeros)))
    return tuple(out)


def _int_field(row: CsvRow, col: str, text: str, allowed: Sequence[int] | tuple[int, int],
               default: int, findings: Findings, *, choice: bool = False) -> int:
    if not text:
        return default
    if choice:
        value, problem = parse_int(text, 0, 10**9)
        # An integer of no choice is said so, a long one too (not as outside a range the
        # column does not have: `speed: '99...9' is outside 0..1000000000`).
        if value not in allowed and INTEGER_SYNTAX.fullmatch(text):
            value, problem = None, f"'{text}' is not one of {', '.join(map(str, allowed))}"
    else:
        value, problem = parse_int(text, allowed[0], allowed[1])
    if value is None:
        findings.default(row.line, col, problem, str(default))
        return default
    return value


def _serial_ports(block: _Block | None, findings: Findings) -> tuple[SerialPort, ...]:
    ports = {f"SERIAL{k}": SerialPort(line=None, port=f"SERIAL{k}") for k in (1, 2, 3)}
    if block is None:
        return tuple(ports.values())
    fwd_at: dict[int, int] = {}
    path_at: dict[str, int] = {}
    for row in block.rows:
        f = _padded(row, 10)
        port = f[0].upper()
        if port not in ports:
            findings.error(row.line, "port", f"'{f[0]}' is not SERIAL1, SERIAL2 or SERIAL3")
            continue
        if ports[port].line is not None:
            findings.error(row.line, "port", f"'{port}' is already used at line "
                                             f"{ports[port].line}")
            continue
        parity = Parity.NONE
        if f[3]:
            if f[3].upper() in ("N", "E", "O"):
                parity = Parity(f[3].upper())
            else:
                findings.default(row.line, "parity", f"'{f[3]}' is not N, E or O", "N")
        protocol = "modbusRTU"
        if f[6]:
            match = [p for p in SERIAL_PROTOCOLS if p.lower() == f[6].lower()]
            if match:
                protocol = match[0]
            else:
                findings.default(row.line, "protocol", f"'{f[6]}' is not one of "
                                 f"{', '.join(SERIAL_PROTOCOLS)}", "modbusRTU")
        forward: int | None = None
        if f[8]:
            forward = None if (problem := port_problem(f[8])) else \
                read_integer(f[8], max_digits=10)
            if forward is None:
                findings.default(row.line, "forwardTcpPort", problem, "")
            elif forward in fwd_at:
                findings.error(row.line, "forwardTcpPort",
                               f"'{forward}' is already used at line {fwd_at[forward]}")
            else:
                fwd_at[forward] = row.line
        path = f[9] or None
        if path is not None:
            if problem := device_problem(path):
                findings.error(row.line, "path", problem)
            if path in path_at:
                findings.error(row.line, "path", f"'{path}' is already used at line "
                                                 f"{path_at[path]}")
            path_at[path] = row.line
        ports[port] = SerialPort(
            line=row.line, port=port,
            speed=_int_field(row, "speed", f[1], SPEEDS, 9600, findings, choice=True),
            data_bits=_int_field(row, "dataBits", f[2], (7, 8), 8, findings, choice=True),
            parity=parity,
            stop_bits=_int_field(row, "stopBits", f[4], (1, 2), 1, findings, choice=True),
            wires=_int_field(row, "wires", f[5], (2, 4), 2, findings, choice=True),
            protocol=protocol,
            inter_frame_ms=_int_field(row, "interFrame(ms)", f[7], (0, 10000), 0, findings),
            forward_tcp_port=forward, path=path)
    return tuple(ports.values())


def _index(text: str) -> str | None:
    upper = text.upper()
    if upper in ("IO", "TIC1"):
        return upper
    value, _ = parse_int(text, 0, 65535)
    return None if value is None else str(value)


def _interface(row: CsvRow, text: str, findings: Findings) -> str | None:
    if not text:
        findings.error(row.line, "interface", "missing (SERIAL1..3, <ipv4> or <ipv4>:<port>)")
        return None
    upper = text.upper()
    if upper.startswith("SERIAL"):
        if upper in ("SERIAL1", "SERIAL2", "SERIAL3"):
            return upper
        findings.error(row.line, "interface", f"'{text}' is not SERIAL1, SERIAL2 or SERIAL3")
        return None
    host, sep, port = text.partition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        findings.error(row.line, "interface", f"'{text}' is not SERIAL1..3, <ipv4> or "
                                              "<ipv4>:<port>")
        return None
    if sep and (problem := port_problem(port)):
        findings.error(row.line, "interface", f"port {problem}")
        return None
    return text


def _devices(block: _Block | None, serial: tuple[SerialPort, ...],
             findings: DaqFindings) -> tuple[Device, ...]:
    if block is None:
        return ()
    out: list[Device] = []
    index_at: dict[str, int] = {}
    name_at: dict[str, int] = {}
    for row in block.rows:
        device = _device(row, serial, findings)
        if device is None:
            fields = _padded(row, 11)
            # Only a plain name: `..` or a NUL names no file of /DEF to check (its own error says so).
            if fields[10] and not file_name_problem(fields[10]):
                findings.rejected_refs.append((row.line, fields[10]))
            # A rejected row still takes its index and name, so later repeats are reported too.
            index = _index(fields[0])
            if index is not None:
                index_at.setdefault(index, row.line)
                name_at.setdefault(fields[2] or index, row.line)
            continue
        if device.index in index_at:
            findings.error(row.line, "index", f"'{device.index}' is already used at line "
                                              f"{index_at[device.index]}")
            findings.rejected_refs.append((row.line, device.def_file))
            continue
        if device.name in name_at:
            findings.error(row.line, "name", f"'{device.name}' is already used at line "
                                             f"{name_at[device.name]}")
            findings.rejected_refs.append((row.line, device.def_file))
            continue
        index_at[device.index] = name_at[device.name] = row.line
        out.append(device)
    modbus = {d.index: d for d in out if d.numeric_index is not None}
    ports = {p.port: p for p in serial}
    for at, dev in enumerate(out):
        if dev.index != "IO" or not dev.parameters.startswith("modbus:"):
            continue
        # `<index>` is an integer of §1.1, as the index column is: `modbus:01` is device 1.
        number = read_integer(dev.parameters[len("modbus:"):], max_digits=10)
        target = str(number)
        if number is None or target not in modbus:
            findings.error(dev.line, "parameters", f"'{dev.parameters}' is not empty or "
                                                   "modbus:<index> of a Modbus device here")
            continue
        port = ports.get(modbus[target].serial_port or "")
        if port is not None and not port.has_driver:
            # That device is kept but never polled (§6): the I/O would be read through nothing.
            findings.error(dev.line, "parameters", f"'{dev.parameters}' names a device on "
                                                   f"{port.port}, whose protocol {port.protocol} "
                                                   "has no driver")
        out[at] = replace(dev, parameters=f"modbus:{target}")
    _shared_units(out, findings)
    return tuple(out)


def _shared_units(devices: list[Device], findings: Findings) -> None:
    """Rows of one Modbus unit (a row copied without changing its address): accepted, since
    the unit answers each row's polls (docs/spec-notes.md), but said on the later row, naming
    the other: silently, the plant's values came twice under two indexes."""
    first: dict[tuple[str, int], Device] = {}
    for dev in devices:
        endpoint = dev.tcp_endpoint
        where = f"{endpoint[0]}:{endpoint[1]}" if endpoint is not None else dev.serial_port
        if where is None or dev.address is None:
            continue
        other = first.setdefault((where, dev.address), dev)
        if other is not dev:
            findings.warn(dev.line, "address",
                          f"index {dev.index} shares {where} unit {dev.address} with index "
                          f"{other.index} at line {other.line}: the unit is polled twice; "
                          "both kept")


def _device(row: CsvRow, serial: tuple[SerialPort, ...], findings: Findings) -> Device | None:
    f = _padded(row, 11)
    index = _index(f[0])
    if index is None:
        findings.error(row.line, "index", f"'{f[0]}' is not 0..65535, IO or TIC1")
        return None
    special = index in ("IO", "TIC1")
    ok = True
    interface: str | None = ""
    address: int | None = None
    if special:
        if f[1]:
            findings.error(row.line, "interface", f"'{f[1]}' given, must be empty for {index}")
            ok = False
    else:
        interface = _interface(row, f[1], findings)
        ports = {p.port: p for p in serial}
        proprietary = interface in ports and not ports[interface].has_driver
        address, problem = parse_int(f[3], 0 if proprietary else 1, 240)
        if address is None:
            findings.error(row.line, "address", problem if f[3] else "missing (1..240)")
        ok = interface is not None and address is not None
    name = f[2]
    if not name:
        name = index
    else:
        _, control = replace_controls(name)
        if control is not None or len(name) > 64:
            why = f"control character 0x{control:02X}" if control is not None else \
                f"'{name}' is longer than 64 characters"
            findings.default(row.line, "name", why, index)
            name = index
    parameters = _parameters(row, index, interface or "", f[7], findings)
    def_file = f[10]
    if not def_file:
        findings.error(row.line, "defFile", "missing")
        ok = False
    elif "/" in def_file or "\\" in def_file:
        findings.error(row.line, "defFile", f"'{def_file}' is not a file name in /DEF")
        ok = False
    elif problem := file_name_problem(def_file):
        findings.error(row.line, "defFile", problem)
        ok = False
    # Checked before a rejected row returns: every problem of the row is reported at once.
    acq_period_s = _int_field(row, "acqPeriod(s)", f[4], (1, 86400), 600, findings)
    timeout_ms = 1000 if special else _int_field(row, "timeout(ms)", f[5], (50, 60000), 1000,
                                                 findings)
    if not ok or interface is None:
        return None
    return Device(
        line=row.line, index=index, interface=interface, name=name, address=address,
        acq_period_s=acq_period_s, timeout_ms=timeout_ms,
        serial_number=_text(row, "serialNumber", f[6], findings), parameters=parameters,
        category=_text(row, "category", f[8], findings),
        model=_text(row, "model", f[9], findings), def_file=def_file)


def _text(row: CsvRow, col: str, text: str, findings: Findings) -> str:
    """A free-text column as definition files treat theirs (docs/formats.md §6): it reaches DATA
    files, MQTT JSON, the web UI and logs, where a control character would break a line or drive
    a terminal, so each becomes a space, with a warning."""
    cleaned, control = replace_controls(text)
    if control is not None:
        findings.warn(row.line, col, f"control character 0x{control:02X}; replaced by a space")
    return cleaned


def _parameters(row: CsvRow, index: str, interface: str, text: str, findings: Findings) -> str:
    if index == "IO":
        if text and not text.startswith("modbus:"):
            findings.error(row.line, "parameters",
                           f"'{text}' is not empty or modbus:<index> of a Modbus device here")
        return text
    if index == "TIC1":
        if text not in ("", "1200", "9600"):
            findings.default(row.line, "parameters", f"'{text}' is not 1200, 9600 or empty", "")
            return ""
        return text
    if interface.startswith("SERIAL"):
        return text
    if text not in ("", "0", "1"):
        findings.default(row.line, "parameters", f"'{text}' is not 0 or 1", "1")
        return "1"
    return text


# ---------------------------------------------------------------------------- writer


def _lan_field(row: LanRow, col: str, value: str | None) -> str:
    if value is not None:
        return value
    return "0" if col in row.zero_fields else ""


def render(daq: Daq) -> bytes:
    out: list[str] = []
    if daq.lan or "ethernet" in daq.blocks:
        out.append(";".join(ETHERNET_COLUMNS))
        for lan in daq.lan:
            values = (lan.ip, lan.mask, lan.gateway, lan.dns1, lan.dns2)
            out.append(";".join([lan.name] + [_lan_field(lan, c, v) for c, v in
                                              zip(ETHERNET_COLUMNS[1:], values, strict=True)]))
    if daq.tcp_inter_frame_ms or "tcpInterFrameMs" in daq.blocks:
        out.append(f"tcpInterFrameMs;{daq.tcp_inter_frame_ms}")
    rows = [p for p in daq.serial
            if p.line is not None or p != SerialPort(line=None, port=p.port)]
    if rows or "serial" in daq.blocks:
        out.append(";".join(SERIAL_COLUMNS))
        for p in rows:
            fwd = "" if p.forward_tcp_port is None else str(p.forward_tcp_port)
            out.append(f"{p.port};{p.speed};{p.data_bits};{p.parity.value};{p.stop_bits};"
                       f"{p.wires};{p.protocol};{p.inter_frame_ms};{fwd};"
                       f"{csv_field(p.path or '')}")
    if daq.devices or "devices" in daq.blocks:
        out.append(";".join(DEVICE_COLUMNS))
        for d in daq.devices:
            special = d.index in ("IO", "TIC1")
            fields = [d.index, d.interface, d.name,
                      "" if d.address is None else str(d.address), str(d.acq_period_s),
                      "" if special else str(d.timeout_ms), d.serial_number, d.parameters,
                      d.category, d.model, d.def_file]
            out.append(";".join(csv_field(f) for f in fields))
    return "".join(line + "\n" for line in out).encode("utf-8")

"""Device definition files (docs/formats.md §8): `io`, `tic`, `modbusRTU`, `modbusTCP`.

Line 1 is the device header; every other line a variable of 11 fields. The tolerances of §8.1
(control characters, repeated Names, `String` without byte count) are warnings, so the files real
units and their generators wrote load unchanged.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Final, TypeVar

from config._text import (
    CsvRow,
    Findings,
    csv_field,
    csv_rows,
    decode,
    parse_decimal,
    parse_int,
    replace_controls,
)
from config.decimal_text import MAX_DIGITS, MAX_EXPONENT, coefficient_fits
from config.model import (
    INTEGER_TYPES,
    TYPE_REGISTERS,
    Action,
    ByteOrder,
    DataType,
    DefinitionFile,
    IoKind,
    IoPoint,
    ModbusPoint,
    Protocol,
    RegisterKind,
    Variable,
)

COLUMNS: Final = ("Index", "Info1", "Info2", "Info3", "Info4", "Name", "Tag", "CoefA", "CoefB",
                  "Unit", "Action")
HEADER_COLUMNS: Final = ("Protocol", "Category", "Manufacturer", "Model")
_TYPES: Final = {t.value.upper(): t for t in DataType}
_SUFFIXES: Final = (ByteOrder.SWAP_BOTH, ByteOrder.SWAP_WORDS, ByteOrder.SWAP_BYTES)
_TIC_LABEL: Final = re.compile(r"[A-Z0-9+-]{1,16}")
_DIGITS: Final = re.compile(r"[0-9]+")
_MAX_REGISTERS: Final = 125
_SEPARATOR: Final = re.compile(r"[_ ]")
_ACTIONS: Final = {int(a): a for a in Action}
#: Distinct texts remembered per column and file: a generator's file has a handful of types,
#: coefficients and actions; a file of millions of distinct bad values stays bounded.
_MEMO_MAX: Final = 1024
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Fault:
    field: str
    problem: str


@dataclass(slots=True)
class _Memo:
    """What the rows of one file share, worked out once per distinct text (each row still
    reports its own problems): parsing a 150,000-row file is then mostly splitting it."""

    coefs: dict[str, tuple[Decimal | None, str]] = field(default_factory=dict)
    actions: dict[str, tuple[Action | None, str]] = field(default_factory=dict)
    kinds: dict[str, RegisterKind | _Fault] = field(default_factory=dict)
    types: dict[str, tuple[DataType, ByteOrder] | None] = field(default_factory=dict)


def _memoised(cache: dict[str, _T], text: str, compute: Callable[[str], _T]) -> _T:
    found = cache.get(text)
    if found is None:
        found = compute(text)
        if len(cache) < _MEMO_MAX:
            cache[text] = found
    return found


def parse(data: bytes, file_name: str) -> tuple[DefinitionFile | None, Findings]:
    findings = Findings(file_name)
    text = decode(data, findings, cp1252_fallback=True)
    if text is None:
        return None, findings
    # Row by row: only valid variables are kept, so millions of bad lines cost no memory.
    rows = csv_rows(text, findings)
    head = next(rows, None)
    if head is None:
        if not findings.rejected:  # else the separator error says why
            findings.error(1, "Protocol", "missing (the file has no header line)")
        return None, findings
    protocol = _protocol(head, findings)
    title: tuple[str, ...] = ()
    variables: list[Variable] = []
    memo = _Memo()
    for row in rows:
        if row.fields[0].lower() == "index":
            title = title or tuple(row.fields)
            continue
        if protocol is not None:
            var = _variable(row, protocol, findings, memo)
            if var is not None:
                variables.append(var)
    if protocol is None:
        return None, findings
    checked = _cross_checks(variables, protocol, findings)
    if findings.rejected:
        return None, findings
    f = head.fields + [""] * 4
    category, manufacturer, model = (_text(head, col, text, findings)
                                     for col, text in zip(HEADER_COLUMNS[1:], f[1:4], strict=True))
    return DefinitionFile(
        file_name=file_name, protocol=protocol, category=category, manufacturer=manufacturer,
        model=model,
        variables=tuple(checked), sha256=hashlib.sha256(data).hexdigest(),
        header_extra=tuple(head.fields[4:]), title_fields=title), findings


def _protocol(head: CsvRow, findings: Findings) -> Protocol | None:
    text = head.fields[0]
    for p in Protocol:
        if p.value.lower() == text.lower():
            return p
    if not text:
        findings.error(head.line, "Protocol", "missing")
    else:
        findings.error(head.line, "Protocol", f"'{text}' is not modbusRTU, modbusTCP, io or tic")
    return None


def _text(row: CsvRow, col: str, text: str, findings: Findings) -> str:
    cleaned, control = replace_controls(text)
    if control is not None:
        findings.warn(row.line, col, f"control character 0x{control:02X}; replaced by a space")
    return cleaned


def _variable(row: CsvRow, protocol: Protocol, findings: Findings,
              memo: _Memo) -> Variable | None:
    line = row.line
    for i in row.unbalanced:
        findings.warn(line, COLUMNS[i] if i < len(COLUMNS) else f"field {i + 1}",
                      "unbalanced quote; taken as written")
    f = row.fields
    width = len(f)
    if width > 11:
        if any(f[11:]):
            findings.error(line, "line", f"{width} fields, at most {len(COLUMNS)}")
            return None
        f = f[:11]
    elif width < 11:
        f = f + [""] * (11 - width)
    ok = True
    index, problem = parse_int(f[0], 0, 2147483647)
    if index is None:
        findings.error(line, "Index", problem)
        ok = False
    name = f[5] if f[5].isprintable() else _text(row, "Name", f[5], findings)
    if not name:
        findings.error(line, "Name", "missing")
        ok = False
    elif len(name) > 128:
        findings.error(line, "Name", f"'{name[:20]}...' is longer than 128 characters")
        ok = False
    tag = f[6] if f[6].isprintable() else _text(row, "Tag", f[6], findings)
    if len(tag) > 64:
        findings.default(line, "Tag", f"'{tag[:20]}...' is longer than 64 characters", "")
        tag = ""
    coef_a, coef_a_text = _coef(row, "CoefA", f[7], "1", findings, memo)
    coef_b, coef_b_text = _coef(row, "CoefB", f[8], "0", findings, memo)
    unit = f[9] if f[9].isprintable() else _text(row, "Unit", f[9], findings)
    action, problem = memo.actions.get(f[10]) or _memoised(memo.actions, f[10], _action)
    if action is None:
        findings.error(line, "Action", problem)
        ok = False
    point = _point(row, protocol, f, findings, memo)
    if not ok or point is None or index is None or action is None:
        return None
    return Variable(
        line=line, index=index, info1=f[1], info2=f[2], info3=f[3], info4=f[4], name=name,
        tag=tag, coef_a=coef_a, coef_b=coef_b, unit=unit, action=action,
        coef_a_text=coef_a_text, coef_b_text=coef_b_text, key=name,
        modbus=point if isinstance(point, ModbusPoint) else None,
        io=point if isinstance(point, IoPoint) else None,
        tic_label=point if isinstance(point, str) else None)


def _action(text: str) -> tuple[Action | None, str]:
    value, problem = parse_int(text, 0, 2**31)
    if value is None:
        return None, problem
    action = _ACTIONS.get(value)
    return (action, "") if action is not None else (None, f"'{text}' is not 0, 1, 2, 4, 8 or 9")


def _coef(row: CsvRow, col: str, text: str, default: str, findings: Findings,
          memo: _Memo) -> tuple[Decimal, str]:
    if not text:
        return Decimal(default), default
    value, problem = memo.coefs.get(text) or _memoised(memo.coefs, text, _coef_value)
    if value is None:
        findings.default(row.line, col, problem, default)
        return Decimal(default), default
    return value, text


def _coef_value(text: str) -> tuple[Decimal | None, str]:
    value, problem = parse_decimal(text)
    if value is not None and not coefficient_fits(value):
        # Beyond this bound no scaled value could be computed exactly or printed in reasonable
        # length (`1e999999999`); such a coefficient is as unusable as one that is not a number.
        shown = text if len(text) <= 20 else f"{text[:20]}..."
        return None, (f"'{shown}' has more than {MAX_DIGITS} significant digits or an exponent "
                      f"outside ±{MAX_EXPONENT}")
    return value, problem


def _point(row: CsvRow, protocol: Protocol, f: Sequence[str], findings: Findings,
           memo: _Memo) -> ModbusPoint | IoPoint | str | None:
    if protocol is Protocol.TIC:
        result: ModbusPoint | IoPoint | str | _Fault = (
            f[1] if _TIC_LABEL.fullmatch(f[1]) else
            _Fault("Info1", f"'{f[1]}' is not a TIC group label (1..16 of A-Z 0-9 + -)"))
    elif protocol is Protocol.IO:
        result = _io_point(f[1], f[2], f[3])
    else:
        result = _modbus_point(f[1], f[2], f[3], memo)
    if isinstance(result, _Fault):
        findings.error(row.line, result.field, result.problem)
        return None
    return result


def _io_point(info1: str, info2: str, info3: str) -> IoPoint | _Fault:
    kind_value, problem = parse_int(info1, 1, 3)
    if kind_value is None:
        return _Fault("Info1", problem if info1 else "missing (1 analog, 2 digital, 3 relay)")
    kind = IoKind(kind_value)
    hi = 1 if kind is IoKind.RELAY else 4
    channel, problem = parse_int(info2, 1, hi)
    if channel is None:
        return _Fault("Info2", problem if info2 else f"missing (channel 1..{hi})")
    if kind is IoKind.RELAY:
        return IoPoint(kind=kind, channel=channel, mode=None)
    mode, problem = parse_int(info3, 1, 2)
    if mode is None:
        what = "1 4-20 mA, 2 0-10 V" if kind is IoKind.ANALOG else "1 ON/OFF, 2 S0 pulses"
        return _Fault("Info3", problem if info3 else f"missing ({what})")
    return IoPoint(kind=kind, channel=channel, mode=mode)


def parse_type(info3: str) -> tuple[DataType, ByteOrder] | None:
    """`U32_WB` (any case) -> (U32, SWAP_BOTH); None for an unknown type."""
    upper = info3.upper()
    order = ByteOrder.BIG_ENDIAN
    for suffix in _SUFFIXES:
        if upper.endswith(suffix.value) and upper[:-len(suffix.value)] in _TYPES:
            upper, order = upper[:-len(suffix.value)], suffix
            break
    data_type = _TYPES.get(upper)
    return None if data_type is None else (data_type, order)


def _register_kind(info1: str) -> RegisterKind | _Fault:
    kind_value, problem = parse_int(info1, 1, 4)
    if kind_value is None:
        return _Fault("Info1", problem if info1 else "missing (1 coil, 2 discrete input, "
                                                     "3 holding register, 4 input register)")
    return RegisterKind(kind_value)


def _modbus_point(info1: str, info2: str, info3: str, memo: _Memo) -> ModbusPoint | _Fault:
    kind = _memoised(memo.kinds, info1, _register_kind)
    if isinstance(kind, _Fault):
        return kind
    if kind is RegisterKind.HOLDING_REGISTER or kind is RegisterKind.INPUT_REGISTER:
        typed = memo.types.get(info3)
        if typed is not None and typed[0] is not DataType.STRING and info2.isdigit() \
                and info2.isascii() and len(info2) <= 5:
            # The common row, `40000;U32_W`: the general path below gives the same point.
            address = int(info2)
            data_type, order = typed
            if address + TYPE_REGISTERS[data_type] - 1 <= 65535:
                return ModbusPoint(kind=kind, address=address, data_type=data_type,
                                   byte_order=order)
    if info2.isdigit() and info2.isascii() and len(info2) <= 9:
        parts = [info2]         # a plain register, the common form
    else:
        parts = _SEPARATOR.split(info2)
        if not all(_DIGITS.fullmatch(p) for p in parts):
            return _Fault("Info2", f"'{info2}' is not a numeric address" if info2 else
                          "missing (register address)")
        if any(len(p.lstrip("0")) > 9 for p in parts):
            # Out of every range of the forms, and never converted (a line of megabytes of
            # digits).
            return _Fault("Info2", f"'{info2}' holds a number of more than 9 digits")
    numbers = [int(p.lstrip("0") or "0") for p in parts]
    if numbers[0] > 65535:
        return _Fault("Info2", f"register {parts[0]} is outside 0..65535")
    if kind is RegisterKind.COIL or kind is RegisterKind.DISCRETE_INPUT:
        if len(numbers) != 1:
            return _Fault("Info2", f"'{info2}' is not a plain address (a coil or discrete input "
                                   "is one bit)")
        return ModbusPoint(kind=kind, address=numbers[0], data_type=None)
    typed = _memoised(memo.types, info3, parse_type)
    if typed is None:
        return _Fault("Info3", f"'{info3}' is not a known type" if info3 else "missing (type)")
    data_type, order = typed
    point = _register_form(kind, numbers, data_type, order, info2)
    if isinstance(point, _Fault):
        return point
    if point.address + point.register_count - 1 > 65535:
        return _Fault("Info2", f"'{info2}' runs past register 65535")
    return point


def _register_form(kind: RegisterKind, numbers: list[int], data_type: DataType,
                   order: ByteOrder, info2: str) -> ModbusPoint | _Fault:
    reg, rest = numbers[0], numbers[1:]
    if not rest:
        # String without byte count: spans to the next variable (resolved in _cross_checks).
        return ModbusPoint(kind=kind, address=reg, data_type=data_type, byte_order=order,
                           string_bytes=2 if data_type is DataType.STRING else None)
    base = ModbusPoint(kind=kind, address=reg, data_type=data_type, byte_order=order)
    wrong = _Fault("Info2", f"form '{info2}' does not fit type {data_type.value}")
    if len(rest) == 1:
        n = rest[0]
        if data_type is DataType.STRING:
            if not 1 <= n <= 2 * _MAX_REGISTERS:
                return _Fault("Info2", f"byte count {n} is outside 1..250")
            return replace(base, string_bytes=n)
        if data_type in (DataType.U8, DataType.I8):
            if n > 1:
                return _Fault("Info2", f"byte {n} is outside 0..1")
            return replace(base, byte=n)
        if data_type is DataType.BITS:
            if n > 15:
                return _Fault("Info2", f"bit {n} is outside 0..15")
            return replace(base, bit=n, nbits=1)
        return wrong
    if len(rest) == 2 and data_type is DataType.BITS:
        bit, nbits = rest
        if nbits < 1 or bit + nbits > 16:
            return _Fault("Info2", f"bits {bit}+{nbits} pass bit 15")
        return replace(base, bit=bit, nbits=nbits)
    return wrong


# ---------------------------------------------------------------------------- whole-file checks


def _cross_checks(variables: list[Variable], protocol: Protocol,
                  findings: Findings) -> list[Variable]:
    index_at: dict[int, int] = {}
    tag_at: dict[str, int] = {}
    name_at: dict[str, int] = {}
    channel_at: dict[tuple[int, int], int] = {}
    out: list[Variable] = []
    for var in variables:
        if var.index in index_at:
            findings.error(var.line, "Index", f"'{var.index}' is already used at line "
                                              f"{index_at[var.index]}")
            continue
        index_at[var.index] = var.line
        if var.tag:
            if var.tag in tag_at:
                findings.error(var.line, "Tag", f"'{var.tag}' is already used at line "
                                                f"{tag_at[var.tag]}")
            tag_at.setdefault(var.tag, var.line)
        if var.io is not None:
            key = (int(var.io.kind), var.io.channel)
            if key in channel_at:
                findings.error(var.line, "Info2", f"channel {var.io.channel} of Info1 "
                               f"{int(var.io.kind)} is already used at line {channel_at[key]}")
            channel_at.setdefault(key, var.line)
        if var.name in name_at:
            key_name = f"{var.name}_{var.index}"
            findings.warn(var.line, "Name", f"'{var.name}' is already used at line "
                                            f"{name_at[var.name]}; kept, key {key_name}")
            var = replace(var, key=key_name)
        else:
            name_at[var.name] = var.line
        out.append(var)
    if protocol.is_modbus:  # Info4 is ignored for io and tic (docs/formats.md §8.2)
        out = _string_spans(out, findings)
        out = _scale_factors(out, findings)
    return out


def _string_spans(variables: list[Variable], findings: Findings) -> list[Variable]:
    """`String` at a plain `<reg>` spans to the next register variable of its kind (§8.1)."""
    spanning = [at for at, v in enumerate(variables) if v.modbus is not None
                and v.modbus.data_type is DataType.STRING and not _SEPARATOR.search(v.info2)]
    if not spanning:
        return variables
    # Each kind's addresses sorted once: a file of many such Strings is not read once per String.
    addresses: dict[RegisterKind, list[int]] = {}
    for v in variables:
        if v.modbus is not None:
            addresses.setdefault(v.modbus.kind, []).append(v.modbus.address)
    for found in addresses.values():
        found.sort()
    out = list(variables)
    for at in spanning:
        var = variables[at]
        point = var.modbus
        assert point is not None
        same_kind = addresses[point.kind]
        after = bisect.bisect_right(same_kind, point.address)
        later = same_kind[after] if after < len(same_kind) else None
        registers = min(later - point.address, _MAX_REGISTERS) if later is not None else 1
        registers = min(registers, 65536 - point.address)
        findings.warn(var.line, "Info2", f"String without a byte count; spans {registers} "
                                         f"register{'s' if registers > 1 else ''}")
        out[at] = replace(var, modbus=replace(point, string_bytes=2 * registers))
    return out


def _scale_factors(variables: list[Variable], findings: Findings) -> list[Variable]:
    wanted = {var.info4 for var in variables if var.info4}
    if not wanted:
        return variables
    # Only the Names some Info4 gives are looked up.
    by_name: dict[str, list[Variable]] = {}
    for var in variables:
        if var.name in wanted:
            by_name.setdefault(var.name, []).append(var)
    named_lines = {name: [v.line for v in same] for name, same in by_name.items()}
    out: list[Variable] = []
    for var in variables:
        if not var.info4:
            out.append(var)
            continue
        point = var.modbus
        if point is None or point.data_type not in INTEGER_TYPES:
            what = "a coil or discrete input" if point is None or point.data_type is None \
                else f"type {point.data_type.value}"
            findings.error(var.line, "Info4", f"scale factor on {what} (U8..I64 registers only)")
            continue
        named = by_name.get(var.info4)
        if not named:
            findings.error(var.line, "Info4", f"'{var.info4}' names no variable of this file")
            continue
        # `named` is in line order: the nearest above is found by bisection, not by a scan of
        # every variable of that Name for each variable naming it.
        above = bisect.bisect_left(named_lines[var.info4], var.line)
        target = named[above - 1] if above else named[0]
        tpoint = target.modbus
        if tpoint is None or tpoint.data_type not in INTEGER_TYPES:
            findings.error(var.line, "Info4", f"'{var.info4}' is not a U8..I64 register variable")
            continue
        if target.info4:
            findings.error(var.line, "Info4", f"'{var.info4}' has a scale factor of its own")
            continue
        out.append(replace(var, scale_factor_index=target.index))
    return out


# ---------------------------------------------------------------------------- writer


def render(defn: DefinitionFile) -> bytes:
    head = [defn.protocol.value, defn.category, defn.manufacturer, defn.model,
            *defn.header_extra]
    out = [";".join(csv_field(f) for f in head)]
    if defn.title_fields:
        out.append(";".join(csv_field(f) for f in defn.title_fields))
    for v in defn.variables:
        fields = [str(v.index), v.info1, v.info2, v.info3, v.info4, v.name, v.tag,
                  v.coef_a_text, v.coef_b_text, v.unit, str(int(v.action))]
        out.append(";".join(csv_field(f) for f in fields))
    return "".join(line + "\n" for line in out).encode("utf-8")

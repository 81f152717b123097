"""Benchmark `definition_parse`: checking a server's large definition file (docs/formats.md §8).

Workload: one `modbusTCP` file of `--rows` variables (150,000 by default, about 7 MB) as generators
write them: U16/I16/U32_W/F32/I64 registers with a `0.1` or `1` CoefA, one in ten with a Tag, a
SunSpec scale factor (`Info4`) every 50 rows, a String with its byte count every 100.

Ours: `config.parse_definition` (every rule of §8, every problem reported with file, line and
field). Baselines, in the same process, after a warm-up, on the same bytes, runs interleaved
round by round (the box is shared):
- `stdlib csv + the same rules`: `csv.reader` with `;`, then per row plain `int()`, `Decimal()`,
  the type table, the register forms, duplicates and scale factors, building the same
  `Variable`s (checked equal to ours); it stops at the first problem and quotes none, so it does
  less than ours;
- `stdlib csv alone`: the rows split and trimmed, nothing checked: the floor of any reader.
Times are CPU seconds of the parse (`time.process_time`), medians of `--runs`.

    python benchmarks/definition_parse.py [--rows 150000] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

# Run as a script: this checkout's packages, not an installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _memory import PeakRss
from _report import emit, figure_line

from config import parse_definition
from config.definition import parse_type
from config.model import (
    TYPE_REGISTERS,
    Action,
    DataType,
    ModbusPoint,
    RegisterKind,
    Variable,
)

_TYPES = ("U16", "I16", "U32_W", "F32", "I64")


def workload(rows: int) -> bytes:
    lines = ["modbusTCP;Inverter;ACME;Big",
             "Index;Info1;Info2;Info3;Info4;Name;Tag;CoefA;CoefB;Unit;Action"]
    register = 0
    for i in range(1, rows + 1):
        address = register % 60000
        if i % 100 == 0:
            lines.append(f"{i};3;{address}_16;String;;Serial_{i};;1;0;;1")
            register += 8
            continue
        if i % 50 == 1:
            lines.append(f"{i};3;{address};I16;;SF_{i};;1;0;;1")
            register += 1
            continue
        kind_type = _TYPES[i % len(_TYPES)]
        scale = f"SF_{i - i % 50 + 1}" if i % 50 == 7 else ""
        tag = f"t{i}" if i % 10 == 3 else ""
        coef = "0.1" if i % 2 else "1"
        lines.append(f"{i};{3 if i % 3 else 4};{address};{kind_type};{scale};Var_{i};{tag};"
                     f"{coef};0;W;{4 if i % 4 else 2}")
        register += TYPE_REGISTERS[parse_type(kind_type)[0]]  # type: ignore[index]
    return ("\n".join(lines) + "\n").encode()


def ours(data: bytes) -> tuple[Variable, ...]:
    return parse_definition(data, "big.csv").value.variables


_SEPARATOR = re.compile(r"[_ ]")


def _point(kind: RegisterKind, info2: str, info3: str) -> ModbusPoint:
    numbers = [int(p) for p in _SEPARATOR.split(info2)]
    if not 0 <= numbers[0] <= 65535:
        raise ValueError(info2)
    typed = parse_type(info3)
    if typed is None:
        raise ValueError(info3)
    data_type, order = typed
    if len(numbers) == 1:
        point = ModbusPoint(kind=kind, address=numbers[0], data_type=data_type, byte_order=order)
    elif len(numbers) == 2 and data_type is DataType.STRING and 1 <= numbers[1] <= 250:
        point = ModbusPoint(kind=kind, address=numbers[0], data_type=data_type, byte_order=order,
                            string_bytes=numbers[1])
    else:
        raise ValueError(info2)
    if point.address + point.register_count - 1 > 65535:
        raise ValueError(info2)
    return point


def stdlib_same_rules(data: bytes) -> tuple[Variable, ...]:
    """The forms of the workload, checked plainly; raises ValueError at the first problem."""
    reader = csv.reader(io.StringIO(data.decode("utf-8")), delimiter=";")
    next(reader)
    variables: list[Variable] = []
    index_at: dict[int, int] = {}
    tag_at: dict[str, int] = {}
    for row in reader:
        fields = [f.strip(" \t") for f in row] + [""] * (11 - len(row))
        if not any(fields) or fields[0].startswith("#") or fields[0].lower() == "index":
            continue
        line = reader.line_num
        index = int(fields[0])
        kind = RegisterKind(int(fields[1]))
        name, tag = fields[5], fields[6]
        if not 0 <= index <= 2147483647 or index in index_at or not name or len(name) > 128 \
                or not (name + tag + fields[9]).isprintable() or (tag and tag in tag_at):
            raise ValueError(f"line {line}")
        index_at[index] = line
        if tag:
            tag_at[tag] = line
        coef_a_text, coef_b_text = fields[7] or "1", fields[8] or "0"
        variables.append(Variable(
            line=line, index=index, info1=fields[1], info2=fields[2], info3=fields[3],
            info4=fields[4], name=name, tag=tag, coef_a=Decimal(coef_a_text),
            coef_b=Decimal(coef_b_text), unit=fields[9], action=Action(int(fields[10])),
            coef_a_text=coef_a_text, coef_b_text=coef_b_text, key=name,
            modbus=_point(kind, fields[2], fields[3])))
    by_name = {v.name: v for v in variables}
    out: list[Variable] = []
    for var in variables:
        if var.info4:
            target = by_name[var.info4]
            var = Variable(**{**{f: getattr(var, f) for f in Variable.__slots__},
                              "scale_factor_index": target.index})
        out.append(var)
    return tuple(out)


def stdlib_split_only(data: bytes) -> int:
    rows = 0
    for row in csv.reader(io.StringIO(data.decode("utf-8")), delimiter=";"):
        [f.strip(" \t") for f in row]
        rows += 1
    return rows


def _cpu(fn: Callable[[bytes], object], data: bytes) -> float:
    started = time.process_time()
    fn(data)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 rows, one run")
    args = parser.parse_args()
    rows, runs = (1000, 1) if args.quick else (args.rows, args.runs)
    data = workload(rows)
    if stdlib_same_rules(data) != ours(data):
        raise SystemExit("the baseline's variables differ from ours")
    sides: dict[str, Callable[[bytes], object]] = {
        "ours": ours, "stdlib csv + the same rules (first problem only)": stdlib_same_rules,
        "stdlib csv alone: split and trimmed, nothing checked": stdlib_split_only}
    times: dict[str, list[float]] = {name: [] for name in sides}
    peaks = {name: PeakRss() for name in sides}
    for fn in sides.values():
        fn(data)                        # warm-up
    for _ in range(runs):
        for name, fn in sides.items():
            with peaks[name]:
                times[name].append(_cpu(fn, data))
    for name in list(sides)[1:]:
        emit(figure_line("definition_parse", name, "s", times["ours"], times[name],
                         peak_rss_mb=peaks["ours"].peak_mb,
                         theirs_peak_rss_mb=peaks[name].peak_mb, n=runs, rows=rows,
                         file_mb=round(len(data) / 2**20, 1),
                         ours_us_per_row=round(min(times["ours"]) / rows * 1e6, 1)))


if __name__ == "__main__":
    main()

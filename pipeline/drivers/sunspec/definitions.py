"""Definition files generated for a discovered SunSpec device (docs/formats.md §8.4).

The file describes the device's model chain as read: the device's `L` bounds each model, only
points entirely inside it are written, and a point whose scale factor is not written is left out
too, so the file always validates. Unknown (vendor) models get their two header rows only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final

from config.decimal_text import plain_decimal
from config.model import Protocol
from fsio import write_file_durably

from ._models import HEADER_REGISTERS, PlacedPoint, layout, load_model, sf_resolver

#: SunSpec point type -> (Info3 type, registers it is read from counted from the point's start).
_TYPES: Final[Mapping[str, str]] = {
    "int16": "I16", "sunssf": "I16",
    "uint16": "U16", "enum16": "U16", "bitfield16": "U16", "count": "U16", "acc16": "U16",
    "pad": "U16", "raw16": "U16",
    "int32": "I32",
    "uint32": "U32", "acc32": "U32", "enum32": "U32", "bitfield32": "U32",
    "int64": "I64",
    "uint64": "U64", "acc64": "U64", "bitfield64": "U64",
    "float32": "F32", "float64": "F64",
    "string": "String", "ipaddr": "IP", "ipv6addr": "IPV6", "eui48": "MAC",
}

#: Models whose measured points are instant values (the manual); the others are parameters.
_MANUAL_INSTANT_MODELS: Final = frozenset({101, 102, 103, 111, 112, 113, 123, 160, 401})
#: Measurement models newer than the manual (docs/formats.md §8.4): a unit holding only these (DER
#: 701/713/714, meters 201-204, ...) must still record what it measures.
_NEWER_MEASUREMENT_MODELS: Final = frozenset({
    122, 201, 202, 203, 204, 211, 212, 213, 214, 220, 302, 303, 304, 305, 306, 307, 308,
    402, 403, 404, 501, 502, 701, 713, 714, 802, 803, 804, 805, 806, 807, 808, 809,
})
MEASUREMENT_MODELS: Final = _MANUAL_INSTANT_MODELS | _NEWER_MEASUREMENT_MODELS

#: Tags the manual gives to model 123 points (the manual's `WMaxLimPct_Ena` is `WMaxLim_Ena`).
_MODEL_123_TAGS: Final[Mapping[str, str]] = {
    "WMaxLimPct": "cmdPwrPercent",
    "WMaxLimPct_RmpTms": "WMaxLimPct_RmpTms",
    "WMaxLim_Ena": "WMaxLimPct_Ena",
    "VArPct_Mod": "VArPct_Mod",
}

_MAX_STRING_REGISTERS: Final = 125
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-]")


@dataclass(frozen=True, slots=True)
class ChainModel:
    """One model of a device's chain as discovered."""

    model_id: int
    header_address: int             # register of its `ID`
    length: int                     # its `L`, as the device reports it
    #: Values of the model's counting points (`NCrv`, `NPt`…) read from the device; None when
    #: the read failed (counted groups are then left out).
    counts: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """The common model's identity points, decoded."""

    manufacturer: str               # Mn
    model: str                      # Md
    options: str                    # Opt
    version: str                    # Vr
    serial_number: str              # SN
    device_address: int | None      # DA


@dataclass(frozen=True, slots=True)
class GeneratedDefinition:
    name: str
    text: str


def clean_part(text: str) -> str:
    """`Mn`, `Md`, `Opt` as they appear in file names and headers."""
    return _UNSAFE.sub("_", text)


def definition_file_name(uid: str, identity: Identity, protocol: Protocol) -> str:
    parts = ["SunSpec", "inverter", clean_part(identity.manufacturer), clean_part(identity.model)]
    if identity.options:
        parts.append(clean_part(identity.options))
    parts.append(protocol.value)
    return f"{uid}_" + "_".join(parts) + ".csv"


def _text_field(text: str) -> str:
    # Writers never quote: ';', CR and LF inside a value each become one space (docs/formats.md
    # §1.1).
    return text.replace(";", " ").replace("\r", " ").replace("\n", " ")


def _info2_info3(placed: PlacedPoint, info3: str) -> tuple[str, str]:
    if info3 == "String":
        registers = min(placed.point.size, _MAX_STRING_REGISTERS)
        return f"{placed.address}_{2 * registers}", info3
    if info3 == "MAC":
        # EUI-48 is 4 registers, the MAC in the last three.
        return str(placed.address + 1), info3
    return str(placed.address), info3


def model_rows(chain_model: ChainModel, prefix: str, *, first_123: bool,
               problem: Callable[[str], None]) -> list[tuple[str, ...]]:
    """Rows (without Index) for one model instance; `prefix` is `<id>` or `<id>.<k>`."""
    header = chain_model.header_address
    rows: list[tuple[str, ...]] = [
        ("3", str(header), "U16", "", f"{prefix}_tableId", "", "1", "0", "", "1"),
        ("3", str(header + 1), "U16", "", f"{prefix}_tableSize", "", "1", "0", "", "1"),
    ]
    model = load_model(chain_model.model_id)
    if model is None:
        return rows
    placed_layout = layout(model, header, chain_model.length, chain_model.counts)
    for text in placed_layout.problems:
        problem(f"model {chain_model.model_id} at {header + HEADER_REGISTERS}: {text}")
    limit = min(header + HEADER_REGISTERS + chain_model.length, 65536)
    inside = [p for p in placed_layout.points[2:]
              if p.end <= limit and p.point.type in _TYPES]
    written = {id(p) for p in inside}
    resolve = sf_resolver(placed_layout.points)
    instant = chain_model.model_id in MEASUREMENT_MODELS
    for placed in inside:
        point = placed.point
        info3 = _TYPES[point.type]
        info4 = ""
        coef_a = "1"
        if isinstance(point.sf, int):
            coef_a = plain_decimal(Decimal(1).scaleb(point.sf))
        elif isinstance(point.sf, str):
            sf_point = resolve(placed)
            if sf_point is None or id(sf_point) not in written \
                    or _TYPES[sf_point.point.type] not in ("I16", "U16"):
                continue
            info4 = f"{prefix}_" + "_".join(sf_point.parts)
        if point.type == "pad":
            action = "0"
        elif point.type == "sunssf" or not instant:
            action = "1"
        else:
            action = "4"
        tag = _MODEL_123_TAGS.get(point.name, "") if first_123 and not placed.instance else ""
        info2, info3 = _info2_info3(placed, info3)
        rows.append(("3", info2, info3, info4, f"{prefix}_" + "_".join(placed.parts), tag,
                     coef_a, "0", _text_field(point.units), action))
    return rows


def generate(uid: str, identity: Identity, protocol: Protocol, chain: Sequence[ChainModel],
             problem: Callable[[str], None]) -> GeneratedDefinition:
    """The definition file for one device; `problem` receives each `Error:` text (no prefix)."""
    lines = [";".join((protocol.value, "Inverter", clean_part(identity.manufacturer),
                       clean_part(identity.model)))]
    seen: dict[int, int] = {}
    first_123 = True
    index = 0
    for chain_model in chain:
        k = seen.get(chain_model.model_id, 0) + 1
        seen[chain_model.model_id] = k
        prefix = str(chain_model.model_id) if k == 1 else f"{chain_model.model_id}.{k}"
        rows = model_rows(chain_model, prefix, first_123=first_123 and chain_model.model_id == 123,
                          problem=problem)
        if chain_model.model_id == 123:
            first_123 = False
        for row in rows:
            index += 1
            lines.append(";".join((str(index), *row)))
    return GeneratedDefinition(name=definition_file_name(uid, identity, protocol),
                               text="\n".join(lines) + "\n")


def measured_variables(definition: GeneratedDefinition) -> int:
    """How many variables of a generated file are recorded as instant values (action 4)."""
    rows = definition.text.splitlines()[1:]
    return sum(1 for row in rows if row.rpartition(";")[2] == "4")


def unique_name(name: str, text: str, existing: Callable[[str], str | None]) -> str:
    """`name`, or `<stem>_2.csv`, `_3`… when a file of that name holds other content.

    `existing(name)` returns the content of a file already there, None when there is none. A file
    with the same name and content is reused (its name is returned).
    """
    stem, dot, ext = name.rpartition(".")
    candidate = name
    k = 1
    while True:
        current = existing(candidate)
        if current is None or current == text:
            return candidate
        k += 1
        candidate = f"{stem}_{k}{dot}{ext}"


def write_definition(directory: Path, definition: GeneratedDefinition) -> Path:
    """Write (or reuse) the file in `directory` under the naming rule; returns its path."""

    def existing(candidate: str) -> str | None:
        path = directory / candidate
        try:
            return path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None

    name = unique_name(definition.name, definition.text, existing)
    path = directory / name
    if not path.exists():
        # A half-written definition after a power cut would be read as a broken device file.
        write_file_durably(path, definition.text.encode("utf-8"), tmp=path.with_name(f".{name}.tmp"))
    return path

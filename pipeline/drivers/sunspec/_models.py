"""The SunSpec Alliance's JSON model definitions, as pysunspec2 ships them, laid out on registers.

A model definition is a tree: the top group (the model) holds points, then groups, which may
repeat (`count` 0: as many times as `L` leaves room for; `count` naming a point: that point's value
read from the device) and nest. `layout` turns one model instance (its header address, its `L` and
the counts read from the device) into the ordered list of points with their register addresses,
their generated name parts and their scale-factor reference, the way pysunspec2 itself walks it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, cast

#: A parsed JSON value; the model files are plain JSON objects.
_Json = dict[str, object]


class ModelDefinitionError(ValueError):
    """A shipped model file does not have the shape this module expects."""


@dataclass(frozen=True, slots=True)
class PointDef:
    name: str
    type: str
    size: int                       # registers
    units: str
    #: Name of the scale-factor point, or its value when the model gives a number (303-308).
    sf: str | int | None


@dataclass(frozen=True, slots=True)
class GroupDef:
    name: str
    #: None: once; 0: repeated to fill `L`; str: repeated as many times as that point's value.
    count: int | str | None
    points: tuple[PointDef, ...]
    groups: tuple[GroupDef, ...]


@dataclass(frozen=True, slots=True)
class ModelDef:
    model_id: int
    group: GroupDef

    def counting_points(self) -> tuple[str, ...]:
        """Top-level points whose values give a group's repetition count (7xx `NCrv`, `NPt`)."""
        found: list[str] = []

        def walk(group: GroupDef) -> None:
            for sub in group.groups:
                if isinstance(sub.count, str) and sub.count not in found:
                    found.append(sub.count)
                walk(sub)

        walk(self.group)
        return tuple(found)

    def top_point_offset(self, name: str) -> int | None:
        """Offset of a top-level point from the model header (`ID` at 0)."""
        offset = 0
        for point in self.group.points:
            if point.name == name:
                return offset
            offset += point.size
        return None


def pysunspec2_version() -> str:
    return importlib.metadata.version("pysunspec2")


@functools.cache
def load_model(model_id: int) -> ModelDef | None:
    """The standard definition of `model_id`, or None for a model pysunspec2 does not ship."""
    resource = importlib.resources.files("sunspec2").joinpath("models", "json",
                                                               f"model_{model_id}.json")
    if not resource.is_file():
        return None
    data = json.loads(resource.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("group"), dict):
        raise ModelDefinitionError(f"model_{model_id}.json: no top-level group")
    return ModelDef(model_id=model_id, group=_group(cast(_Json, data["group"]), model_id))


def _group(data: _Json, model_id: int) -> GroupDef:
    raw_count = data.get("count")
    count: int | str | None
    if raw_count is None or isinstance(raw_count, (int, str)):
        count = raw_count
    else:
        raise ModelDefinitionError(f"model_{model_id}.json: group {data.get('name')!r}: bad count")
    points = tuple(_point(cast(_Json, p), model_id) for p in cast(list[object], data.get("points", [])))
    groups = tuple(_group(cast(_Json, g), model_id) for g in cast(list[object], data.get("groups", [])))
    return GroupDef(name=str(data["name"]), count=count, points=points, groups=groups)


def _point(data: _Json, model_id: int) -> PointDef:
    raw_sf = data.get("sf")
    sf: str | int | None
    if raw_sf is None or isinstance(raw_sf, int):
        sf = raw_sf
    elif isinstance(raw_sf, str):
        sf = int(raw_sf) if raw_sf.lstrip("-").isdigit() else raw_sf
    else:
        raise ModelDefinitionError(f"model_{model_id}.json: point {data.get('name')!r}: bad sf")
    size = data.get("size")
    if not isinstance(size, int) or size < 1:
        raise ModelDefinitionError(f"model_{model_id}.json: point {data.get('name')!r}: bad size")
    return PointDef(name=str(data["name"]), type=str(data["type"]), size=size,
                    units=str(data.get("units", "")), sf=sf)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True, slots=True)
class PlacedPoint:
    point: PointDef
    address: int                    # first register (zero-based PDU address)
    #: Name parts after the model id: repetition numbers and nested group names, then the point.
    parts: tuple[str, ...]
    #: Key of the group instance holding the point (() for the model's top level), so a scale
    #: factor is looked up in the point's own group instance first, as pysunspec2 does.
    instance: tuple[str, ...]

    @property
    def end(self) -> int:
        return self.address + self.point.size


@dataclass(frozen=True, slots=True)
class Layout:
    points: tuple[PlacedPoint, ...]
    #: Problems met (a repeating block that does not divide `L`, a count not read), one line each.
    problems: tuple[str, ...]


def group_size(group: GroupDef, counts: Mapping[str, int]) -> int | None:
    """Registers one instance of `group` spans; None when a nested count is unknown or fills L."""
    size = sum(p.size for p in group.points)
    for sub in group.groups:
        sub_size = group_size(sub, counts)
        if sub_size is None:
            return None
        if sub.count is None:
            size += sub_size
        elif isinstance(sub.count, str):
            if sub.count not in counts:
                return None
            size += sub_size * counts[sub.count]
        else:
            return None
    return size


def layout(model: ModelDef, header_address: int, length: int,
           counts: Mapping[str, int] | None) -> Layout:
    """Place every point of one model instance, in register order.

    `counts` holds the values of the model's counting points read from the device (None when that
    read failed: counted groups are then left out, "fixed part only").
    """
    problems: list[str] = []
    placed: list[PlacedPoint] = []
    top = model.group
    known_counts: Mapping[str, int] = counts if counts is not None else {}
    address = header_address
    #: Nothing past L is described; a count the device does not implement (0xFFFF curves of
    #: 0xFFFF points) would otherwise place billions of points only to drop them.
    end = header_address + HEADER_REGISTERS + length

    def place_points(group: GroupDef, parts: tuple[str, ...]) -> None:
        nonlocal address
        for point in group.points:
            if address >= end:
                return
            placed.append(PlacedPoint(point, address, (*parts, point.name), parts))
            address += point.size

    place_points(top, ())

    # The fixed length: every register of the model after ID and L that does not belong to a
    # group repeated to fill L (docs/behaviour.md §3.4).
    fixed = sum(p.size for p in top.points) - 2
    for sub in top.groups:
        if sub.count == 0:
            continue
        sub_size = group_size(sub, known_counts)
        if sub_size is not None:
            fixed += sub_size * _repeats(sub, known_counts)

    def place_group(group: GroupDef, parts: tuple[str, ...], times: int) -> None:
        for k in range(1, times + 1):
            if address >= end:
                return
            inner = parts + ((str(k),) if group.count is not None else (group.name,))
            place_points(group, inner)
            for sub in group.groups:
                place_sub(sub, inner)

    def place_sub(sub: GroupDef, parts: tuple[str, ...]) -> None:
        if sub.count is None:
            place_group(sub, parts, 1)
        elif isinstance(sub.count, str):
            if counts is None or sub.count not in counts:
                return
            place_group(sub, parts, counts[sub.count])
        elif sub.count == 0:
            block = group_size(sub, known_counts)
            spare = length - fixed
            if block is None or block == 0:
                return
            if spare < 0 or spare % block != 0:
                problems.append(f"length {length} is not the fixed length {fixed} plus whole "
                                f"{sub.name} blocks of {block} registers; fixed part only")
                return
            place_group(sub, parts, spare // block)
        else:
            place_group(sub, parts, sub.count)

    for sub in top.groups:
        place_sub(sub, ())
    return Layout(points=tuple(placed), problems=tuple(problems))


def _repeats(group: GroupDef, counts: Mapping[str, int]) -> int:
    if group.count is None:
        return 1
    if isinstance(group.count, str):
        return counts.get(group.count, 0)
    return group.count


#: Resolves a scale-factor name for a point: its own group instance first, then the model's top.
SfResolver = Callable[[PlacedPoint], PlacedPoint | None]


def sf_resolver(points: tuple[PlacedPoint, ...]) -> SfResolver:
    by_instance: dict[tuple[tuple[str, ...], str], PlacedPoint] = {}
    for placed in points:
        by_instance.setdefault((placed.instance, placed.point.name), placed)

    def resolve(placed: PlacedPoint) -> PlacedPoint | None:
        sf = placed.point.sf
        if not isinstance(sf, str):
            return None
        return by_instance.get((placed.instance, sf)) or by_instance.get(((), sf))

    return resolve


#: Number of registers the two header points take (ID, L).
HEADER_REGISTERS: Final = 2

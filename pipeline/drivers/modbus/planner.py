"""Coalescing a definition file's variables into the fewest reads (docs/behaviour.md §2.5).

Per register kind, variables sorted by address are merged while a read stays within 125 registers
(2000 bits for coils and discrete inputs) and every hole between covered addresses is at most
`max_gap`. Overlapping variables share a read. Greedy merging in address order gives the fewest
reads for variables that do not nest (a read is a contiguous range, so an optimal plan is a split
of the sorted variables into consecutive runs, and taking each run as long as the limits allow
never needs more runs); the planner tests check it against an exhaustive search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from config.model import DefinitionFile, RegisterKind, Variable
from pipeline.drivers._base import DeviceError, ReadPlan
from pipeline.drivers.modbus.frames import MAX_BITS, MAX_REGISTERS, read_request

__all__ = ["ModbusPlan", "ReadRequest", "modbus_plan", "plan_reads", "polled_variables",
           "split_read"]


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: `count` registers (or bits) of `kind` from `address`, for `indexes`."""

    kind: RegisterKind
    address: int
    count: int
    indexes: tuple[int, ...]

    @property
    def function(self) -> int:
        return self.kind.read_function

    @property
    def pdu(self) -> bytes:
        return read_request(self.function, self.address, self.count)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusPlan(ReadPlan):
    """A read plan with the register reads that carry it, in sending order."""

    requests: tuple[ReadRequest, ...] = ()


def modbus_plan(plan: ReadPlan) -> ModbusPlan:
    """`plan` as the Modbus planner built it; a plan of another protocol is a wiring error."""
    if not isinstance(plan, ModbusPlan):
        raise DeviceError(f"{plan.definition.file_name}: not a Modbus read plan (build it with "
                          "plan_reads)")
    return plan


def polled_variables(definition: DefinitionFile, *, parameters: bool = False) -> list[Variable]:
    """The variables a poll reads (actions 2, 4, 8, 9), or the parameters (1, 9), plus the scale
    factors they name."""
    chosen = [v for v in definition.variables if v.modbus is not None and
              (v.action.is_parameter if parameters else v.action.is_polled)]
    return _with_scale_factors(definition, chosen)


def _with_scale_factors(definition: DefinitionFile, chosen: Iterable[Variable]) -> list[Variable]:
    by_index = {v.index: v for v in definition.variables}
    picked: dict[int, Variable] = {}
    for var in chosen:
        picked[var.index] = var
        if var.scale_factor_index is not None:
            sf = by_index.get(var.scale_factor_index)
            if sf is not None and sf.modbus is not None:
                picked.setdefault(sf.index, sf)
    return sorted(picked.values(), key=lambda v: v.index)


def _limit(kind: RegisterKind) -> int:
    return MAX_BITS if kind.is_bit else MAX_REGISTERS


def _coalesce(kind: RegisterKind, variables: list[Variable], max_gap: int) -> list[ReadRequest]:
    spans = sorted(((v.modbus.address, v.modbus.address + v.modbus.register_count, v.index)
                    for v in variables if v.modbus is not None),
                   key=lambda s: (s[0], s[1]))
    limit = _limit(kind)
    requests: list[ReadRequest] = []
    start = end = -1
    members: list[int] = []
    for first, stop, index in spans:
        if members and first - end <= max_gap and max(end, stop) - start <= limit:
            end = max(end, stop)
            members.append(index)
            continue
        if members:
            requests.append(ReadRequest(kind, start, end - start, tuple(members)))
        start, end, members = first, stop, [index]
    if members:
        requests.append(ReadRequest(kind, start, end - start, tuple(members)))
    return requests


def plan_reads(definition: DefinitionFile, max_gap: int = 0, *,
               variables: Iterable[Variable] | None = None) -> ModbusPlan:
    """The coalesced reads of a poll: polled variables (or `variables`) plus their scale factors.

    `max_gap` is `DAQ_ModbusMaxGap`: 0 never reads an address no variable names.
    """
    chosen = (polled_variables(definition) if variables is None
              else _with_scale_factors(definition, variables))
    requests: list[ReadRequest] = []
    for kind in RegisterKind:
        of_kind = [v for v in chosen if v.modbus is not None and v.modbus.kind is kind]
        requests.extend(_coalesce(kind, of_kind, max(0, max_gap)))
    return ModbusPlan(definition=definition, variables=tuple(chosen), requests=tuple(requests))


def split_read(plan: ReadPlan, requests: Sequence[ReadRequest], refused: ReadRequest
               ) -> tuple[ReadRequest, ...]:
    """`requests` with `refused` read one variable per request instead: the fallback after
    exception 0x02/0x03 on that merged read (docs/behaviour.md §2.5); the other reads stay."""
    by_index = {v.index: v for v in plan.variables}
    alone = sorted((ReadRequest(point.kind, point.address, point.register_count, (index,))
                    for index in refused.indexes
                    if (point := by_index[index].modbus) is not None),
                   key=lambda r: r.address)
    out: list[ReadRequest] = []
    for request in requests:
        out.extend(alone if request == refused else (request,))
    return tuple(out)

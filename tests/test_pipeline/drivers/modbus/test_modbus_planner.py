"""Request planning properties (docs/behaviour.md §2.5)."""

from __future__ import annotations

from functools import cache

from _modbus_defs import definition, var
from hypothesis import given, settings
from hypothesis import strategies as st

from config.model import Action, DataType, RegisterKind, Variable
from pipeline.drivers.modbus.planner import ReadRequest, plan_reads, split_read

SIZES = {DataType.U16: 1, DataType.U32: 2, DataType.U64: 4, DataType.IPV6: 8}


@st.composite
def variables(draw: st.DrawFn, *, overlapping: bool = True) -> list[Variable]:
    count = draw(st.integers(1, 30))
    out: list[Variable] = []
    address = draw(st.integers(0, 100))
    for index in range(1, count + 1):
        kind = draw(st.sampled_from([1, 2, 3, 4]))
        data_type = None if kind in (1, 2) else draw(st.sampled_from(list(SIZES)))
        if overlapping:
            address = draw(st.integers(0, 400))
        else:
            address += draw(st.integers(0, 40))
        out.append(var(index, kind, address, data_type,
                       action=draw(st.sampled_from([Action.INSTANT, Action.MIN_MAX_MEAN,
                                                    Action.NOT_READ, Action.PARAMETER]))))
        if not overlapping:
            address += 1 if data_type is None else SIZES[data_type]
    return out


def covers(request: ReadRequest, v: Variable) -> bool:
    assert v.modbus is not None
    return (request.kind is v.modbus.kind and request.address <= v.modbus.address and
            v.modbus.address + v.modbus.register_count <= request.address + request.count)


@given(variables(), st.integers(0, 20))
def test_every_polled_variable_is_covered_within_limits(vs: list[Variable], gap: int) -> None:
    plan = plan_reads(definition(*vs), gap)
    requests = plan.requests
    polled = [v for v in vs if v.action.is_polled]
    assert {v.index for v in plan.variables} == {v.index for v in polled}
    for v in polled:
        owners = [r for r in requests if v.index in r.indexes]
        assert len(owners) == 1 and covers(owners[0], v)
    for r in requests:
        assert r.count <= (2000 if r.kind.is_bit else 125)
        assert r.function == int(r.kind)
        # Every hole inside a read is at most `gap` addresses long.
        covered = sorted((v.modbus.address, v.modbus.address + v.modbus.register_count)
                         for v in vs if v.index in r.indexes and v.modbus is not None)
        end = covered[0][0]
        assert end == r.address
        for first, stop in covered:
            assert first - end <= gap
            end = max(end, stop)
        assert end == r.address + r.count


def minimum_requests(spans: list[tuple[int, int]], gap: int, limit: int) -> int:
    """Exhaustive: the fewest consecutive runs of the sorted spans that each fit one read."""
    spans = sorted(spans)

    @cache
    def best(i: int) -> int:
        if i == len(spans):
            return 0
        result = len(spans)
        end = spans[i][1]
        for j in range(i, len(spans)):
            if j > i:
                if spans[j][0] - end > gap:
                    break
                end = max(end, spans[j][1])
            if end - spans[i][0] > limit:
                break
            result = min(result, 1 + best(j + 1))
        return result

    return best(0)


@settings(max_examples=200)
@given(variables(overlapping=False), st.integers(0, 30))
def test_request_count_is_the_minimum(vs: list[Variable], gap: int) -> None:
    plan = plan_reads(definition(*vs), gap)
    expected = 0
    for kind in RegisterKind:
        spans = [(v.modbus.address, v.modbus.address + v.modbus.register_count)
                 for v in vs if v.modbus is not None and v.modbus.kind is kind
                 and v.action.is_polled]
        if spans:
            expected += minimum_requests(spans, gap, 2000 if kind.is_bit else 125)
    assert len(plan.requests) == expected


def test_contiguous_registers_merge_but_holes_do_not_by_default() -> None:
    d = definition(var(1, 3, 100), var(2, 3, 101, DataType.U32), var(3, 3, 105))
    assert [(r.address, r.count) for r in plan_reads(d).requests] == [(100, 3), (105, 1)]
    assert [(r.address, r.count) for r in plan_reads(d, 2).requests] == [(100, 6)]


def test_reads_stop_at_125_registers_and_2000_bits() -> None:
    regs = [var(i, 3, i - 1) for i in range(1, 131)]
    bits = [var(1000 + i, 1, i) for i in range(2001)]
    plan = plan_reads(definition(*regs, *bits))
    assert [(r.kind, r.count) for r in plan.requests] == [
        (RegisterKind.COIL, 2000), (RegisterKind.COIL, 1),
        (RegisterKind.HOLDING_REGISTER, 125), (RegisterKind.HOLDING_REGISTER, 5)]


def test_overlapping_variables_share_a_read() -> None:
    d = definition(var(1, 3, 10, DataType.U32), var(2, 3, 11), var(3, 3, 10, DataType.U64))
    assert [(r.address, r.count, r.indexes) for r in plan_reads(d).requests] == \
        [(10, 4, (1, 3, 2))]


def test_scale_factors_are_always_added() -> None:
    d = definition(var(1, 3, 10, sf=2), var(2, 3, 50, DataType.I16, action=Action.PARAMETER),
                   var(3, 3, 60, action=Action.NOT_READ))
    plan = plan_reads(d)
    assert [v.index for v in plan.variables] == [1, 2]
    assert [(r.address, r.indexes) for r in plan.requests] == [(10, (1,)), (50, (2,))]


def test_kinds_are_never_mixed() -> None:
    d = definition(var(1, 3, 10), var(2, 4, 11), var(3, 1, 12, None), var(4, 2, 13, None))
    assert sorted(r.function for r in plan_reads(d, 100).requests) == [1, 2, 3, 4]


def test_split_read_reads_the_refused_read_one_variable_per_request() -> None:
    d = definition(var(1, 3, 10), var(2, 3, 11, sf=3), var(3, 3, 12), var(4, 3, 100),
                   var(5, 3, 101))
    plan = plan_reads(d)
    refused, other = plan.requests
    split = split_read(plan, plan.requests, refused)
    assert [(r.address, r.count, r.indexes) for r in split] == \
        [(10, 1, (1,)), (11, 1, (2,)), (12, 1, (3,)), (100, 2, (4, 5))]
    assert split[-1] == other

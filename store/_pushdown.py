"""Which verified batches a scan's filter can skip, from the bounds their metadata states.

A scan's filter (a `pyarrow.compute.Expression`, as DuckDB and polars push it) is read from its
own serialised form (what pickling it produces: an IPC file whose schema metadata lists the
expression's nodes in order, `call` / `field_ref` / `literal` / `options` / `end`, and whose
columns hold the literals), not from its text. A batch is skipped only when the filter cannot
be true for any row within the batch's bounds of `ts`, `seq` and `var` (`BatchFrame`, covered
by its CRC): comparisons and `is_in` of one of those fields with a literal, under `and`,
`or` and `if_else`. Anything else may be true; a filter this reader cannot read skips nothing.
The filter still runs on every row read, so skipping is only ever a saving, never a result.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from store._ipc import BatchFrame, FrameError, _Table, _u32, read_message

FramePredicate = Callable[[BatchFrame], bool]

_MAGIC: Final = b"ARROW1\x00\x00"
_FLIP: Final = {"equal": "equal", "not_equal": "not_equal", "less": "greater",
                "less_equal": "greater_equal", "greater": "less",
                "greater_equal": "less_equal"}


@dataclass(slots=True)
class _Node:
    kind: str  # "call", "field_ref", "literal"
    name: str = ""  # function or field name; of a literal, "ts" for a timestamp
    value: object = None  # a literal's value (ns for timestamps), or `_UNKNOWN`
    args: list[_Node] = field(default_factory=list)
    options: dict[str, object] | None = None


_UNKNOWN: Final = object()


def frame_filter(expression: pc.Expression | None, *, ts_step_ns: int = 1
                 ) -> FramePredicate | None:
    """A predicate: False for a frame whose rows the filter cannot select; None when no frame
    can be told apart (no filter, or one this reader cannot read). `ts_step_ns`: the filter
    sees times truncated to this many nanoseconds (1000 for a scan in microseconds), so a
    frame's time bounds are truncated alike before they are compared."""
    if expression is None:
        return None
    try:
        tree = _parse(expression)
    except (FrameError, pa.ArrowInvalid, struct.error, ValueError, IndexError, TypeError,
            UnicodeDecodeError):
        return None
    if not _prunes(tree):
        return None
    return lambda frame: _may(tree, frame, ts_step_ns)


def _prunes(node: _Node) -> bool:
    return (node.kind == "field_ref" and node.name in ("ts", "seq", "var")) or \
        any(_prunes(arg) for arg in node.args)


def _parse(expression: pc.Expression) -> _Node:
    _, (buffer,) = expression.__reduce__()
    data = memoryview(buffer)
    if bytes(data[: len(_MAGIC)]) != _MAGIC:
        raise ValueError("not a serialised expression")
    message = read_message(data, len(_MAGIC))
    if message is None:
        raise ValueError("no schema message")
    meta = data[message.start + 8 : message.body_start]
    pairs = _ordered_metadata(meta)
    literals = pa.ipc.open_file(pa.py_buffer(bytes(data))).read_all()
    stack: list[_Node] = [_Node("call", "root")]
    for key, value in pairs:
        if key == "call":
            stack.append(_Node("call", value))
        elif key == "end":
            node = stack.pop()
            if node.name != value or not stack:
                raise ValueError("unbalanced expression")
            stack[-1].args.append(node)
        elif key == "field_ref":
            stack[-1].args.append(_Node("field_ref", value))
        elif key == "literal":
            scalar = literals.column(int(value))[0]
            stack[-1].args.append(_Node("literal", "ts" if pa.types.is_timestamp(scalar.type)
                                        else "", _literal(scalar)))
        elif key == "options":
            options = literals.column(int(value))[0].as_py()
            stack[-1].options = options if isinstance(options, dict) else {}
        else:
            raise ValueError(f"unknown expression node {key!r}")
    if len(stack) != 1 or len(stack[0].args) != 1:
        raise ValueError("unbalanced expression")
    return stack[0].args[0]


def _ordered_metadata(meta: memoryview) -> list[tuple[str, str]]:
    """The schema message's custom metadata in order (keys repeat: a dict would lose them)."""
    root = _Table(meta, _u32(meta, 0))
    schema = root.table(2)
    if schema is None:
        raise ValueError("no schema")
    vector = schema.vector(2)  # Schema: endianness, fields, custom_metadata
    if vector is None:
        return []
    first, count = vector
    pairs = []
    for i in range(count):
        p = first + 4 * i
        entry = _Table(meta, p + _u32(meta, p))
        pairs.append((entry.string(0)[0], entry.string(1)[0]))
    return pairs


def _literal(scalar: pa.Scalar) -> object:
    """A literal's value as the bounds are kept: numbers as they are, timestamps in ns (UTC);
    `_UNKNOWN` for any other type (nothing is skipped on it)."""
    kind = scalar.type
    if not scalar.is_valid:
        return None
    if pa.types.is_timestamp(kind):
        return int(scalar.cast(pa.timestamp("ns", tz=kind.tz)).value)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return scalar.as_py()
    return _UNKNOWN


def _bounds(frame: BatchFrame, name: str, ts_step_ns: int = 1) -> tuple[int, int] | None:
    if name == "ts":
        return (frame.ts_min // ts_step_ns * ts_step_ns, frame.ts_max // ts_step_ns * ts_step_ns)
    if name == "seq":
        return frame.seq_first, frame.seq_last
    if name == "var" and frame.var_min is not None and frame.var_max is not None:
        return frame.var_min, frame.var_max
    return None


def _may(node: _Node, frame: BatchFrame, ts_step_ns: int = 1) -> bool:
    """Whether `node` may be true for a row within the frame's bounds (True when unsure)."""
    if node.kind == "literal":
        return node.value is not None and node.value is not False
    if node.kind != "call":
        return True
    name, args = node.name, node.args
    if name in ("and_kleene", "and"):
        return all(_may(arg, frame, ts_step_ns) for arg in args)
    if name in ("or_kleene", "or"):
        return any(_may(arg, frame, ts_step_ns) for arg in args)
    if name == "if_else" and len(args) == 3:
        # True only where the chosen branch is true, whichever the condition chooses.
        return _may(args[1], frame, ts_step_ns) or _may(args[2], frame, ts_step_ns)
    if name == "is_in" and len(args) == 1 and args[0].kind == "field_ref":
        bounds = _bounds(frame, args[0].name)
        values = (node.options or {}).get("value_set")
        if bounds is None or args[0].name == "ts" or not isinstance(values, list) or not all(
                (isinstance(v, int | float) and not isinstance(v, bool)) or v is None
                for v in values):
            return True
        return any(v is not None and bounds[0] <= v <= bounds[1] for v in values)
    if name in _FLIP and len(args) == 2:
        left, right = args
        if left.kind == "literal" and right.kind == "field_ref":
            left, right, name = right, left, _FLIP[name]
        if left.kind != "field_ref" or right.kind != "literal":
            return True
        bounds = _bounds(frame, left.name, ts_step_ns)
        value = right.value
        if bounds is None or value is _UNKNOWN or isinstance(value, bool) \
                or (left.name == "ts") != (right.name == "ts"):
            return True  # only a time with a time, a number with a number
        if value is None:
            return False  # a comparison with null is never true
        assert isinstance(value, int | float)
        low, high = bounds
        if name == "equal":
            return low <= value <= high
        if name == "not_equal":
            return not low == high == value
        if name == "less":
            return low < value
        if name == "less_equal":
            return low <= value
        if name == "greater":
            return high > value
        return high >= value
    return True

"""Value text of docs/formats.md §9.3, scalar and columnar.

Every number in a DATA, `_P_` or ALARM file and in MQTT JSON goes through here, never through a
writer's defaults (polars prints `2079.0`, Python `1e-07`, `%f` rounds the binary float).

- Integers and scaled integers reach the views as float64 (exact up to 2**53) or, when the float
  would not print back to the exact decimal, as the decimal text in the records' `text` column.
  The shortest float64 repr of an exactly representable decimal with at most 15 significant
  digits is that decimal, so both paths print the exact value.
- `F32` values are float64 copies of a float32 and print as the shortest decimal that reads back
  to the same float32.
- The columnar functions use Arrow's shortest round-trip cast (double-conversion) and hand the
  few texts it writes with an exponent, `-0`, `nan` or `inf` back to the scalar rules, so both
  paths give the same text (tests check this property).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from config import decimal_text
from config.errors import SunpmError
from store.events import JsonValue

#: The longest value text written. Real coefficients and raw values need a few dozen digits;
#: a coefficient like `1e999999999` (the definition-file syntax allows it) would otherwise
#: print a gigabyte or, rounded, print a wrong value. It is the bound every coefficient the
#: parser keeps meets with every raw value: a shorter one failed a server's session on the same
#: window for ever (an F64 of 5e-324 with `CoefB=1e900`).
MAX_DIGITS: Final = decimal_text.MAX_PLAIN_DIGITS
# Exact arithmetic: an operation that would round (or overflow) raises instead.
_EXACT: Final = Context(prec=MAX_DIGITS, Emax=MAX_EMAX, Emin=MIN_EMIN,
                        traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])
# Rounding to six places is wanted (ALARM values); only a result too long to hold fails.
_ROUNDING: Final = Context(prec=MAX_DIGITS, Emax=MAX_EMAX, Emin=MIN_EMIN,
                           traps=[InvalidOperation, Overflow])
_SIX_PLACES: Final = Decimal("0.000001")
# Arrow scalars made once: a Python literal passed to a compute function is converted on every
# call, and that conversion retries a failing optional import each time.
_MINUS_ZERO: Final = pa.scalar("-0", pa.string())
_FALSE: Final = pa.scalar(False, pa.bool_())
_F32_MANTISSA: Final = (1 << 23) - 1


class NumberTextError(SunpmError, ValueError):
    """A value text that is not a plain decimal (a corrupted event body or column)."""


def plain_decimal(value: Decimal) -> str:
    """`value` in plain notation: no exponent, no trailing zeros or point, `-0` as `0`."""
    try:
        return decimal_text.plain_decimal(value, max_digits=MAX_DIGITS)
    except decimal_text.DecimalTextError as err:
        raise NumberTextError(str(err)) from err


def _plain_from_repr(text: str) -> str:
    """Plain notation of a shortest-repr text (`1e-07`, `1.5e+16`, `2079.0`, `-0.0`)."""
    return plain_decimal(Decimal(text))


def format_float64(value: float) -> str:
    """Shortest decimal reading back to the same float64, in plain notation (§9.3)."""
    if not math.isfinite(value):
        raise NumberTextError(f"{value!r} is not a finite number")
    text = repr(value)
    if text.endswith(".0"):
        text = text[:-2]
        return "0" if text == "-0" else text
    if "e" in text:
        return _plain_from_repr(text)
    return text


def json_text(value: JsonValue | Mapping[str, JsonValue], *, indent: int | None = None) -> str:
    """Compact JSON, UTF-8 unescaped (as `store.events.dump_json`), every float in plain
    notation (§9.3, §14.2): a script's `1e20` is `100000000000000000000`, its `1.0` is `1`,
    where `json` writes `1e+20` and `1.0`. With `indent`, laid out as `json.dumps(indent=...)`
    (what `sunpm cmd` prints), the numbers the same."""
    parts: list[str] = []
    _json_parts(value, parts, indent, 0)
    return "".join(parts)


def _json_parts(value: object, parts: list[str], indent: int | None, level: int) -> None:
    if indent is None:
        gap = end = ""
        colon = ":"
    else:
        gap = "\n" + " " * (indent * (level + 1))
        end = "\n" + " " * (indent * level)
        colon = ": "
    if isinstance(value, float):
        parts.append(format_float64(value))
    elif isinstance(value, Mapping) and value:
        parts.append("{")
        for i, (key, member) in enumerate(value.items()):
            parts.append(("," if i else "") + gap + json.dumps(key, ensure_ascii=False) + colon)
            _json_parts(member, parts, indent, level + 1)
        parts.append(end + "}")
    elif isinstance(value, list) and value:
        parts.append("[")
        for i, member in enumerate(value):
            parts.append(("," if i else "") + gap)
            _json_parts(member, parts, indent, level + 1)
        parts.append(end + "]")
    elif isinstance(value, Mapping):
        parts.append("{}")
    else:
        parts.append(json.dumps(value, ensure_ascii=False))


def _to_float32(value: float) -> float:
    try:
        result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError as err:
        raise NumberTextError(f"{value!r} is outside the float32 range") from err
    return result


def _float32_bits(value: float) -> int:
    bits: int = struct.unpack("<I", struct.pack("<f", value))[0]
    return bits


def _float32_of_bits(bits: int) -> float:
    result: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    return result


def _float32_interval(target: float) -> tuple[Decimal, Decimal, bool]:
    """The decimals that read back to `target` (positive, finite): between the midpoints to its
    neighbours, the midpoints themselves included when its mantissa is even (ties to even)."""
    bits = _float32_bits(target)
    exact = Decimal(target)
    below = Decimal(_float32_of_bits(bits - 1))
    above = _float32_of_bits(bits + 1)
    # Above the largest float32 lies infinity: the interval ends half a step above it.
    upper = (_EXACT.subtract(_EXACT.multiply(exact, 2), below) if math.isinf(above)
             else Decimal(above))
    low = _EXACT.divide(_EXACT.add(exact, below), 2)
    high = _EXACT.divide(_EXACT.add(exact, upper), 2)
    return low, high, bits % 2 == 0


def format_float32(value: float) -> str:
    """Shortest decimal reading back to the same float32, in plain notation (§9.3).

    Read back exactly, not through a float64 (whose rounding could move a decimal across a
    float32 midpoint). Of the decimals of the fewest digits the nearest is taken; at a power of
    two the interval is twice as wide above as below, so that nearest one may fall outside while
    its upper neighbour is inside (2**-96 is `1.2621775e-29`, not `1.26217745e-29`).
    """
    if not math.isfinite(value):
        raise NumberTextError(f"{value!r} is not a finite number")
    target = _to_float32(value)
    if target == 0:
        return "0"
    magnitude = abs(target)
    low, high, even = _float32_interval(magnitude)
    exact = Decimal(magnitude)
    for digits in range(1, 10):
        nearest = Decimal(f"{magnitude:.{digits - 1}e}")
        unit = Decimal(1).scaleb(int(nearest.as_tuple().exponent))
        inside = [c for c in (nearest, nearest + unit, nearest - unit)
                  if low < c < high or (even and c in (low, high))]
        if inside:
            best = min(inside, key=lambda c: abs(c - exact))
            return plain_decimal(-best if target < 0 else best)
    raise AssertionError("9 significant digits always read back to a float32")  # pragma: no cover


def decimal_of(text: str) -> Decimal:
    """The exact decimal of a value text (plain or with exponent, as §1.1 reads numbers)."""
    try:
        value = Decimal(text)
    except InvalidOperation as err:
        raise NumberTextError(f"{text!r} is not a decimal number") from err
    if not value.is_finite():
        raise NumberTextError(f"{text!r} is not a finite number")
    return value


def scaled_text(raw_text: str, coef_a: Decimal, coef_b: Decimal) -> str:
    """`CoefA × raw + CoefB` exactly in decimal, plain notation (§9.3: `0.1 × 2305` → `230.5`)."""
    if coef_a == 1 and coef_b == 0:
        return plain_decimal(decimal_of(raw_text))
    raw = decimal_of(raw_text)
    try:
        scaled = decimal_text.scaled(coef_a, raw, coef_b)
    except decimal_text.DecimalTextError as err:
        raise NumberTextError(f"{coef_a} × {raw_text} + {coef_b} needs more than {MAX_DIGITS} "
                              f"digits; check the definition's CoefA and CoefB") from err
    return plain_decimal(scaled)


def alarm_text(raw_text: str) -> str:
    """ALARM `<value>` of a number: the exact decimal rounded half-even to six places, as `%f`.

    Rounds the decimal, not its binary float (`2.0000005` → `2.000000`); never `-0.000000`.
    """
    try:
        rounded = decimal_of(raw_text).quantize(_SIX_PLACES, rounding=ROUND_HALF_EVEN,
                                                context=_ROUNDING)
    except DecimalException as err:
        raise NumberTextError(f"{raw_text[:20]}… needs more than {MAX_DIGITS} digits") from err
    if rounded.is_zero():
        return "0.000000"
    return format(rounded, "f")


def clean_text(text: str) -> str:
    """A text value as written in files: `;`, CR and LF each become one space (§1.1)."""
    if ";" in text or "\r" in text or "\n" in text:
        return text.replace(";", " ").replace("\r", " ").replace("\n", " ")
    return text


# --------------------------------------------------------------------------- columnar

def _fix_column(texts: pa.Array, values: pa.Array, scalar: Callable[[float], str],
               also: pa.Array | None = None) -> pa.Array:
    # Texts Arrow's cast writes that §9.3 does not allow: exponents, negative zero, nan and
    # infinities (found on the values, cheaper than a text search). A literal search costs a
    # quarter of a regex.
    bad = pc.or_(pc.or_(pc.match_substring(texts, "e"), pc.equal(texts, _MINUS_ZERO)),
                 pc.invert(pc.is_finite(values)))
    if also is not None:
        bad = pc.or_(bad, also)
    bad = pc.fill_null(bad, _FALSE)
    if not pc.any(bad).as_py():
        return texts
    fixed = texts.to_pylist()
    raw = values.to_pylist()
    for pos in pc.indices_nonzero(bad).to_pylist():
        number = raw[pos]
        try:
            fixed[pos] = scalar(number)
        except NumberTextError:
            fixed[pos] = None  # nan, infinities: missing (docs/formats.md §8.3)
    return pa.array(fixed, pa.string())


def format_float64_array(values: pa.Array) -> pa.Array:
    """§9.3 text of each float64 (null stays null; nan and infinities become null: missing)."""
    values = values.cast(pa.float64())
    texts = pc.cast(values, pa.string())
    return _fix_column(texts, values, format_float64)


def format_float32_array(values: pa.Array) -> pa.Array:
    """§9.3 text of each value taken as a float32 (the F32 type), nulls kept; a value outside
    the float32 range, nan and infinities become null (missing)."""
    narrow = pc.cast(values, pa.float32(), safe=False)
    texts = pc.cast(narrow, pa.string())
    # Arrow's shortest text misses at some powers of two (see `format_float32`): those values,
    # a zero mantissa, go through the scalar rules too.
    mantissa = pc.bit_wise_and(narrow.view(pa.uint32()), pa.scalar(_F32_MANTISSA, pa.uint32()))
    return _fix_column(texts, narrow.cast(pa.float64()), format_float32,
                       also=pc.equal(mantissa, pa.scalar(0, pa.uint32())))

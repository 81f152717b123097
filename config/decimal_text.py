"""Exact decimal text shared by every package: plain notation (docs/formats.md §9.3) and the
scaled value `CoefA × raw + CoefB`.

A definition file may write any decimal literal as a coefficient, `1e999999999` included. The
parser keeps a coefficient only within `MAX_DIGITS` significant digits and an exponent within
±`MAX_EXPONENT` (`coefficient_fits`); within that bound `scaled` is exact for every raw value a
driver reads (integers up to 64 bits, float64, scale-factored decimals), and its plain text fits in
`MAX_PLAIN_DIGITS`. Beyond any bound these functions raise `DecimalTextError` instead of rounding
silently or writing a gigabyte.
"""

from __future__ import annotations

import re
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from typing import Final

from config.errors import SunpmError

__all__ = [
    "DECIMAL_SYNTAX", "INTEGER_SYNTAX", "MAX_DIGITS", "MAX_EXPONENT", "MAX_PLAIN_DIGITS",
    "DecimalTextError", "coefficient_fits", "plain_decimal", "read_decimal", "read_integer",
    "scaled",
]

#: docs/formats.md §1.1, the one number syntax of every file and message read: ASCII digits, an
#: optional `-`, at most one `.` (`5.`, `.5`), an optional exponent (`1E-05`). `Decimal()` and
#: `int()` alone also take `1_000`, full-width and Arabic-Indic digits, `+5`, ` 5 `,
#: `nan` and `Infinity`. One way only to match each text (no backtracking on long digit runs).
DECIMAL_SYNTAX: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
#: An integer of §1.1: an optional `-`, ASCII digits (leading zeros allowed).
INTEGER_SYNTAX: Final = re.compile(r"-?[0-9]+")

#: Significant digits a CoefA or CoefB may have (real ones have a handful).
MAX_DIGITS: Final = 1000
#: Largest |adjusted exponent| of a CoefA or CoefB (`1e1000`, `1e-1000`).
MAX_EXPONENT: Final = 1000
#: Longest plain text `plain_decimal` writes by default: the scaled value of any in-bound
#: coefficients and any float64 raw value spans less (1309 integer + 2339 fraction digits).
MAX_PLAIN_DIGITS: Final = 4000
# Precision far above what in-bound operands need; Inexact is trapped, so a result that would
# round raises rather than print a wrong value, and an absurd operand costs at most this much.
_SCALED: Final = Context(prec=3 * MAX_PLAIN_DIGITS, Emax=MAX_EMAX, Emin=MIN_EMIN,
                         traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])


class DecimalTextError(SunpmError, ValueError):
    """A decimal that cannot be written or computed exactly within the bounds."""


def _significant(value: Decimal) -> tuple[int, int]:
    """(significant digits, exponent of the last one) of a finite non-zero `value`; no rounding."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    trailing = len(digits) - len(("".join(map(str, digits))).rstrip("0"))
    return len(digits) - trailing, exponent + trailing


def coefficient_fits(value: Decimal) -> bool:
    """A CoefA/CoefB the parser keeps: finite, at most `MAX_DIGITS` significant digits and an
    exponent within ±`MAX_EXPONENT` (a zero's written exponent included: `0e-5000` does not)."""
    if not value.is_finite():
        return False
    if value.is_zero():
        exponent = value.as_tuple().exponent
        return isinstance(exponent, int) and -MAX_EXPONENT <= exponent <= MAX_EXPONENT
    digits, _ = _significant(value)
    return digits <= MAX_DIGITS and -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT


def plain_decimal(value: Decimal, *, max_digits: int = MAX_PLAIN_DIGITS) -> str:
    """`value` in plain notation: no exponent, no trailing zeros or point, `-0` as `0`
    (`Decimal("1E-7")` → `0.0000001`, `Decimal("2.0790E3")` → `2079`).

    Raises `DecimalTextError` for infinities, NaN and texts longer than `max_digits` digits.
    """
    if not value.is_finite():
        raise DecimalTextError(f"{value!s} has no plain decimal text")
    if value.is_zero():
        return "0"
    _, last = _significant(value)
    if max(value.adjusted() + 1, 1) + max(-last, 0) > max_digits:
        raise DecimalTextError(f"{value:.6e} needs more than {max_digits} digits in plain "
                               f"notation; check the definition's CoefA and CoefB")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def scaled(coef_a: Decimal, raw: Decimal, coef_b: Decimal) -> Decimal:
    """`coef_a × raw + coef_b`, exact (docs/formats.md §9.3: `0.1 × 2305` → `230.5`).

    Raises `DecimalTextError` when the exact result would need more than a few thousand digits
    (only with operands outside `coefficient_fits`).
    """
    try:
        return _SCALED.add(_SCALED.multiply(coef_a, raw), coef_b)
    except DecimalException as err:
        raise DecimalTextError(f"{coef_a:.6e} × {raw:.6e} + {coef_b:.6e} cannot be computed "
                               f"exactly; check the definition's CoefA and CoefB") from err


def read_decimal(text: str) -> Decimal | None:
    """The number `text` is in the syntax of §1.1 (`DECIMAL_SYNTAX`), None for any other
    text. An exponent beyond ±`MAX_EXPONENT` is no number a value can be (`1e999999999` would
    be an integer of a billion digits once converted)."""
    if not DECIMAL_SYNTAX.fullmatch(text):
        return None
    value = Decimal(text)
    return value if abs(value.adjusted()) <= MAX_EXPONENT else None


def read_integer(text: str, max_digits: int = 30) -> int | None:
    """The integer `text` is in the syntax of §1.1 (`INTEGER_SYNTAX`), None for any other text
    or one of more than `max_digits` significant digits (never converted: `int()` of a line of
    digits costs quadratic time)."""
    if not INTEGER_SYNTAX.fullmatch(text):
        return None
    significant = text.lstrip("-").lstrip("0")
    if len(significant) > max_digits:
        return None
    return int(significant or "0") * (-1 if text.startswith("-") else 1)

"""config.decimal_text: plain notation, the coefficient bound and the exact scaled value."""

from __future__ import annotations

from decimal import Context, Decimal, Inexact

import pytest
from hypothesis import given
from hypothesis import strategies as st

import config
from config.decimal_text import (
    MAX_DIGITS,
    MAX_EXPONENT,
    MAX_PLAIN_DIGITS,
    DecimalTextError,
    coefficient_fits,
    plain_decimal,
    scaled,
)

HEAD = "modbusRTU;Meter;ACME;M\n"


@pytest.mark.parametrize(("value", "text"), [
    ("1E-7", "0.0000001"), ("2.0790E3", "2079"), ("-0.000", "0"), ("1.500", "1.5"),
    ("-12.340", "-12.34"), ("1E+3", "1000"), ("0E-5000", "0"), ("18446744073709551615",
                                                                 "18446744073709551615"),
])
def test_plain_notation(value: str, text: str) -> None:
    assert plain_decimal(Decimal(value)) == text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e4000", "1e-4001"])
def test_no_plain_text_is_our_error(value: str) -> None:
    with pytest.raises(DecimalTextError):
        plain_decimal(Decimal(value))


def test_plain_length_limit_counts_digits_not_written_zeros() -> None:
    assert plain_decimal(Decimal("1." + "0" * 5000)) == "1"
    assert len(plain_decimal(Decimal(10) ** 999, max_digits=1000)) == 1000
    with pytest.raises(DecimalTextError, match="1000 digits"):
        plain_decimal(Decimal("1e1000"), max_digits=1000)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-10**30,
                   max_value=10**30))
def test_plain_text_reads_back_to_the_same_value(value: Decimal) -> None:
    text = plain_decimal(value)
    assert Decimal(text) == value and "E" not in text.upper()
    assert not text.startswith("-0") or text.startswith("-0.")


@pytest.mark.parametrize(("value", "fits"), [
    ("1e999999999", False), ("1e1000", True), ("1e1001", False), ("1e-1000", True),
    ("1e-1001", False), ("9" * MAX_DIGITS, True), ("9" * (MAX_DIGITS + 1), False),
    ("1" + "0" * 500, True), ("0." + "1" * MAX_DIGITS, True), ("0e-1000", True),
    ("0e-5000", False), ("Infinity", False),
])
def test_coefficient_bound(value: str, fits: bool) -> None:
    assert coefficient_fits(Decimal(value)) is fits


def test_scaled_is_exact_at_the_extremes_of_the_bound() -> None:
    wide = Context(prec=20000, traps=[Inexact])
    coef_a = Decimal("9" * MAX_DIGITS).scaleb(-MAX_EXPONENT - MAX_DIGITS + 1)
    for raw in (Decimal("5e-324"), Decimal("1.7976931348623157e308"),
                Decimal(-(2**63)), Decimal(2**64 - 1)):
        for coef_b in (Decimal("1e1000"), Decimal("-1e-1000"), Decimal(0)):
            result = scaled(coef_a, raw, coef_b)
            assert result == wide.add(wide.multiply(coef_a, raw), coef_b)
            assert len(plain_decimal(result)) <= MAX_PLAIN_DIGITS + 2   # sign and point
    assert scaled(Decimal("0.1"), Decimal(2305), Decimal(0)) == Decimal("230.5")


def test_scaled_beyond_any_bound_is_our_error_not_a_rounded_value() -> None:
    with pytest.raises(DecimalTextError, match="CoefA"):
        scaled(Decimal("1e999999999"), Decimal(2305), Decimal("1e-999999999"))


@pytest.mark.parametrize("coef", ["1e999999999", "1e1001", "1e-1001", "9" * 1001,
                                  "0e-5000", "1." + "1" * 1000])
def test_parser_falls_back_to_the_default_for_an_absurd_coefficient(coef: str) -> None:
    data = (HEAD + f"1;3;1;U16;;v;;{coef};{coef};;4\n").encode()
    parsed = config.parse_definition(data, "x.csv")
    variable = parsed.value.variables[0]
    assert (variable.coef_a, variable.coef_b) == (Decimal(1), Decimal(0))
    assert (variable.coef_a_text, variable.coef_b_text) == ("1", "0")
    shown = coef if len(coef) <= 20 else f"{coef[:20]}..."
    assert [str(w) for w in parsed.warnings] == [
        f"x.csv:2: {col}: '{shown}' has more than 1000 significant digits or an exponent "
        f"outside ±1000; default {default} used" for col, default in (("CoefA", 1), ("CoefB", 0))
    ]


def test_parser_keeps_a_long_coefficient_within_the_bound() -> None:
    coef = "0." + "3" * 999
    data = (HEAD + f"1;3;1;U16;;v;;{coef};1e-1000;;4\n").encode()
    parsed = config.parse_definition(data, "x.csv")
    assert parsed.warnings == ()
    assert parsed.value.variables[0].coef_a == Decimal(coef)
    assert parsed.value.variables[0].coef_b_text == "1e-1000"

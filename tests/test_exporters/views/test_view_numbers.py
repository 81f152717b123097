"""Value text of docs/formats.md §9.3: scalar rules, properties, and the columnar path."""

from __future__ import annotations

import math
import struct
from decimal import Decimal, localcontext

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.decimal_text import coefficient_fits
from exporters.views.numbers import (
    NumberTextError,
    alarm_text,
    format_float32,
    format_float32_array,
    format_float64,
    format_float64_array,
    plain_decimal,
    scaled_text,
)

floats64 = st.floats(allow_nan=False, allow_infinity=False)
floats32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None,
                       min_value=Decimal("-1e30"), max_value=Decimal("1e30"))


def _f32(value: float) -> float:
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def _is_plain(text: str) -> bool:
    body = text.removeprefix("-")
    return (body.replace(".", "", 1).isdigit() and "e" not in text.lower()
            and text != "-0" and not (text.endswith("0") and "." in text)
            and not text.endswith("."))


@pytest.mark.parametrize(("value", "text"), [
    (2079.0, "2079"), (1e-7, "0.0000001"), (-0.0, "0"), (12.34, "12.34"), (2078.8, "2078.8"),
    (1e22, "10000000000000000000000"), (1.5e16, "15000000000000000"), (-7.0, "-7"),
    (18446744073709551615.0, "18446744073709552000"), (0.1 + 0.2, "0.30000000000000004"),
])
def test_float64_examples(value: float, text: str) -> None:
    assert format_float64(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (1.100000023841858, "1.1"), (0.10000000149011612, "0.1"), (-0.0, "0"),
    (16777216.0, "16777216"), (3.4028234663852886e38, "340282350000000000000000000000000000000"),
    (1e-45, "0.000000000000000000000000000000000000000000001"),
])
def test_float32_examples(value: float, text: str) -> None:
    assert format_float32(value) == text


@settings(max_examples=500, deadline=None)
@given(floats64)
def test_float64_text_parses_back_and_is_plain(value: float) -> None:
    text = format_float64(value)
    assert float(text) == value
    assert _is_plain(text), text


@settings(max_examples=500, deadline=None)
@given(floats32)
def test_float32_text_parses_back_and_is_shortest(value: float) -> None:
    text = format_float32(value)
    assert _f32(float(text)) == value
    assert _is_plain(text), text
    digits = len(text.lstrip("-").replace(".", "").strip("0"))
    if digits > 1:  # one digit fewer never reads back (shortest)
        assert _f32(float(f"{value:.{digits - 1}g}")) != value or value == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), floats64, st.just(math.nan), st.just(math.inf)),
                max_size=50))
def test_columnar_float64_matches_scalar(values: list[float | None]) -> None:
    expected = [None if v is None or not math.isfinite(v) else format_float64(v) for v in values]
    assert format_float64_array(pa.array(values, pa.float64())).to_pylist() == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), floats32), max_size=50))
def test_columnar_float32_matches_scalar(values: list[float | None]) -> None:
    expected = [None if v is None else format_float32(v) for v in values]
    assert format_float32_array(pa.array(values, pa.float64())).to_pylist() == expected


@settings(max_examples=300, deadline=None)
@given(decimals)
def test_plain_decimal_is_exact(value: Decimal) -> None:
    text = plain_decimal(value)
    assert Decimal(text) == value
    assert _is_plain(text), text


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**64 - 1),
       st.integers(min_value=-10, max_value=10))
def test_scaled_integers_are_exact(raw: int, sf: int) -> None:
    raw_text = plain_decimal(Decimal(raw).scaleb(sf))
    assert Decimal(raw_text) == Decimal(raw).scaleb(sf)
    coef_a, coef_b = Decimal("0.1"), Decimal("-3.5")
    with localcontext(prec=200):  # the reference must not round either
        expected = coef_a * Decimal(raw).scaleb(sf) + coef_b
        assert Decimal(scaled_text(raw_text, coef_a, coef_b)) == expected


@pytest.mark.parametrize(("raw", "a", "b", "text"), [
    ("2305", "0.1", "0", "230.5"), ("-1520", "0.1", "0", "-152"), ("987654", "0.1", "0", "98765.4"),
    ("12.34", "1", "0", "12.34"), ("1E-7", "1", "0", "0.0000001"), ("5", "0", "0", "0"),
    ("18446744073709551615", "1", "0", "18446744073709551615"),
])
def test_scaled_text_examples(raw: str, a: str, b: str, text: str) -> None:
    assert scaled_text(raw, Decimal(a), Decimal(b)) == text


@pytest.mark.parametrize(("raw", "text"), [
    ("3", "3.000000"), ("0", "0.000000"), ("-0.0000004", "0.000000"), ("2.0000005", "2.000000"),
    ("2.0000015", "2.000002"), ("-1.5", "-1.500000"), ("0.1234565", "0.123456"),
])
def test_alarm_text_rounds_half_even(raw: str, text: str) -> None:
    assert alarm_text(raw) == text


@settings(max_examples=300, deadline=None)
@given(decimals)
def test_alarm_text_is_the_nearest_six_place_decimal(value: Decimal) -> None:
    text = alarm_text(plain_decimal(value))
    assert len(text.split(".")[1]) == 6
    assert abs(Decimal(text) - value) <= Decimal("0.0000005")
    assert text != "-0.000000"


@pytest.mark.parametrize("bad", ["abc", "nan", "inf", "1,5", ""])
def test_bad_value_text_is_our_error(bad: str) -> None:
    with pytest.raises(NumberTextError):
        alarm_text(bad)
    with pytest.raises(NumberTextError):
        scaled_text(bad, Decimal("0.1"), Decimal(0))


def test_scaling_is_exact_however_far_apart_the_coefficients_are() -> None:
    # 2305e300 + 1e-300 has 605 significant digits: every one is kept (§9.3 "exactly").
    text = scaled_text("2305", Decimal("1e300"), Decimal("1e-300"))
    with localcontext(prec=1000):
        assert Decimal(text) == Decimal("2305e300") + Decimal("1e-300")
    assert len(text) == 605


@pytest.mark.parametrize(("raw", "a", "b"), [
    ("2305", "1e999999999", "0"),          # decimal.Overflow escaped
    ("2305", "1e5000", "0"),                # a 5,004-digit text
    ("2305", "1e3000", "1e-3000"),          # 6,004 digits, silently rounded at 200 once
])
def test_absurd_coefficients_are_our_error_not_a_huge_or_rounded_text(
        raw: str, a: str, b: str) -> None:
    with pytest.raises(NumberTextError, match="digits"):
        scaled_text(raw, Decimal(a), Decimal(b))


@pytest.mark.parametrize(("raw", "a", "b"), [
    ("5e-324", "1", "1e900"),               # the smallest float64 beside the largest CoefB
    ("1.7976931348623157e308", "1e1000", "-1e-1000"),
    ("2305", "1e600", "1e-600"),
])
def test_every_coefficient_the_parser_keeps_gives_a_value_text(raw: str, a: str,
                                                               b: str) -> None:
    # The parser keeps coefficients within ±1e1000 and 1,000 digits (docs/formats.md §8.1): a
    # value of theirs that the views could not write failed its window at every session.
    assert coefficient_fits(Decimal(a)) and coefficient_fits(Decimal(b))
    text = scaled_text(raw, Decimal(a), Decimal(b))
    with localcontext() as exact:
        exact.prec, exact.Emin, exact.Emax = 10_000, -10_000, 10_000
        assert Decimal(text) == Decimal(a) * Decimal(raw) + Decimal(b)


def test_alarm_text_of_a_huge_value_is_our_error() -> None:
    assert alarm_text("1e300") == "1" + "0" * 300 + ".000000"
    with pytest.raises(NumberTextError, match="digits"):
        alarm_text("1e5000")


def test_columnar_non_finite_and_out_of_range_values_are_missing() -> None:
    values = pa.array([math.nan, math.inf, -math.inf, 1e39, 1.5], pa.float64())
    assert format_float32_array(values).to_pylist() == [None, None, None, None, "1.5"]
    assert format_float64_array(values).to_pylist() == [None, None, None,
                                                        "1000000000000000000000000000000000000000",
                                                        "1.5"]


def test_non_finite_floats_are_refused_by_scalar_rules() -> None:
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(NumberTextError):
            format_float64(value)
        with pytest.raises(NumberTextError):
            format_float32(value)


def _f32_neighbour(value: float, step: int) -> float:
    bits: int = struct.unpack("<I", struct.pack("<f", value))[0]
    result: float = struct.unpack("<f", struct.pack("<I", bits + step))[0]
    return result


def _reads_back_f32(text: str, value: float) -> bool:
    """Exactly, with no float64 in between: the decimal lies inside `value`'s rounding interval
    (a midpoint rounds to the even mantissa)."""
    with localcontext() as ctx:
        ctx.prec = 200
        exact, number = Decimal(value), Decimal(text)
        low = (exact + Decimal(_f32_neighbour(value, -1))) / 2
        high = (exact + Decimal(_f32_neighbour(value, 1))) / 2
    even = struct.unpack("<I", struct.pack("<f", value))[0] % 2 == 0
    return low < number < high or (even and number in (low, high))


def _shorter_exists(value: float, digits: int) -> bool:
    """Some decimal of `digits - 1` significant digits reads back to `value`."""
    if digits <= 1:
        return False
    base = Decimal(f"{value:.{digits - 2}e}")
    unit = Decimal((0, (1,), base.as_tuple().exponent))
    return any(_reads_back_f32(str(c), value) for c in (base - unit, base, base + unit))


# Powers of two have a rounding interval twice as wide above as below, so the nearest decimal
# of n digits may miss it while another of n digits falls inside (2**-96: 1.2621775e-29).
_F32_POWERS_OF_TWO = [2.0 ** e for e in range(-126, 128)]


def test_float32_powers_of_two_print_shortest() -> None:
    for value in _F32_POWERS_OF_TWO:
        text = format_float32(value)
        assert _reads_back_f32(text, value), (value, text)
        digits = len(text.replace(".", "").strip("0"))
        assert not _shorter_exists(value, digits), (value, text)
    assert format_float32(2.0 ** -96) == "0.000000000000000000000000000012621775"


def test_columnar_float32_powers_of_two_match_scalar() -> None:
    values = [*_F32_POWERS_OF_TWO, *(-v for v in _F32_POWERS_OF_TWO), 1.5, None]
    expected = [None if v is None else format_float32(v) for v in values]
    assert format_float32_array(pa.array(values, pa.float64())).to_pylist() == expected

"""Decoding and encoding against hand-checked register words (docs/formats.md §8.3)."""

from __future__ import annotations

import math
import struct
from decimal import Context, Decimal, Inexact

import pytest
from _modbus_defs import var
from hypothesis import given
from hypothesis import strategies as st

from config.model import ByteOrder, DataType, ModbusPoint, Quality, RegisterKind
from pipeline.drivers._base import Reading
from pipeline.drivers.modbus import codec

B, W, WB, BE = ByteOrder.SWAP_BYTES, ByteOrder.SWAP_WORDS, ByteOrder.SWAP_BOTH, ByteOrder.BIG_ENDIAN


def point(data_type: DataType, order: ByteOrder = BE, **kw: int) -> ModbusPoint:
    return ModbusPoint(kind=RegisterKind.HOLDING_REGISTER, address=40000, data_type=data_type,
                       byte_order=order, **kw)


def words(hextext: str) -> list[int]:
    return [int(w, 16) for w in hextext.split()]


# Every row of the spec's table, then the cases the table leaves implicit.
SPEC_TABLE = [
    (point(DataType.U16), "04D2", 1234),
    (point(DataType.U16, B), "D204", 1234),
    (point(DataType.I16), "FF85", -123),
    (point(DataType.U32), "0001 E240", 123456),
    (point(DataType.U32, W), "E240 0001", 123456),
    (point(DataType.U32, B), "0100 40E2", 123456),
    (point(DataType.U32, WB), "40E2 0100", 123456),
    (point(DataType.I32), "FFFE 1DC0", -123456),
    (point(DataType.U64, W), "E240 0001 0000 0000", 123456),
    (point(DataType.I64), "FFFF FFFF FFFE 1DC0", -123456),
    (point(DataType.F32), "3F8C CCCD", 1.1),
    (point(DataType.F32, W), "CCCD 3F8C", 1.1),
    (point(DataType.F64), "4029 0000 0000 0000", 12.5),
    (point(DataType.U8, byte=0), "12AB", 18),
    (point(DataType.U8, byte=1), "12AB", 171),
    (point(DataType.I8, byte=1), "12AB", -85),
    (point(DataType.BITS, bit=4, nbits=8), "0AB0", 171),
    (point(DataType.BITS, bit=1), "0002", 1),
    (point(DataType.STRING, string_bytes=8), "534D 4100 0000 0000", "SMA"),
    (point(DataType.IP), "C0A8 0A17", "192.168.10.23"),
    (point(DataType.MAC), "0050 C2AB CDEF", "00:50:C2:AB:CD:EF"),
]

MORE = [
    (point(DataType.U16, W), "04D2", 1234),                    # _W on one register: nothing
    (point(DataType.I16, B), "85FF", -123),
    (point(DataType.I32, W), "1DC0 FFFE", -123456),
    (point(DataType.I32, WB), "C01D FEFF", -123456),
    (point(DataType.U64), "FFFF FFFF FFFF FFFF", 18446744073709551615),
    (point(DataType.U64, B), "0000 0000 0100 40E2", 123456),
    (point(DataType.U64, WB), "40E2 0100 0000 0000", 123456),
    (point(DataType.I64, W), "1DC0 FFFE FFFF FFFF", -123456),
    (point(DataType.F32, B), "8C3F CDCC", 1.1),
    (point(DataType.F32, WB), "CDCC 8C3F", 1.1),
    (point(DataType.F64, W), "0000 0000 0000 4029", 12.5),
    (point(DataType.F64, B), "2940 0000 0000 0000", 12.5),
    (point(DataType.U8, B, byte=0), "12AB", 171),              # _B picks the other byte
    (point(DataType.U8, W, byte=1), "12AB", 171),              # _W changes nothing on 8 bits
    (point(DataType.I8, B, byte=1), "12AB", 18),
    (point(DataType.I8, byte=0), "80FF", -128),
    (point(DataType.BITS), "0AB0", 0x0AB0),                    # plain <reg>: all 16 bits
    (point(DataType.BITS, bit=15), "8000", 1),
    (point(DataType.BITS, bit=0, nbits=16), "FFFF", 65535),
    (point(DataType.STRING, string_bytes=3), "534D 4100", "SMA"),
    (point(DataType.STRING, string_bytes=6), "4142 2020 2000", "AB"),  # trailing spaces removed
    (point(DataType.STRING, B, string_bytes=4), "4D53 0041", "SMA"),
    (point(DataType.STRING, string_bytes=2), "C328", "\ufffd("),        # bad UTF-8 -> U+FFFD
    (point(DataType.STRING, string_bytes=4), "C3A9 7465", "\u00e9te"),
    (point(DataType.IP, W), "0A17 C0A8", "192.168.10.23"),
    (point(DataType.IPV6), "2001 0DB8 0000 0000 0000 0000 0000 0001", "2001:db8::1"),
    (point(DataType.IPV6), "FE80 0000 0000 0000 0250 C2FF FEAB CDEF", "fe80::250:c2ff:feab:cdef"),
    (point(DataType.MAC, B), "5000 ABC2 EFCD", "00:50:C2:AB:CD:EF"),
]


@pytest.mark.parametrize(("pt", "wire", "raw"), SPEC_TABLE + MORE,
                         ids=[f"{p.data_type}{p.byte_order}-{w}" for p, w, _ in SPEC_TABLE + MORE])
def test_decodes_hand_checked_words(pt: ModbusPoint, wire: str, raw: object) -> None:
    value = codec.decode_point(pt, words(wire))
    assert value == raw and type(value) is type(raw)


def test_f32_is_the_float_that_prints_shortest() -> None:
    value = codec.decode_point(point(DataType.F32), words("3F8C CCCD"))
    assert repr(value) == "1.1"
    assert codec.value_text(value) == "1.1"


@pytest.mark.parametrize("kind", [RegisterKind.COIL, RegisterKind.DISCRETE_INPUT])
def test_bits_decode_as_zero_or_one(kind: RegisterKind) -> None:
    pt = ModbusPoint(kind=kind, address=3, data_type=None)
    assert codec.decode_point(pt, [1]) == 1 and codec.decode_point(pt, [0]) == 0


def test_wrong_word_count_is_a_decode_error() -> None:
    v = var(1, 3, 0, DataType.U32)
    assert codec.decode_variable(v, [1]) == Reading(None, Quality.DECODE_ERROR)


# --------------------------------------------------------------------------- scale factors

def sf(word: int) -> Reading:
    return Reading(word, Quality.GOOD)


@pytest.mark.parametrize(("factor", "expected"), [
    (0xFFFE, Decimal("12.34")), (0x0003, Decimal(1234000)), (0, Decimal(1234)),
    (0xFFF6, Decimal("0.0000001234")), (10, Decimal(12340000000000)),
])
def test_scale_factor_gives_exact_decimal(factor: int, expected: Decimal) -> None:
    reading = codec.decode_variable(var(1, 3, 0, sf=2), [0x04D2], sf(factor))
    assert reading.quality is Quality.GOOD
    assert reading.value == expected and isinstance(reading.value, Decimal)
    assert codec.value_text(reading.value) == codec.value_text(expected)


def test_scale_factor_of_i16_variable_is_signed() -> None:
    reading = codec.decode_variable(var(1, 3, 0, sf=2), [1], Reading(-2, Quality.GOOD))
    assert reading == Reading(Decimal("0.01"), Quality.GOOD)


@pytest.mark.parametrize("factor", [0x8000, 11, 0xFFF5, 0x7FFF])
def test_invalid_scale_factor_is_quality_6(factor: int) -> None:
    assert codec.decode_variable(var(1, 3, 0, sf=2), [5], sf(factor)) == \
        Reading(None, Quality.NOT_IMPLEMENTED)


@pytest.mark.parametrize(("data_type", "wire"), [
    (DataType.U16, "FFFF"), (DataType.I16, "8000"), (DataType.U32, "FFFF FFFF"),
    (DataType.I32, "8000 0000"), (DataType.U64, "FFFF FFFF FFFF FFFF"),
    (DataType.I64, "8000 0000 0000 0000"),
])
def test_not_implemented_pattern_with_info4_is_quality_6(data_type: DataType, wire: str) -> None:
    with_sf = var(1, 3, 0, data_type, sf=2)
    without = var(1, 3, 0, data_type)
    assert codec.decode_variable(with_sf, words(wire), sf(0)) == \
        Reading(None, Quality.NOT_IMPLEMENTED)
    # Without Info4 no pattern is special.
    assert codec.decode_variable(without, words(wire)).quality is Quality.GOOD


@pytest.mark.parametrize("failed", [Quality.TIMEOUT, Quality.EXCEPTION, Quality.BAD_FRAME])
def test_failed_scale_factor_gives_its_quality(failed: Quality) -> None:
    assert codec.decode_variable(var(1, 3, 0, sf=2), [5], Reading(None, failed)) == \
        Reading(None, failed)


@pytest.mark.parametrize("wire", ["7FC0 0000", "7F80 0000", "FF80 0000"])
def test_nan_and_infinities_are_quality_6(wire: str) -> None:
    assert codec.decode_variable(var(1, 3, 0, DataType.F32), words(wire)) == \
        Reading(None, Quality.NOT_IMPLEMENTED)


# --------------------------------------------------------------------------- writes

def test_scaled_write_is_exact_and_rounds_half_even() -> None:
    v = var(1, 3, 0, coef_a="0.1", coef_b="0")
    raw = codec.scaled_to_raw(v, Decimal("230.5"))
    assert raw == Decimal(2305)
    assert codec.encode_value(point(DataType.U16), Decimal("2.5")) == [2]
    assert codec.encode_value(point(DataType.U16), Decimal("3.5")) == [4]
    assert codec.encode_value(point(DataType.I16), Decimal("-2.5")) == [0xFFFE]


def test_raw_value_is_divided_by_the_scale_factor() -> None:
    assert codec.raw_to_register_value(Decimal("12.34"), -2) == Decimal(1234)
    assert codec.encode_value(point(DataType.U16),
                              codec.raw_to_register_value(Decimal("12.345"), -2)) == [1234]


@pytest.mark.parametrize(("pt", "value", "message"), [
    (point(DataType.U16), Decimal(150000), "150000 is out of range for U16"),
    (point(DataType.I16), Decimal(-32769), "-32769 is out of range for I16"),
    (point(DataType.U32), Decimal(-1), "-1 is out of range for U32"),
    (point(DataType.STRING, string_bytes=4), "hello", "text longer than 4 bytes"),
    (point(DataType.BITS, bit=1), Decimal(1), "type Bits cannot be written"),
    (point(DataType.U8, byte=0), Decimal(1), "type U8 cannot be written"),
    (point(DataType.I8, byte=0), Decimal(1), "type I8 cannot be written"),
    (point(DataType.IP), "10.0.0.1", "type IP cannot be written"),
    (point(DataType.IPV6), "::1", "type IPV6 cannot be written"),
    (point(DataType.MAC), "00:00:00:00:00:00", "type MAC cannot be written"),
    (ModbusPoint(kind=RegisterKind.INPUT_REGISTER, address=0, data_type=DataType.U16),
     Decimal(1), "input registers are read-only"),
    (ModbusPoint(kind=RegisterKind.DISCRETE_INPUT, address=0, data_type=None),
     Decimal(1), "discrete inputs are read-only"),
    (ModbusPoint(kind=RegisterKind.COIL, address=0, data_type=None),
     Decimal(2), "2 is out of range for a coil (0 or 1)"),
])
def test_write_refusals_read_as_the_spec_words_them(pt: ModbusPoint, value: object,
                                                    message: str) -> None:
    with pytest.raises(codec.EncodeError) as err:
        codec.encode_value(pt, value)  # type: ignore[arg-type]
    assert str(err.value) == message


@pytest.mark.parametrize("text", ["\uff11\uff12", "1_2", "\u0663", "+5", "nan", "Infinity",
                                  "0x10"])
def test_a_written_text_is_a_number_in_ascii_digits_only(text: str) -> None:
    """A command's or the API's `"value"` of full-width digits was written to the device as
    12: the text of a number follows docs/formats.md §1.1 as every number read does."""
    pt = ModbusPoint(kind=RegisterKind.HOLDING_REGISTER, address=0, data_type=DataType.U16)
    with pytest.raises(codec.EncodeError, match=r"is not a number$"):
        codec.encode_value(pt, text)
    assert codec.encode_value(pt, " 12 ") == [12]


def test_scaled_write_with_coef_a_zero_is_refused() -> None:
    with pytest.raises(codec.EncodeError):
        codec.scaled_to_raw(var(1, 3, 0, coef_a="0"), Decimal(1))


def test_a_write_past_the_decimal_range_is_refused_not_raised() -> None:
    """A value the decimal context cannot scale (a text `1e999999999` from the API or a
    command) is a refusal of the write, never an ArithmeticError out of the writer."""
    huge = Decimal("1e999999999")
    with pytest.raises(codec.EncodeError, match=r"^1\.000000e\+999999999 is out of range$"):
        codec.scaled_to_raw(var(1, 3, 0, coef_a="0.1"), huge)
    with pytest.raises(codec.EncodeError, match=r"^1\.000000e\+999999999 is out of range$"):
        codec.raw_to_register_value(huge, -2)


def test_string_write_is_nul_padded() -> None:
    assert codec.encode_value(point(DataType.STRING, string_bytes=8), "SMA") == \
        words("534D 4100 0000 0000")
    assert codec.encode_value(point(DataType.STRING, B, string_bytes=4), "SMA") == \
        words("4D53 0041")


def test_scaled_value_is_exact_from_the_raw_text() -> None:
    v = var(1, 3, 0, coef_a="0.1", coef_b="0")
    assert codec.scaled_value(v, 2305) == Decimal("230.5")
    assert codec.value_text(codec.scaled_value(var(2, 3, 0, coef_a="0.1"), 1.1)) == "0.11"
    assert codec.value_text(codec.scaled_value(var(3, 3, 0, coef_b="-0.5"), Decimal(1))) \
        == "0.5"


def test_scaled_value_is_exact_for_coefficients_at_the_parser_bound() -> None:
    # 1000 significant digits and an exponent of 1000 are still kept by the parser: nothing
    # may round (60 digits did), and the text is plain.
    coef_a, coef_b, raw = "0." + "9" * 999 + "7", "1e1000", 18446744073709551615
    wide = Context(prec=5000, traps=[Inexact])
    expected = wide.add(wide.multiply(Decimal(coef_a), Decimal(raw)), Decimal(coef_b))
    text = codec.value_text(codec.scaled_value(var(4, 3, 0, coef_a=coef_a, coef_b=coef_b), raw))
    assert "E" not in text and Decimal(text) == expected
    assert len(text) == 1001 + 1 + 1000


# --------------------------------------------------------------------------- round trips

INT_RANGES = {
    DataType.U16: (0, 0xFFFF), DataType.I16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFFFFFF), DataType.I32: (-0x80000000, 0x7FFFFFFF),
    DataType.U64: (0, 2**64 - 1), DataType.I64: (-(2**63), 2**63 - 1),
}
ORDERS = st.sampled_from(list(ByteOrder))


@st.composite
def int_cases(draw: st.DrawFn) -> tuple[ModbusPoint, int]:
    data_type = draw(st.sampled_from(list(INT_RANGES)))
    low, high = INT_RANGES[data_type]
    return point(data_type, draw(ORDERS)), draw(st.integers(low, high))


@given(int_cases())
def test_integers_round_trip(case: tuple[ModbusPoint, int]) -> None:
    pt, value = case
    encoded = codec.encode_value(pt, value)
    assert len(encoded) == pt.register_count
    assert codec.decode_point(pt, encoded) == value


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), ORDERS)
def test_f32_round_trips_to_the_same_float32(value: float, order: ByteOrder) -> None:
    pt = point(DataType.F32, order)
    decoded = codec.decode_point(pt, codec.encode_value(pt, value))
    assert isinstance(decoded, float)
    assert struct.pack(">f", decoded) == struct.pack(">f", value)
    assert len(repr(decoded)) <= len(repr(value)) or decoded == value


@given(st.floats(allow_nan=False, allow_infinity=False), ORDERS)
def test_f64_round_trips(value: float, order: ByteOrder) -> None:
    pt = point(DataType.F64, order)
    assert codec.decode_point(pt, codec.encode_value(pt, value)) == value


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=20), ORDERS)
def test_strings_round_trip(text: str, order: ByteOrder) -> None:
    text = text.rstrip(" ")
    size = max(1, len(text.encode()))
    pt = point(DataType.STRING, order, string_bytes=size)
    assert codec.decode_point(pt, codec.encode_value(pt, text)) == text


@given(st.integers(-(2**15), 2**16 - 1), st.integers(-10, 10))
def test_scaled_raw_round_trips_through_write(v: int, factor: int) -> None:
    data_type = DataType.I16 if v < 0 else DataType.U16
    raw = codec.apply_scale(v, factor)
    words_ = codec.encode_value(point(data_type), codec.raw_to_register_value(raw, factor))
    assert codec.decode_point(point(data_type), words_) == v


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8))
def test_decoding_arbitrary_words_never_crashes(ws: list[int]) -> None:
    for data_type in DataType:
        v = var(1, 3, 0, data_type, string_bytes=2 * len(ws) if data_type is DataType.STRING
                else None)
        reading = codec.decode_variable(v, ws)
        assert reading.quality in (Quality.GOOD, Quality.DECODE_ERROR, Quality.NOT_IMPLEMENTED)
        if isinstance(reading.value, float):
            assert math.isfinite(reading.value)


def test_f32_near_its_maximum_does_not_overflow_when_shortened() -> None:
    value = struct.unpack(">f", struct.pack(">f", 3.4025001647762064e+38))[0]
    pt = point(DataType.F32)
    decoded = codec.decode_point(pt, codec.encode_value(pt, value))
    assert struct.pack(">f", decoded) == struct.pack(">f", value)


WRITABLE = [point(t) for t in (DataType.U16, DataType.I16, DataType.U32, DataType.I32,
                               DataType.U64, DataType.I64, DataType.F32, DataType.F64)] + \
    [point(DataType.STRING, string_bytes=6),
     ModbusPoint(kind=RegisterKind.COIL, address=0, data_type=None)]


@given(st.sampled_from(WRITABLE),
       st.one_of(st.decimals(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                 st.integers(-(2**70), 2**70), st.floats()))
def test_encoding_anything_gives_words_or_encode_error(pt: ModbusPoint, value: object) -> None:
    try:
        out = codec.encode_value(pt, value)  # type: ignore[arg-type]
    except codec.EncodeError:
        return
    assert len(out) == pt.register_count and all(0 <= w <= 0xFFFF for w in out)


@pytest.mark.parametrize("value", [Decimal("1e30"), Decimal("-9.5e38"), Decimal("1e400"),
                                   Decimal("NaN"), Decimal("-Infinity"), "1e5000"])
def test_huge_or_invalid_numbers_are_refused_not_crashing(value: object) -> None:
    with pytest.raises(codec.EncodeError):
        codec.encode_value(point(DataType.U64), value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("exponent", "text"), [
    (-96, "1.2621775e-29"), (87, "1.5474251e+26"), (90, "1.2379401e+27"), (24, "16777216.0"),
])
def test_f32_power_of_two_prints_shortest_where_the_nearest_decimal_misses(
        exponent: int, text: str) -> None:
    # A power of two's rounding interval is twice as wide above it as below: of the 8-digit
    # decimals, the nearest falls below the interval while its upper neighbour reads back.
    pt = point(DataType.F32)
    value = codec.decode_point(pt, codec.encode_value(pt, 2.0 ** exponent))
    assert repr(value) == text
    assert struct.pack(">f", value) == struct.pack(">f", 2.0 ** exponent)

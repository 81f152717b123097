"""Register words <-> raw values (docs/formats.md §8.3).

Decode order is the spec's: registers as received, `_B` swaps the bytes of each register, `_W`
reverses the value's register order, then the words are read big-endian. Both steps are their own
inverse and commute, so encoding applies the same two steps to the big-endian words.

Raw values are exact: integer types give `int` (U64 too), F32 gives the float whose `repr` is the
shortest decimal that reads back to the same float32 (`1.1`, not `1.100000023841858`), a SunSpec
scale factor gives the exact `Decimal` `v × 10^sf`.
"""

from __future__ import annotations

import ipaddress
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Final

from config.decimal_text import DECIMAL_SYNTAX, DecimalTextError, plain_decimal, scaled
from config.model import (
    ByteOrder,
    DataType,
    ModbusPoint,
    Quality,
    RegisterKind,
    Variable,
)
from pipeline.drivers._base import DeviceError, RawValue, Reading

__all__ = [
    "NOT_IMPLEMENTED",
    "SF_RANGE",
    "BlockDecoder",
    "EncodeError",
    "OffsetDecoder",
    "apply_scale",
    "block_decoder",
    "decode_point",
    "decode_scale_factor",
    "decode_variable",
    "encode_value",
    "finish_reading",
    "offset_decoder",
    "raw_to_register_value",
    "scaled_to_raw",
    "scaled_value",
    "shortest_f32",
    "value_text",
]

#: "Not implemented" patterns of SunSpec, special only for a variable with `Info4`.
NOT_IMPLEMENTED: Final[dict[DataType, int]] = {
    DataType.U16: 0xFFFF,
    DataType.I16: -0x8000,
    DataType.U32: 0xFFFFFFFF,
    DataType.I32: -0x80000000,
    DataType.U64: 0xFFFFFFFFFFFFFFFF,
    DataType.I64: -0x8000000000000000,
}

#: Valid SunSpec scale factors; 0x8000 (-32768) is the factor's own "not implemented".
SF_RANGE: Final[range] = range(-10, 11)

_INT_BITS: Final[dict[DataType, tuple[int, bool]]] = {
    DataType.U8: (8, False), DataType.I8: (8, True),
    DataType.U16: (16, False), DataType.I16: (16, True),
    DataType.U32: (32, False), DataType.I32: (32, True),
    DataType.U64: (64, False), DataType.I64: (64, True),
}

#: Types a write refuses outright (docs/formats.md §8.3, writes).
_UNWRITABLE: Final[frozenset[DataType]] = frozenset({
    DataType.BITS, DataType.U8, DataType.I8, DataType.IP, DataType.IPV6, DataType.MAC,
})


class EncodeError(DeviceError):
    """A value cannot be written to a variable; `str()` is the reason the spec words."""


def _swap_bytes(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def _ordered(words: Sequence[int], order: ByteOrder) -> list[int]:
    out = [w & 0xFFFF for w in words]
    if order in (ByteOrder.SWAP_BYTES, ByteOrder.SWAP_BOTH):
        out = [_swap_bytes(w) for w in out]
    if order in (ByteOrder.SWAP_WORDS, ByteOrder.SWAP_BOTH):
        out.reverse()
    return out


def _to_bytes(words: Sequence[int]) -> bytes:
    return b"".join(w.to_bytes(2, "big") for w in words)


def shortest_f32(value: float) -> float:
    """The float64 that prints as the shortest decimal reading back to the same float32."""
    if not math.isfinite(value):
        return value
    packed = struct.pack(">f", value)
    # At a power of two the interval reading back is twice as wide on the side away from zero:
    # the nearest decimal of some length may miss it while its neighbour there does not
    # (2**-96 is 1.2621775e-29, not 1.26217745e-29).
    power_of_two = int.from_bytes(packed, "big") & 0x7FFFFF == 0
    for digits in range(1, 10):
        nearest = f"{value:.{digits}g}"
        candidates = [nearest]
        if power_of_two:
            number = Decimal(nearest)
            unit = Decimal(1).scaleb(int(Decimal(f"{value:.{digits - 1}e}").as_tuple().exponent))
            candidates += [str(number + unit), str(number - unit)]
        for text in candidates:
            try:
                if struct.pack(">f", float(text)) == packed:
                    return float(text)
            except OverflowError:   # rounded past the float32 maximum: needs more digits
                continue
    return value


def _int_value(data: bytes, data_type: DataType) -> int:
    _, signed = _INT_BITS[data_type]
    return int.from_bytes(data, "big", signed=signed)


def decode_point(point: ModbusPoint, words: Sequence[int]) -> RawValue:
    """Decode one variable from its registers (or one bit for coils and discrete inputs).

    `words` holds exactly `point.register_count` items: register words, or 0/1 for a bit kind.
    Raises ValueError on a wrong word count. Floats may come back as NaN or infinities; the
    caller (`decode_variable`) turns those into quality 6.
    """
    if len(words) != point.register_count:
        raise ValueError(f"expected {point.register_count} words, got {len(words)}")
    if point.kind.is_bit or point.data_type is None:
        return 1 if words[0] else 0
    data_type = point.data_type
    data = _to_bytes(_ordered(words, point.byte_order))
    if data_type in (DataType.U8, DataType.I8):
        # `_B` already swapped the register, so "the other byte" falls out of the same rule.
        byte = data[point.byte or 0]
        return byte - 0x100 if data_type is DataType.I8 and byte >= 0x80 else byte
    if data_type in _INT_BITS:
        return _int_value(data, data_type)
    if data_type is DataType.F32:
        return shortest_f32(struct.unpack(">f", data)[0])
    if data_type is DataType.F64:
        return float(struct.unpack(">d", data)[0])
    if data_type is DataType.BITS:
        word = int.from_bytes(data, "big")
        if point.bit is None:
            return word
        nbits = point.nbits or 1
        return (word >> point.bit) & ((1 << nbits) - 1)
    if data_type is DataType.STRING:
        size = point.string_bytes if point.string_bytes is not None else len(data)
        text = data[:size].split(b"\x00", 1)[0].decode("utf-8", errors="replace")
        return text.rstrip(" ")
    if data_type is DataType.IP:
        return str(ipaddress.IPv4Address(data))
    if data_type is DataType.IPV6:
        return str(ipaddress.IPv6Address(data))
    if data_type is DataType.MAC:
        return ":".join(f"{b:02X}" for b in data)
    raise ValueError(f"unknown data type {data_type}")


#: Decodes one variable from a read's values at an offset; built once per plan.
OffsetDecoder = Callable[[Sequence[int], int], RawValue]


def _u16(values: Sequence[int], at: int) -> RawValue:
    return values[at]


def _i16(values: Sequence[int], at: int) -> RawValue:
    word = values[at]
    return word - 0x10000 if word & 0x8000 else word


def _u32(values: Sequence[int], at: int) -> RawValue:
    return (values[at] << 16) | values[at + 1]


def _i32(values: Sequence[int], at: int) -> RawValue:
    value = (values[at] << 16) | values[at + 1]
    return value - 0x100000000 if value & 0x80000000 else value


def _bit(values: Sequence[int], at: int) -> RawValue:
    return 1 if values[at] else 0


_FAST: Final[dict[DataType, OffsetDecoder]] = {
    DataType.U16: _u16, DataType.I16: _i16, DataType.U32: _u32, DataType.I32: _i32,
}


def offset_decoder(point: ModbusPoint) -> OffsetDecoder:
    """A decoder of `point` reading straight from a read's values: the poll's hot path.

    The common big-endian 16/32-bit integers skip the general byte shuffling; every other type
    goes through `decode_point` (which raises ValueError on a short read).
    """
    if point.kind.is_bit or point.data_type is None:
        return _bit
    if point.byte_order in (ByteOrder.BIG_ENDIAN, ByteOrder.SWAP_WORDS) and \
            point.data_type in (DataType.U16, DataType.I16):
        return _FAST[point.data_type]
    if point.byte_order is ByteOrder.BIG_ENDIAN and point.data_type in _FAST:
        return _FAST[point.data_type]
    size = point.register_count

    def general(values: Sequence[int], at: int) -> RawValue:
        return decode_point(point, values[at:at + size])

    return general


#: `struct` codes of the types a block read decodes in one unpack (big-endian, no post-processing:
#: their raw value is the integer as read, and no "not implemented" pattern applies unscaled).
_STRUCT_CODES: Final[dict[DataType, str]] = {
    DataType.U16: "H", DataType.I16: "h", DataType.U32: "I", DataType.I32: "i",
    DataType.U64: "Q", DataType.I64: "q",
}


def _struct_code(var: Variable) -> str | None:
    """The variable's `struct` code when one unpack decodes it exactly like `decode_variable`."""
    point = var.modbus
    if point is None or point.kind.is_bit or point.data_type is None \
            or var.scale_factor_index is not None:
        return None
    code = _STRUCT_CODES.get(point.data_type)
    if code is None:
        return None
    if point.byte_order is ByteOrder.BIG_ENDIAN:
        return code
    if point.byte_order is ByteOrder.SWAP_WORDS and point.register_count == 1:
        return code         # `_W` reverses the order of one register: nothing
    return None


@dataclass(frozen=True, slots=True)
class BlockDecoder:
    """Decodes the variables of one register read that a single `struct` unpack can, at once.

    Built once per read of a plan. `indexes[k]` is the variable the k-th unpacked field holds;
    registers between them are skipped by pad bytes. Integer types only, unscaled, not overlapping:
    every other variable of the read (`rest`) goes through `decode_variable`'s rules.
    """

    layout: struct.Struct
    indexes: tuple[int, ...]
    rest: tuple[Variable, ...]

    def values(self, data: bytes, offset: int) -> tuple[int, ...]:
        """Raw values of `indexes`, in order, from the register bytes at `data[offset:]`."""
        return self.layout.unpack_from(data, offset)


def block_decoder(address: int, variables: Sequence[Variable]) -> BlockDecoder:
    """The `BlockDecoder` of a register read from `address` holding `variables`."""
    fast: list[tuple[int, str, int]] = []       # (register address, struct code, Index)
    rest: list[Variable] = []
    end = address
    for var in sorted(variables, key=lambda v: v.modbus.address if v.modbus else -1):
        code = _struct_code(var)
        point = var.modbus
        if code is None or point is None or point.address < end:
            rest.append(var)
            continue
        fast.append((point.address, code, var.index))
        end = point.address + point.register_count
    layout = [">"]
    at = address
    for start, code, _ in fast:
        if start > at:
            layout.append(f"{2 * (start - at)}x")
        layout.append(code)
        at = start + struct.calcsize(">" + code) // 2
    return BlockDecoder(layout=struct.Struct("".join(layout)),
                        indexes=tuple(index for _, _, index in fast), rest=tuple(rest))


def apply_scale(value: int, sf: int) -> Decimal:
    """`value × 10^sf`, exact."""
    return Decimal(value).scaleb(sf)


def decode_scale_factor(reading: Reading) -> int | None:
    """The signed factor of a scale-factor variable's reading, or None when it is unusable."""
    if not reading.quality.is_good or not isinstance(reading.value, int):
        return None
    sf = reading.value
    if sf >= 0x8000:            # a U16 factor is taken as two's complement
        sf -= 0x10000
    return sf if sf in SF_RANGE else None


def decode_variable(var: Variable, words: Sequence[int],
                    scale_factor: Reading | None = None) -> Reading:
    """Decode a variable's registers into a Reading, applying §8.3's quality-6 rules.

    `scale_factor` is the reading of the `Info4` variable from the same poll (required when the
    variable has one; a missing or failed factor gives the factor's quality).
    """
    point = var.modbus
    if point is None:
        return Reading(None, Quality.DECODE_ERROR)
    try:
        value = decode_point(point, words)
    except (ValueError, UnicodeError):
        return Reading(None, Quality.DECODE_ERROR)
    return finish_reading(var, value, scale_factor)


def finish_reading(var: Variable, value: RawValue, scale_factor: Reading | None) -> Reading:
    """The Reading of a decoded value: NaN/infinities, scale factor and its "not implemented"
    patterns (docs/formats.md §8.3)."""
    if isinstance(value, float) and not math.isfinite(value):
        return Reading(None, Quality.NOT_IMPLEMENTED)
    point = var.modbus
    if var.scale_factor_index is None or point is None or point.kind.is_bit:
        return Reading(value, Quality.GOOD)
    if scale_factor is None:
        return Reading(None, Quality.DECODE_ERROR)
    if not scale_factor.quality.is_good:
        return Reading(None, scale_factor.quality)
    sf = decode_scale_factor(scale_factor)
    if sf is None or not isinstance(value, int):
        return Reading(None, Quality.NOT_IMPLEMENTED)
    assert point.data_type is not None
    if NOT_IMPLEMENTED.get(point.data_type) == value:
        return Reading(None, Quality.NOT_IMPLEMENTED)
    return Reading(apply_scale(value, sf), Quality.GOOD)


# --------------------------------------------------------------------------- writes


def scaled_to_raw(var: Variable, value: Decimal) -> Decimal:
    """(value − CoefB) / CoefA, exact where the quotient terminates (else 40 significant digits)."""
    if var.coef_a == 0:
        raise EncodeError("CoefA is 0, a scaled value cannot be written")
    try:
        with localcontext() as ctx:
            ctx.prec = 40
            return (value - var.coef_b) / var.coef_a
    except ArithmeticError as err:      # `1e999999999` overflows the decimal context
        raise EncodeError(f"{_plain(value)} is out of range") from err


def raw_to_register_value(raw: RawValue, sf: int | None) -> RawValue:
    """raw / 10^sf: the value the registers hold for a raw value (text passes through)."""
    if sf is None or isinstance(raw, str):
        return raw
    if isinstance(raw, float):
        raw = Decimal(repr(raw))
    try:
        return Decimal(raw).scaleb(-sf)
    except ArithmeticError as err:      # `1e999999999` overflows the decimal context
        raise EncodeError(f"{_plain(Decimal(raw))} is out of range") from err


def _words_from_bytes(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def _to_decimal(value: RawValue) -> Decimal:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise EncodeError(f"{value} is not a number that can be written")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EncodeError(f"{value} is not a number that can be written")
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    text = value.strip()
    # docs/formats.md §1.1's syntax, as every number read: `Decimal()` alone takes
    # full-width digits, `1_000`, `+5` and `nan`.
    if not DECIMAL_SYNTAX.fullmatch(text):
        raise EncodeError(f"'{value}' is not a number")
    return Decimal(text)


def encode_value(point: ModbusPoint, value: RawValue) -> list[int]:
    """Register words (or one 0/1 for a coil) holding `value` (already divided by 10^sf).

    Integers are rounded half-even and range-checked; refusals raise EncodeError with the
    spec's wording (`150000 is out of range for U16`, `text longer than 8 bytes`).
    """
    if point.kind is RegisterKind.COIL:
        bit = _to_decimal(value)
        if bit not in (0, 1):
            raise EncodeError(f"{_plain(bit)} is out of range for a coil (0 or 1)")
        return [int(bit)]
    if point.kind is not RegisterKind.HOLDING_REGISTER:
        raise EncodeError(f"{point.kind.name.lower().replace('_', ' ')}s are read-only")
    data_type = point.data_type
    assert data_type is not None
    if data_type in _UNWRITABLE:
        raise EncodeError(f"type {data_type} cannot be written")
    if data_type is DataType.STRING:
        size = point.string_bytes or 0
        data = str(value).encode("utf-8")
        if len(data) > size:
            raise EncodeError(f"text longer than {size} bytes")
        data = data.ljust(point.register_count * 2, b"\x00")
        return _ordered(_words_from_bytes(data), point.byte_order)
    number = _to_decimal(value)
    if data_type in (DataType.F32, DataType.F64):
        fmt = ">f" if data_type is DataType.F32 else ">d"
        try:
            data = struct.pack(fmt, float(number))
        except OverflowError as err:
            raise EncodeError(f"{_plain(number)} is out of range for {data_type}") from err
        if math.isinf(struct.unpack(fmt, data)[0]):
            raise EncodeError(f"{_plain(number)} is out of range for {data_type}")
        return _ordered(_words_from_bytes(data), point.byte_order)
    bits, signed = _INT_BITS[data_type]
    rounded: int | None = None
    if number.adjusted() < 40:          # beyond that no integer type can hold it anyway
        with localcontext() as ctx:
            ctx.prec = 60
            rounded = int(number.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if rounded is None or not low <= rounded <= high:
        raise EncodeError(f"{_plain(number)} is out of range for {data_type}")
    data = rounded.to_bytes(bits // 8, "big", signed=signed)
    return _ordered(_words_from_bytes(data), point.byte_order)


def _plain(number: Decimal) -> str:
    """Plain notation (docs/formats.md §9.3): no exponent, no trailing zeros, `-0` as `0`."""
    if not number.is_finite():
        return format(number, "f")      # `NaN`, `Infinity`: named in messages, never recorded
    try:
        return plain_decimal(number)
    except DecimalTextError:
        # Only a number refused by a write gets this long; its message stays one short line.
        return format(number, ".6e")


def value_text(value: RawValue) -> str:
    """A raw value as docs/formats.md §9.3 writes it (`12.34`, `1.1`, `18446744073709551615`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr is the shortest round-tripping decimal; F32 values were already shortened.
        return _plain(Decimal(repr(value)))
    return _plain(value)


def scaled_value(var: Variable, raw: RawValue) -> Decimal | str:
    """`CoefA × raw + CoefB`, exact in decimal from the raw value's text; text types unchanged."""
    if isinstance(raw, str):
        return raw
    return scaled(var.coef_a, Decimal(value_text(raw)), var.coef_b)

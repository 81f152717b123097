"""Modbus PDUs, RTU framing (CRC-16) and the MBAP header, shared by the TCP and RTU links.

Kept free of I/O so the tunnel, the simulator and both links frame bytes the same way.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from config.model import Quality
from pipeline.drivers._base import ModbusRequestError

__all__ = [
    "MAX_BITS",
    "MAX_REGISTERS",
    "Transaction",
    "check_read_reply",
    "crc16",
    "exception_name",
    "mbap",
    "parse_mbap",
    "read_reply_values",
    "read_request",
    "rtu_frame",
    "rtu_reply_length",
    "unpack_bits",
    "unpack_read_reply",
    "write_coil_request",
    "write_registers_request",
]

MAX_REGISTERS: Final = 125
MAX_BITS: Final = 2000
READ_FUNCTIONS: Final = frozenset({1, 2, 3, 4})
_READ_REQUEST: Final = struct.Struct(">BHH")

_EXCEPTIONS: Final[dict[int, str]] = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "device failure", 5: "acknowledge", 6: "device busy", 8: "memory parity error",
    10: "gateway path unavailable", 11: "gateway target failed to respond",
}


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def rtu_frame(unit_id: int, pdu: bytes) -> bytes:
    body = bytes((unit_id,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


def rtu_reply_length(head: bytes) -> int | None:
    """Total RTU reply length (CRC included) implied by its first bytes, or None if unknown yet.

    Returns -1 for a function whose reply length cannot be told from its bytes (the caller then
    ends the frame on a 3.5-character silence).
    """
    if len(head) < 2:
        return None
    function = head[1]
    if function & 0x80:
        return 5
    if function in READ_FUNCTIONS:
        return None if len(head) < 3 else 3 + head[2] + 2
    if function in (5, 6, 15, 16):
        return 8
    return -1


def mbap(transaction_id: int, unit_id: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", transaction_id & 0xFFFF, 0, len(pdu) + 1, unit_id) + pdu


def parse_mbap(header: bytes) -> tuple[int, int, int, int]:
    """(transaction id, protocol id, length, unit id) of a 7-byte MBAP header."""
    tid, proto, length, unit = struct.unpack(">HHHB", header)
    return tid, proto, length, unit


def read_request(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


def write_coil_request(address: int, on: bool) -> bytes:
    return struct.pack(">BHH", 5, address, 0xFF00 if on else 0)


def write_registers_request(address: int, words: Sequence[int]) -> bytes:
    """0x06 for one register, 0x10 for several (docs/behaviour.md §2.7)."""
    if len(words) == 1:
        return struct.pack(">BHH", 6, address, words[0])
    body = b"".join(w.to_bytes(2, "big") for w in words)
    return struct.pack(">BHHB", 16, address, len(words), len(body)) + body


def exception_name(code: int) -> str:
    return _EXCEPTIONS.get(code, f"exception {code:#04x}")


def check_exception(request: bytes, reply: bytes) -> None:
    """Raise quality 2 for an exception reply, quality 3 for a wrong function."""
    if not reply:
        raise ModbusRequestError("empty reply", quality=Quality.BAD_FRAME)
    if reply[0] == request[0] | 0x80:
        code = reply[1] if len(reply) > 1 else 0
        raise ModbusRequestError(f"Modbus exception {code:#04x} ({exception_name(code)})",
                                 quality=Quality.EXCEPTION, exception_code=code)
    if reply[0] != request[0]:
        raise ModbusRequestError(f"reply function {reply[0]} does not match {request[0]}",
                                 quality=Quality.BAD_FRAME)


def check_read_reply(request: bytes, reply: bytes) -> None:
    """Raise ModbusRequestError unless `reply` answers the read `request` with all its data,
    which then starts at `reply[2]`."""
    check_exception(request, reply)
    if len(reply) < 2 or reply[1] != len(reply) - 2:
        raise ModbusRequestError("reply byte count does not match its length",
                                 quality=Quality.BAD_FRAME)
    function, _, count = _READ_REQUEST.unpack_from(request)
    size = len(reply) - 2
    if function in (1, 2):
        if size != (count + 7) // 8:
            raise ModbusRequestError(f"reply holds {size} bytes for {count} bits",
                                     quality=Quality.BAD_FRAME)
    elif size != 2 * count:
        raise ModbusRequestError(f"reply holds {size} bytes for {count} registers",
                                 quality=Quality.BAD_FRAME)


def read_reply_values(request: bytes, reply: bytes) -> list[int]:
    """Registers (or bits, one int each) of a reply `check_read_reply` accepted."""
    function, _, count = _READ_REQUEST.unpack_from(request)
    if function in (1, 2):
        return unpack_bits(reply[2:], count)
    return list(struct.unpack_from(f">{count}H", reply, 2))


def unpack_read_reply(request: bytes, reply: bytes) -> list[int]:
    """Registers (or bits, one int each) of a read reply; raises ModbusRequestError otherwise."""
    check_read_reply(request, reply)
    return read_reply_values(request, reply)


def unpack_bits(data: bytes, count: int) -> list[int]:
    return [(data[i >> 3] >> (i & 7)) & 1 for i in range(count)]


def check_write_reply(request: bytes, reply: bytes) -> None:
    """A write's echo must repeat the request's address and value or count."""
    check_exception(request, reply)
    if reply[:5] != request[:5]:
        raise ModbusRequestError("write reply does not echo the request",
                                 quality=Quality.BAD_FRAME)


@dataclass(frozen=True, slots=True)
class Transaction:
    """One request PDU for a unit, as a link sends it."""

    unit_id: int
    pdu: bytes
    timeout_ms: int

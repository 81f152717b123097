"""Framing: CRC-16 against known frames, and arbitrary replies give only our own error."""

from __future__ import annotations

from datetime import UTC

from hypothesis import given
from hypothesis import strategies as st

from pipeline.drivers._base import ModbusRequestError
from pipeline.drivers.modbus.frames import (
    crc16,
    read_request,
    rtu_frame,
    rtu_reply_length,
    unpack_read_reply,
    write_registers_request,
)


def test_crc_of_the_manuals_trace_frames() -> None:
    # docs/formats.md §11: `03 04 00 00 00 02 70 29` and `03 04 04 09 01 00 00 8A 18`
    assert rtu_frame(3, bytes.fromhex("04 0000 0002")) == bytes.fromhex("03 04 00 00 00 02 70 29")
    assert rtu_frame(3, bytes.fromhex("04 04 0901 0000")) == \
        bytes.fromhex("03 04 04 09 01 00 00 8A 18")
    assert crc16(b"") == 0xFFFF


def test_reply_lengths_by_function() -> None:
    assert rtu_reply_length(b"\x01") is None
    assert rtu_reply_length(b"\x01\x03") is None
    assert rtu_reply_length(b"\x01\x03\x04") == 9
    assert rtu_reply_length(b"\x01\x83") == 5
    assert rtu_reply_length(b"\x01\x06") == 8 and rtu_reply_length(b"\x01\x10") == 8
    assert rtu_reply_length(b"\x01\x2b") == -1


def test_one_register_is_written_with_0x06_several_with_0x10() -> None:
    assert write_registers_request(7, [1]) == bytes.fromhex("06 0007 0001")
    assert write_registers_request(7, [1, 2]) == bytes.fromhex("10 0007 0002 04 0001 0002")


@given(st.sampled_from([1, 2, 3, 4]), st.integers(1, 125), st.binary(max_size=260))
def test_arbitrary_replies_decode_or_raise_modbus_request_error(function: int, count: int,
                                                                reply: bytes) -> None:
    request = read_request(function, 0, count)
    try:
        values = unpack_read_reply(request, reply)
    except ModbusRequestError as err:
        assert err.quality in (2, 3)
        return
    assert len(values) == count


def test_trace_lines_match_the_spec_examples() -> None:
    from datetime import datetime

    from pipeline.drivers.modbus.trace import Direction, FrameTrace, TraceError, format_trace_line

    def at(text: str) -> int:
        when = datetime.strptime(text, "%d/%m/%Y %H:%M:%S.%f").replace(tzinfo=UTC)
        return int(when.timestamp() * 1000) * 1_000_000

    cases = [
        (FrameTrace(ts_ns=at("05/02/2021 09:49:50.012"), interface="ethernet",
                    direction=Direction.SENT, peer="192.168.10.23:502",
                    data=bytes.fromhex("002A000000067E039C940002")),
         "05/02/2021 09:49:50.012;=> 192.168.10.23:502 00 2A 00 00 00 06 7E 03 9C 94 00 02"),
        (FrameTrace(ts_ns=at("05/02/2021 09:49:51.131"), interface="serial1",
                    direction=Direction.RECEIVED, data=bytes.fromhex("030404090100008A18")),
         "05/02/2021 09:49:51.131;<= 03 04 04 09 01 00 00 8A 18"),
        (FrameTrace(ts_ns=at("05/02/2021 09:50:02.103"), interface="serial1",
                    direction=Direction.RECEIVED, data=b"", error=TraceError.TIMEOUT),
         "05/02/2021 09:50:02.103;*** TIMEOUT *** <="),
        (FrameTrace(ts_ns=at("05/02/2021 09:50:02.999"), interface="serial1",
                    direction=Direction.RECEIVED, data=b"\x55", error=TraceError.DISCARDED),
         "05/02/2021 09:50:02.999;*** DISCARDED *** <= 55"),
    ]
    for trace, line in cases:
        assert format_trace_line(trace, UTC) == line

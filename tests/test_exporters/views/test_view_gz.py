"""Deterministic gzip of docs/formats.md §9.4."""

from __future__ import annotations

import gzip
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.views.gz import BLOCK_BYTES, HEADER, GzipStream, gzip_bytes, gzip_chunks


def test_header_is_fixed() -> None:
    data = gzip_bytes(b"x\n")
    assert data[:10] == bytes.fromhex("1F8B08000000000000FF")
    assert data[:10] == HEADER


def test_body_is_zlib_level_6_raw_deflate_with_crc_and_length() -> None:
    text = b"".join(b"21/02/05-09:50:00;%d;2041;2102\n" % k for k in range(20000))
    data = gzip_bytes(text)
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    raw = b"".join(deflater.compress(text[k:k + BLOCK_BYTES])
                   for k in range(0, len(text), BLOCK_BYTES)) + deflater.flush()
    assert data[10:-8] == raw
    assert data[-8:-4] == zlib.crc32(text).to_bytes(4, "little")
    assert data[-4:] == len(text).to_bytes(4, "little")
    assert gzip.decompress(data) == text


def test_empty_text_is_a_valid_member() -> None:
    assert gzip.decompress(gzip_bytes(b"")) == b""


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3 * BLOCK_BYTES + 100), cuts=st.lists(st.integers(0, 10**6)))
def test_any_feeding_gives_the_same_bytes(data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert b"".join(gzip_chunks(pieces)) == gzip_bytes(data)


def test_large_text_in_odd_pieces_gives_the_same_bytes() -> None:
    text = b"".join(b"%d;%d.%d\n" % (k, k * 7, k % 13) for k in range(200_000))
    expected = gzip_bytes(text)
    for size in (1, 999, BLOCK_BYTES - 1, BLOCK_BYTES + 1, 10**6):
        if size == 1:
            pieces = [text[k:k + 1] for k in range(5000)] + [text[5000:]]
        else:
            pieces = [text[k:k + size] for k in range(0, len(text), size)]
        assert b"".join(gzip_chunks(pieces)) == expected


def test_stream_reports_text_bytes_and_refuses_reuse() -> None:
    stream = GzipStream()
    stream.feed(b"abc")
    assert stream.text_bytes == 3
    stream.finish()
    try:
        stream.feed(b"x")
    except RuntimeError:
        pass
    else:
        raise AssertionError("feed after finish must fail")

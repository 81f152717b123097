"""Deterministic gzip, exactly as docs/formats.md §9.4.

One member: header `1F 8B 08 00 00 00 00 00 00 FF` (no name, mtime 0, XFL 0, OS 255), raw deflate
by zlib at level 6 (window 15 bits, memory level 8, default strategy), no flush before the end,
then CRC-32 and length (little-endian, length modulo 2**32).

zlib's output may depend on how its input is split into calls, so `GzipStream` buffers what it is
fed and hands zlib fixed 64 KiB blocks: text fed in any pieces gives the same bytes. The stdlib
`gzip` module is not used: it writes the OS byte 3 and the current time.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Final

HEADER: Final = bytes((0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF))
LEVEL: Final = 6
WBITS: Final = 15
MEMLEVEL: Final = 8
#: zlib is fed exactly this much at a time (the last block may be shorter).
BLOCK_BYTES: Final = 64 * 1024


class GzipStream:
    """Incremental deterministic gzip: `feed()` text bytes, then `finish()` once.

    Each call returns the compressed bytes ready so far (often empty); their concatenation, with
    `finish()`'s, is the file.
    """

    __slots__ = ("_compressor", "_crc", "_finished", "_pending", "_size", "_started")

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -WBITS, MEMLEVEL,
                                            zlib.Z_DEFAULT_STRATEGY)
        self._crc = 0
        self._size = 0
        self._pending = bytearray()
        self._started = False
        self._finished = False

    @property
    def text_bytes(self) -> int:
        """Uncompressed bytes fed so far."""
        return self._size

    def _head(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return HEADER

    def feed(self, data: bytes) -> bytes:
        if self._finished:
            raise RuntimeError("GzipStream.feed() after finish()")
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._pending += data
        if len(self._pending) < BLOCK_BYTES:
            return self._head()
        out = [self._head()]
        whole = len(self._pending) - len(self._pending) % BLOCK_BYTES
        view = memoryview(self._pending)
        for offset in range(0, whole, BLOCK_BYTES):
            out.append(self._compressor.compress(view[offset:offset + BLOCK_BYTES]))
        view.release()
        del self._pending[:whole]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._finished:
            raise RuntimeError("GzipStream.finish() called twice")
        self._finished = True
        head = self._head()
        body = self._compressor.compress(bytes(self._pending)) if self._pending else b""
        self._pending.clear()
        tail = self._compressor.flush(zlib.Z_FINISH)
        trailer = self._crc.to_bytes(4, "little") + (self._size & 0xFFFFFFFF).to_bytes(4, "little")
        return head + body + tail + trailer


def gzip_chunks(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Compressed chunks of the concatenated `pieces`, streaming (empty chunks skipped)."""
    stream = GzipStream()
    for piece in pieces:
        chunk = stream.feed(piece)
        if chunk:
            yield chunk
    yield stream.finish()


def gzip_bytes(data: bytes) -> bytes:
    """The deterministic gzip file of `data`."""
    return b"".join(gzip_chunks((data,)))

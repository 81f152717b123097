"""What a process's scans of a store selected, kept for its next scans asking for the same
columns and filter of the same files: off unless `enable`d (the query server of
`sunpm sd serve`, which answers many questions over one dump; docs/cli.md).

An entry is keyed by its files' identities as `stat` gives them (device, inode, size,
modification and change times in nanoseconds), taken before the files are read and again after
(an entry is kept only when they did not change meanwhile): a file written, cut, replaced or
renamed over since has another key, and is read and verified again. The trust is the one `make`
and `git` place in a file's times: bytes that change under an unchanged identity (rot under a
running server) are answered from the memory where they were verified, never read as data from
the damaged file; they are found at the next run without a server, or once the file changes.
Only clean reads are kept: a damaged file is read, checked and reported at each read, as
without the memo.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Final

import pyarrow as pa

FileKey = tuple[int, int, int, int, int]

_LOCK: Final = threading.Lock()
_ENTRIES: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
_STATE = {"budget": 0, "held": 0}


def enable(budget_bytes: int) -> None:
    """Keep up to `budget_bytes` of selected rows (the least recently used go first); 0: off,
    everything kept dropped."""
    with _LOCK:
        _STATE["budget"] = max(0, budget_bytes)
        if not _STATE["budget"]:
            _ENTRIES.clear()
            _STATE["held"] = 0


def enabled() -> bool:
    return _STATE["budget"] > 0


def file_key(path: os.PathLike[str]) -> FileKey:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def owned(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch in buffers of its own: a decoded batch may point into its whole file's bytes,
    which a memo of one column would otherwise keep alive (uncounted: `nbytes` counts only the
    slices used)."""
    return pa.RecordBatch.from_arrays([_copied(c) for c in batch.columns], schema=batch.schema)


def _copied(column: pa.Array) -> pa.Array:
    if isinstance(column, pa.DictionaryArray):
        # Concatenated, a dictionary column keeps its dictionary as it is (a slice of the file's
        # bytes, when decoded from one): copied apart.
        return pa.DictionaryArray.from_arrays(_copied(column.indices),
                                              _copied(column.dictionary))
    return pa.concat_arrays([column, column[:0]])


def get(key: Hashable) -> object | None:
    with _LOCK:
        entry = _ENTRIES.get(key)
        if entry is None:
            return None
        _ENTRIES.move_to_end(key)
        return entry[0]


def put(key: Hashable, value: object, nbytes: int) -> None:
    """Keep `value` (about `nbytes` of memory) under `key`; nothing when off or when it alone
    exceeds the budget."""
    with _LOCK:
        budget = _STATE["budget"]
        if nbytes > budget:
            return
        old = _ENTRIES.pop(key, None)
        if old is not None:
            _STATE["held"] -= old[1]
        _ENTRIES[key] = (value, nbytes)
        _STATE["held"] += nbytes
        while _STATE["held"] > budget:
            _, (_, size) = _ENTRIES.popitem(last=False)
            _STATE["held"] -= size


def held_bytes() -> int:
    with _LOCK:
        return _STATE["held"]

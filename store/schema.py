"""Arrow schemas of the two stream kinds (docs/architecture.md §1), versioned in their metadata.

Writers always pass these explicitly; nothing relies on type inference.

records, one stream per device, a row per (record time, variable):
    ts       timestamp[ns, UTC]  record time (end of the recording period)
    seq      uint64              record number per device, shared by the record's rows, gap-free
    var      int32               definition-file Index
    value    float64             raw value, null = missing
    vmin     float64             action 2 only
    vmax     float64             action 2 only
    text     string              text types, TIC data verbatim, exact U64/I64 decimals
    quality  uint8               docs/behaviour.md §2.2
    def      dictionary<string>  `<sha256>:<file name>` of the definition in force

journal, one stream per gateway, a row per event:
    ts       timestamp[ns, UTC]  wall clock
    seq      uint64              gap-free, numbered at commit
    kind     dictionary<string>  alarm, heartbeat, param, command, result, config, sync, window,
                                 delivered, scriptdata, log, storage, state
    device   string              daq index, null for the gateway
    def      dictionary<string>  as in records, for events about a device
    body     string              compact JSON of the kind's fields
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

SCHEMA_VERSION: Final = "1"
#: The schema metadata key of a segment's version.
VERSION_KEY: Final = b"sunpm.schema_version"


def unknown_version(meta: dict[bytes, bytes]) -> str | None:
    """The version a sealed file's schema metadata names when it is not this reader's (same
    fields, other meaning: what this reader would decode is not what was meant), else None."""
    version = meta.get(VERSION_KEY, b"").decode(errors="replace")
    return None if version == SCHEMA_VERSION else version

_DICT = pa.dictionary(pa.int32(), pa.string())

RECORDS_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("seq", pa.uint64(), nullable=False),
        pa.field("var", pa.int32(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("vmin", pa.float64()),
        pa.field("vmax", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("quality", pa.uint8(), nullable=False),
        pa.field("def", _DICT, nullable=False),
    ],
    metadata={"sunpm.stream": "records", "sunpm.schema_version": SCHEMA_VERSION},
)

JOURNAL_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("seq", pa.uint64(), nullable=False),
        pa.field("kind", _DICT, nullable=False),
        pa.field("device", pa.string()),
        pa.field("def", _DICT),
        pa.field("body", pa.string(), nullable=False),
    ],
    metadata={"sunpm.stream": "journal", "sunpm.schema_version": SCHEMA_VERSION},
)

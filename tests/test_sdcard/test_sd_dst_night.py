"""The night DST ends in Paris, delivered by the real session at irregular times (23:30, 00:30,
02:30 and 03:30 UTC, then midnight), one meter silent from 00:50 to 02:40 UTC: every delivered
window re-exports byte for byte, and `sunpm ingest` of the delivered files, whose local times
repeat 02:00..02:59, gives the records `sd export-parquet` gives from the dump."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from plant import NS, Plant, build_sessions, ingested_and_exported, tree_files

from sdcard.dump import open_dump
from sdcard.reexport import reexport
from store.delivery import DeliveryState

#: 2021-10-30 00:00 UTC; Paris goes from 03:00 CEST back to 02:00 CET at 01:00 UTC the next day.
START_S = 1_635_552_000
NIGHT = START_S + 86_400


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Plant:
    cuts = [NIGHT - 1800, NIGHT + 1800, NIGHT + 9000, NIGHT + 12600, NIGHT + 86_400]
    return asyncio.run(build_sessions(tmp_path_factory.mktemp("night"), start_s=START_S,
                                      cuts=cuts, silent={"2": (NIGHT + 3000, NIGHT + 9600)}))


def test_each_window_of_the_night_re_exports_as_delivered(night: Plant, tmp_path: Path) -> None:
    delivered = tree_files(night.server, ("DATA",))
    assert len(delivered) == 5
    dump = open_dump(night.dump)
    state = DeliveryState.from_table(dump.log.journal(kinds=["window", "delivered"]))
    windows = sorted({(w.spec.start_ns, w.spec.end_ns) for sd in state.streams.values()
                      for w in sd.windows if sd.is_delivered(w)})
    rebuilt: dict[str, bytes] = {}
    for k, (start, end) in enumerate(windows):
        reexport(dump, server=1, start_ns=start, end_ns=end, out=tmp_path / str(k))
        rebuilt.update(tree_files(tmp_path / str(k), ("DATA",)))
    assert rebuilt == delivered


def test_ingest_of_the_night_equals_export_parquet_of_its_dump(night: Plant,
                                                               tmp_path: Path) -> None:
    from_files, from_dump = ingested_and_exported(
        night, tmp_path, "device, epoch_ns(time), var, name, raw, scaled, min, max",
        f"WHERE epoch_ns(time) <= {(NIGHT + 86_400) * NS}")
    # Two days of 144 records, but meter 2's 11 silent periods, 4 variables each.
    assert len(from_dump) == (2 * 2 * 144 - 11) * 4
    # Meter 2's rows of the window (00:30, 02:30] UTC: 02:40 and 02:50 of the first pass
    # (CEST), then silence; read from the window's end back alone, they went an hour late.
    assert [r[1] for r in from_files if r[0] == "2" and r[2] == 1
            and (NIGHT + 1800) * NS < r[1] <= (NIGHT + 9000) * NS] \
        == [(NIGHT + 2400) * NS, (NIGHT + 3000) * NS]
    assert from_files == from_dump

"""The progress of `sd fsck` and `sd inspect` moves through their long parts: the check of every
stream's batches, then the scan of every device (the bar stood still during the check, then
jumped, then stood still again)."""

from __future__ import annotations

from pathlib import Path

from plant import Plant

from sdcard import export as export_mod
from sdcard import fsck as fsck_mod
from sdcard import inspect as inspect_mod
from sdcard.dump import open_dump


def test_the_check_of_every_stream_moves_the_progress(month: Plant) -> None:
    dump = open_dump(month.dump)
    ticks: list[int] = []
    assert dump.log.check(progress=ticks.append) == []
    assert len(ticks) == len(dump.devices()) + 1  # each device's stream and the journal


def test_fsck_and_inspect_move_the_progress_once_a_stream_checked_and_a_device_scanned(
        month: Plant) -> None:
    for module in (fsck_mod, inspect_mod):
        dump = open_dump(month.dump)
        ticks: list[int] = []
        run = fsck_mod.fsck if module is fsck_mod else inspect_mod.inspect
        run(dump, progress=ticks.append)
        assert len(ticks) == module.progress_steps(dump) == 2 * 2 + 1, module.__name__


def test_export_parquet_moves_the_progress_a_segment_at_a_time(month: Plant,
                                                               tmp_path: Path) -> None:
    # It moved once a device: a dump of one device stood at 0/1 until the end.
    dump = open_dump(month.dump)
    ticks: list[int] = []
    export_mod.export_parquet(dump, tmp_path / "pq", progress=ticks.append)
    segments = sum(len(list((month.dump / "devices" / d).glob("*.arrow*"))) for d in ("1", "2"))
    assert sum(ticks) == export_mod.progress_steps(dump) == segments
    # A tick per batch the scan hands over (a batch holds many of the month's small files).
    assert len(ticks) > 2 * len(dump.devices()), ticks

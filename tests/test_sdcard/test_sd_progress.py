"""The progress of `sd fsck` and `sd inspect` moves through their long parts: the check of every
stream's batches, then the scan of every device (the bar stood still during the check, then
jumped, then stood still again)."""

from __future__ import annotations

from plant import Plant

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

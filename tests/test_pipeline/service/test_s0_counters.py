"""S0 totals across a journal quota deletion and a restart (pipeline/service/s0.py): the `s0`
events are folded into `state` snapshots, so dropping every one of them keeps the total."""

from __future__ import annotations

from pathlib import Path

from config import parse_definition
from config.model import Device
from pipeline.drivers.io import ModbusIoBackend
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.tcp import ModbusTcpDriver
from pipeline.service.s0 import KIND, ModuleCounters, restore_counters
from store import Log, StoreOptions, replay

MODULE_FILE = b"""modbusTCP;IO;Acme;IO-2
1;3;10;U32;;Counter 1;io:CNT1;1;0;;0
2;3;20;U16;;Counter 2;io:CNT2;1;0;;0
"""
MODULE = Device(line=3, index="12", interface="127.0.0.1:9", name="io_module", address=7)
OPTIONS = StoreOptions(flush_s=0.005, device_quota_bytes=40_000, journal_quota_bytes=20_000)


def _counters() -> ModuleCounters:
    definition = parse_definition(MODULE_FILE, "module.csv").value
    backend = ModbusIoBackend(ModbusTcpDriver(), MODULE, definition,
                              lambda d, vs: plan_reads(d, 0, variables=vs))
    return ModuleCounters(MODULE.index, backend)


async def test_a_total_outlives_the_journal_quota_dropping_every_s0_event(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, OPTIONS) as log:
        log.set_state_provider(lambda: replay(log).to_body())
        await log.append_journal(KIND, {"module": "99", "counters": {"1": [1, 2]}})
        await log.append_journal(KIND, {"module": MODULE.index,
                                        "counters": {"1": [70_000, 1_234_567], "2": [5, 9]}})
        # Log lines until the quota has deleted the segments holding the s0 events (bounded).
        for i in range(2_000):
            await log.append_journal("log", {"message": "x" * 40, "i": i})
            if i % 50 == 49:
                await log.commit()
                if log.journal(kinds=[KIND]).num_rows == 0:
                    break
        assert log.journal(kinds=[KIND]).num_rows == 0, "the quota never dropped the s0 events"
        assert log.journal(kinds=["state"]).num_rows >= 1

    async with await Log.open(tmp_path, OPTIONS) as log:      # the restart
        counters = _counters()
        assert await restore_counters(log, counters) == 2
        saved = counters.backend.counters
        assert (saved[1].module_value, saved[1].total) == (70_000, 1_234_567)
        assert (saved[2].module_value, saved[2].total) == (5, 9)
        # The first read after the restart adds what the module counted while stopped.
        assert saved[1].update(70_010) == 1_234_577

        # A later s0 event wins over the snapshot's copy.
        await log.append_journal(KIND, {"module": MODULE.index, "counters": {"1": [80, 1_300_000]}})
        await log.commit()
        later = _counters()
        assert await restore_counters(log, later) == 1
        assert later.backend.counters[1].total == 1_300_000
        assert later.backend.counters[2].total == 0


async def test_another_modules_snapshot_restores_nothing(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, OPTIONS) as log:
        await log.append_journal(KIND, {"module": "99", "counters": {"1": [1, 2]}})
        await log.write_state_snapshot()
        counters = _counters()
        assert await restore_counters(log, counters) == 0
        assert counters.backend.counters[1].total == 0

"""Devices with only SunSpec models newer than the manual record their measurements: a DER
inverter holding models 1 + 701 + 713 and a meter holding 1 + 203, found and imported by `sunpm
discover --import`, polled for a few 1 s periods and delivered to a `dir` server, give DATA rows
whose values follow the simulated registers (docs/formats.md §8.4).

Offsets and scale factors are written out here from the SunSpec model definitions, never taken
from the generator under test.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from e2e_support import (
    BASE,
    SUNS,
    ClockedDevice,
    _text,
    data_files,
    deliver,
    edit_config,
    edit_daq,
    gunzip_all,
    init_and_discover,
    make_tree,
    parse_data,
    plain,
    poll_for,
)

from config import load_site
from config.model import Device
from pipeline.drivers.modbus.simulator import TcpSimulator
from store import Log, StoreOptions

ZONE = "Europe/Paris"
pytestmark = pytest.mark.usefixtures("no_task_left_behind")

#: First data register of each model: SunS (2), model 1 header (2) and body (66), a header (2).
M701 = BASE + 72
M713 = M701 + 153 + 2
M203 = BASE + 72


def _common(serial: str) -> list[int]:
    return [1, 66, *_text("ACME", 16), *_text("DER 10k", 16), *_text("", 8), *_text("2.1", 8),
            *_text(serial, 16), 1, 0x8000]


def der_image() -> dict[int, int]:
    words = SUNS + _common("DER-7") + [701, 153] + [0] * 153 + [713, 7] + [0] * 7 + [0xFFFF, 0]
    image = {BASE + k: w for k, w in enumerate(words)}
    image[M701 + 114] = (-1) & 0xFFFF     # 701 W_SF
    image[M701 + 113] = (-2) & 0xFFFF     # 701 Hz_SF
    image[M713 + 6] = 0                   # 713 Pct_SF
    return image


def der_values(second: int) -> dict[int, int]:
    hz = 5000 + second % 7
    return {M701 + 8: 4000 + second % 60,          # W int16, sf -1
            M701 + 15: hz >> 16, M701 + 16: hz & 0xFFFF,   # Hz uint32, sf -2
            M713 + 2: 40 + second % 50}            # SoC uint16, sf 0


def der_expected(second: int) -> dict[str, str]:
    return {"701_W": plain(Decimal(4000 + second % 60).scaleb(-1)),
            "701_Hz": plain(Decimal(5000 + second % 7).scaleb(-2)),
            "713_SoC": str(40 + second % 50)}


def meter_image() -> dict[int, int]:
    words = SUNS + _common("MTR-3") + [203, 105] + [0] * 105 + [0xFFFF, 0]
    image = {BASE + k: w for k, w in enumerate(words)}
    image[M203 + 20] = (-1) & 0xFFFF      # W_SF
    image[M203 + 52] = 1                  # TotWh_SF
    return image


def meter_values(second: int) -> dict[int, int]:
    wh = 70_000 + second % 1000
    return {M203 + 16: (-(1200 + second % 30)) & 0xFFFF,   # W int16, sf -1 (exporting)
            M203 + 44: wh >> 16, M203 + 45: wh & 0xFFFF}   # TotWhImp acc32, sf 1


def meter_expected(second: int) -> dict[str, str]:
    return {"203_W": plain(Decimal(-(1200 + second % 30)).scaleb(-1)),
            "203_TotWhImp": plain(Decimal(70_000 + second % 1000).scaleb(1))}


async def test_der_and_meter_with_only_newer_models_record_their_measurements(
        tmp_path: Path) -> None:
    der = ClockedDevice(holding=der_image(), moving=der_values, kind=3)
    meter = ClockedDevice(holding=meter_image(), moving=meter_values, kind=3)
    sim = TcpSimulator({1: der, 2: meter})
    port = await sim.start()
    try:
        cfg = tmp_path / "cfg"
        run, found = await init_and_discover(cfg, port)
        assert [(d["unitId"], d["models"]) for d in found["devices"]] == \
            [(1, [1, 701, 713]), (2, [1, 203])]
        assert "no measurement model" not in run.err
        assert "2 devices added" in run.err

        def fast(rows: tuple[Device, ...]) -> list[Device]:
            return [dataclasses.replace(d, acq_period_s=1) if d.index in ("1", "2") else d
                    for d in rows]

        edit_daq(cfg, fast)
        server = make_tree(tmp_path / "server1")
        edit_config(cfg, {"SERVER_Type": "dir", "DIR_Path": str(server),
                          "STORE_Path": str(tmp_path / "store"), "STORE_FlushSeconds": "0.05",
                          "DAQ_PollPeriod": "1", "NTP_TimeZone": ZONE})
        site = load_site(cfg)
        log = await Log.open(Path(site.settings.store_path),
                             StoreOptions(flush_s=site.settings.store_flush_s))
        try:
            await poll_for(site, log, 3.5)
            results = await deliver(site, log, cfg, datetime.now(UTC) + timedelta(seconds=1),
                                    slots=(1,))
        finally:
            await log.close()
        assert all(r.ok for r in results), [r.reason for r in results]
    finally:
        await sim.stop()

    blocks: dict[str, list[tuple[list[int], int, list[str]]]] = {}
    for text in gunzip_all(data_files(server)):
        for block in parse_data(text, ZONE):
            for t, fields in block.rows:
                blocks.setdefault(block.header[0], []).append((block.columns, t, fields))
    expected = {"1": der_expected, "2": meter_expected}
    for index, oracle in expected.items():
        rows = blocks.get(f"DEVICEINDEX;{index}")
        assert rows, f"device {index} recorded nothing"
        definition = site.definition_of(site.daq.device(index))
        assert definition is not None
        column_of = {v.name: v.index for v in definition.variables}
        for columns, t, fields in rows:
            by_index = dict(zip(columns, fields, strict=True))
            want = oracle(t - 1)        # acqPeriod 1: the record of T holds the poll at T - 1
            got = {name: by_index[column_of[name]] for name in want}
            assert got == want, (index, t)

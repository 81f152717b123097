"""The store opened with the gateway's settings (`STORE_*` of config.ini) behaves as configured."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from e2e_support import NS, UID

from config import parse_config_ini
from store import Log, StoreOptions

T0 = 1_767_571_200


def record(t_s: int, value: float) -> pa.RecordBatch:
    n = 8
    return pa.record_batch({
        "ts": pa.array([t_s * NS] * n, pa.timestamp("ns", tz="UTC")),
        "var": pa.array(range(1, n + 1), pa.int32()),
        "value": pa.array([value] * n, pa.float64()),
        "vmin": pa.array([None] * n, pa.float64()),
        "vmax": pa.array([None] * n, pa.float64()),
        "text": pa.array([None] * n, pa.string()),
        "quality": pa.array([0] * n, pa.uint8()),
        "def": pa.array(["0" * 64 + ":x.csv"] * n).dictionary_encode(),
    })


@pytest.mark.parametrize(("policy", "drops"), [("stop", True), ("evict-oldest", False)])
async def test_full_policy_of_config_ini_is_the_one_the_store_applies(
        tmp_path: Path, policy: str, drops: bool) -> None:
    ini = parse_config_ini(f"STORE_FullPolicy={policy}\n".encode(), f"{UID}_config.ini").value
    settings = ini.settings(UID)
    # The quota is the store's test size (STORE_DeviceQuotaMB counts whole MiB); the policy is
    # passed as config gives it, which is what a service does.
    options = StoreOptions(flush_s=0.005, device_quota_bytes=40_000,
                           full_policy=settings.store_full_policy)
    async with await Log.open(tmp_path, options) as log:
        log.set_delivery_predicates(lambda device, seq_last, ts: False)   # nothing delivered
        results = [await log.append_records("5", record(T0 + i, float(i))) for i in range(120)]
        stats = log.stats("5")
    assert any(r.dropped for r in results) is drops
    assert (stats.dropped > 0, stats.evicted > 0) == (drops, not drops)

"""A gateway restarted on a journal past its quota keeps the events its servers have not had:
the quota's delivery predicates are in place before its first commit (docs/behaviour.md §6)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

import pytest
from _service_plant import UID, reconfigure, running_gateway, wait_for, write_site

from config import parse_config_ini, render_config_ini
from config.model import ServerSettings
from exporters.retention import DeliveryTracker, QuotaLog, install_retention
from pipeline.service import gateway as gateway_module
from store import Log, StoreOptions
from store.events import LogLevel, LogLine

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

T0_NS = 1_767_571_200 * 10**9
QUOTA = 2**20   # STORE_DeviceQuotaMB=1: the journal's quota too


def configure(config_dir: Path, server_dir: Path) -> None:
    write_site(config_dir, server_dir, [])
    name = f"CONFIG/{UID}_config.ini"
    cfg = parse_config_ini((config_dir / name).read_bytes(), name).value
    # Server 1 cannot be written to: nothing the journal holds gets delivered in this run.
    blocked = server_dir.parent / "not-a-directory"
    blocked.write_bytes(b"")
    cfg = cfg.with_value("STORE_DeviceQuotaMB", "1").with_value("DIR_Path", str(blocked / "x"))
    (config_dir / name).write_bytes(render_config_ini(cfg))


async def undelivered_journal(store_dir: Path) -> list[int]:
    """A journal past its quota of log lines server 1 has not had, with a later `state`
    event; the seqs of those lines."""
    async with await Log.open(store_dir, StoreOptions(device_quota_bytes=QUOTA,
                                                      flush_s=0.01)) as log:
        log.set_delivery_predicates(None, lambda seq_last, ts_max: False)
        seqs: list[int] = []
        for chunk in range(20):
            # Random text, so that the sealed segments stay large once compressed.
            lines = [LogLine(level=LogLevel.WARNING, category="test",
                             message=os.urandom(600).hex()) for _ in range(100)]
            seqs += await asyncio.gather(*[
                log.append_journal("log", line.to_fields(), ts_ns=T0_NS + chunk * 100 + k)
                for k, line in enumerate(lines)])
        await log.write_state_snapshot()
        for i in range(40):
            await log.append_journal("heartbeat", {}, ts_ns=T0_NS + 10**9 + i)
        assert log.journal_usage() > QUOTA
        return seqs


async def test_undelivered_journal_events_survive_a_restart_past_the_quota(
        tmp_path: Path) -> None:
    configure(tmp_path / "config", tmp_path / "server")
    store_dir = tmp_path / "data" / "store"
    lines = await undelivered_journal(store_dir)
    async with running_gateway(tmp_path, inverters=0, site_written=True) as plant:
        store = plant.gateway.store
        assert store is not None
        await store.commit()
        await store.commit()
    async with await Log.open(store_dir, StoreOptions(device_quota_bytes=QUOTA)) as log:
        kept = log.journal(kinds=["log"]).column("seq").to_pylist()
    lost = sorted(set(lines) - set(kept))
    assert not lost, f"{len(lost)} undelivered log lines deleted, seqs {lost[0]}..{lost[-1]}"


async def test_the_start_reads_the_journal_for_retention_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The retention installed as the store opens serves the first configuration (a second
    install would replay the whole journal again); a reload installs its own."""
    installs: list[int] = []

    def counted(store: QuotaLog, servers: Iterable[ServerSettings]) -> DeliveryTracker:
        installs.append(1)
        return install_retention(store, servers)

    monkeypatch.setattr(gateway_module, "install_retention", counted)
    async with running_gateway(tmp_path, inverters=0) as plant:
        assert len(installs) == 1
        await reconfigure(plant, {"LOG_Level": "debug"})
        await wait_for(lambda: len(installs) == 2, 20, "the reload's retention")

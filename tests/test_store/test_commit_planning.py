"""One commit of many appends per device, as a live commit and a bulk one make them: records
numbered gap-free in arrival order, each append's range exactly its rows', across midnight, in
small parts framed on the commit thread, bulk ones and ones that open a segment on the pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records_util import DAY_NS, T0, records

from store import Log, StoreOptions

# A commit only when asked: every append below lands in one commit.
ONE_COMMIT = StoreOptions(flush_s=3600)
NEAR_MIDNIGHT = T0 + DAY_NS - 3 * 10**9

# An append: its records' time stamps as offsets in seconds from a base near midnight (some
# cross it); equal neighbours are one record, so an append may hold several.
APPEND = st.lists(st.integers(0, 6), min_size=1, max_size=4)


def expected(appends: list[list[int]]) -> list[list[tuple[int, int]]]:
    """Per append, its rows as (record number from 1, time stamp), by the rules of the store:
    an append's rows split by UTC day (its days in the order they first appear), consecutive
    parts of one day forming a group, groups numbered in turn; a record is a run of equal time
    stamps inside one part."""
    groups: list[tuple[int, list[tuple[int, list[int]]]]] = []
    for index, offsets in enumerate(appends):
        stamps = [NEAR_MIDNIGHT + s * 10**9 for s in offsets]
        for day in dict.fromkeys(ts // DAY_NS for ts in stamps):
            part = [ts for ts in stamps if ts // DAY_NS == day]
            if groups and groups[-1][0] == day:
                groups[-1][1].append((index, part))
            else:
                groups.append((day, [(index, part)]))
    out: list[list[tuple[int, int]]] = [[] for _ in appends]
    seq = 0
    for _, parts in groups:
        for index, part in parts:
            previous = None
            for ts in part:
                if ts != previous:
                    seq += 1
                    previous = ts
                out[index].append((seq, ts))
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(devices=st.lists(st.lists(APPEND, min_size=1, max_size=12), min_size=1, max_size=5),
       bulk=st.booleans())
def test_one_commit_numbers_every_append_as_it_arrived(tmp_path: Path,
                                                        devices: list[list[list[int]]],
                                                        bulk: bool) -> None:
    # Bulk: 300 variables a record, so a device's rows pass the 2,048 of a bulk part.
    n_vars = 300 if bulk else 3
    root = tmp_path / f"store-{len(list(tmp_path.iterdir()))}"

    async def run() -> None:
        async with await Log.open(root, ONE_COMMIT) as log:
            # A first record for half of the devices: their segment is open, the others'
            # part of the commit creates one.
            for k in range(0, len(devices), 2):
                await log.append_records(str(k + 1), records([T0], n_vars), commit_now=True)
            futures = [[log.submit_records(str(k + 1), records(
                            [NEAR_MIDNIGHT + s * 10**9 for s in offsets], n_vars))
                        for offsets in appends]
                       for k, appends in enumerate(devices)]
            await log.commit()
            for k, appends in enumerate(devices):
                device = str(k + 1)
                before = 1 if k % 2 == 0 else 0
                want = expected(appends)
                got = [await f for f in futures[k]]
                table = log.records(device)
                seqs = table.column("seq").to_pylist()
                times = table.column("ts").cast(pa.int64()).to_pylist()
                assert sorted(set(seqs)) == list(range(1, len(set(seqs)) + 1))
                for rows, result in zip(want, got, strict=True):
                    first = rows[0][0] + before
                    assert (result.first, result.last) == (first, rows[-1][0] + before)
                    for seq, ts in rows:
                        picked = pc.equal(table.column("seq"), seq + before)
                        assert set(pc.filter(table.column("ts").cast(pa.int64()),
                                             picked).to_pylist()) == {ts}
                assert len(seqs) == len(times) == n_vars * (
                    before + sum(len(a) for a in appends))

    asyncio.run(run())

"""Power cuts: acknowledged records survive the loss of the page cache (tests/test_store/powerloss.py).

Two recorded runs of appends, seals, compactions and quota deletions over three devices and the
journal, then 1,250 crash states each rebuilt from their file operations, each opened read-only
(and every eighth read-write, appended to and reopened): every acknowledged record present once
with its content, nothing else read as data. Also 80 states whose read-write open (recovery) is
recorded and cut by a second power loss. Then the same trace with one fsync call site of the
store removed at a time: the harness must fail for each one that guards acknowledged data.

More states, more workloads (nightly): `python tests/test_store/powerloss.py --states 50000`.
"""

from __future__ import annotations

import os

import pytest
from powerloss import Trace, record_trace, run_states

STATES = int(os.environ.get("STORE_POWERLOSS_STATES", "1250"))  # per recorded workload

# Removing any of these loses acknowledged data in some crash state; the harness must see it.
GUARDING = {
    "log.py:_open_sync#0": "directory: the store's sub-directories and commit log after their creation",
    "_writer.py:_device_stream#0": "directory: a new device's directory",
    # The commit log holds frames only; replay needs the bytes before them on disk.
    "_stream.py:create_segment#0": "file: a new segment's schema message",
    "_stream.py:create_segment#1": "directory: a new segment's entry",
    "_wal.py:append#0": "file: the commit log's record of a commit (the acknowledgement's fsync)",
    "_stream.py:sync#0": "file: a segment's own fsync: a frame too large for the commit log, or "
                         "a checkpoint's before the log is emptied",
    # Checkpoints skip sealed segments: this fsync makes their last frames durable.
    "_stream.py:seal#0": "file: a sealed segment's frames and end-of-stream marker",
    "_segment.py:write_ipc_file#0": "file: a sealed segment rewritten as an IPC file",
    "_stream.py:compact#0": "directory: that file's rename, before the old segment's unlink",
}
# Removing these loses nothing acknowledged (the harness shows it over the same states):
REDUNDANT = {
    # A lost unlink after the rename leaves both names; `load` keeps the IPC file.
    "_stream.py:compact#1": "directory: the old stream segment's unlink after compaction",
    # A lost quota deletion brings back a delivered segment, deleted again when room is needed.
    "_stream.py:delete#0": "directory: the quota's deletion of a delivered segment",
    # A lost emptying replays records whose frames the checkpoint made durable: they compare
    # equal and change nothing (segments gone since are skipped).
    "_wal.py:reset#0": "file: the commit log emptied at a checkpoint",
    # `seqs` keeps seq numbers from being given again once their last batches rot; against a
    # power cut the segments and the commit log hold every acknowledged number already.
    "_wal.py:write_high_water#0": "file and directory: the `seqs` file before the log is emptied",
}


@pytest.fixture(scope="module")
def trace() -> Trace:
    return record_trace(seed=1, appends=150)


def test_every_fsync_site_is_classified(trace: Trace) -> None:
    """A new fsync (a reworked commit path) must be added to GUARDING or REDUNDANT, with why."""
    assert set(trace.sites()) == set(GUARDING) | set(REDUNDANT), trace.sites()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_acknowledged_records_survive_every_crash_state(trace: Trace, seed: int) -> None:
    workload = trace if seed == 1 else record_trace(seed=seed, appends=150)
    result = run_states(workload, STATES, seed=seed + 10, time_budget_s=120)
    assert not result.failures, "\n".join(result.failures[:10])
    # Bounded in time, but never quietly small: a slow machine must not pass on a few states.
    assert result.states >= min(STATES, 1000), result.states


@pytest.mark.slow
def test_a_power_cut_during_recovery_loses_nothing(trace: Trace) -> None:
    """Crash states opened read-write (torn tails cut, reports journaled, an append), their
    recovery recorded in turn and cut by a second power loss at 6 points each."""
    result = run_states(trace, 80, seed=4, writer_every=1, nested_states=6, time_budget_s=40)
    assert not result.failures, "\n".join(result.failures[:10])
    assert result.states >= 50, result.states


@pytest.mark.parametrize("site", sorted(GUARDING))
def test_the_harness_fails_without_a_guarding_fsync(trace: Trace, site: str) -> None:
    result = run_states(trace.without_site(site), 1500, seed=3, stop_at_first=True)
    assert result.failures, f"fsync at {site} removed and {result.states} crash states passed"


@pytest.mark.slow
@pytest.mark.parametrize("site", sorted(REDUNDANT))
def test_the_harness_passes_without_a_redundant_fsync(trace: Trace, site: str) -> None:
    result = run_states(trace.without_site(site), 300, seed=5, time_budget_s=60)
    assert not result.failures, f"fsync at {site} removed: " + "\n".join(result.failures[:5])
    assert result.states >= 100, result.states

"""A month of records behind a server out of reach, seen through the web UI (docs/behaviour.md
§5.3, §10): the dashboard's status (each server's backlog) and `/api/export` of the month keep
the gateway's process small (a 512 MB box, docs/architecture.md §7). Measured in a process of
its own (`export_memory_probe.py`, set up as `sunpm run`), so the figure is the gateway's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("export_memory_probe.py")
ROOT = Path(__file__).resolve().parents[3]


def test_a_months_backlog_and_its_export_keep_the_gateway_small(tmp_path: Path) -> None:
    """The status read each device's whole backlog, every column, and kept each record's
    time; the dashboard asks for it every few seconds. For two inverters polled every 10 s over
    a month, answering the dashboard then the export took the process some 145 MB above its
    resting size. The status now reads the times alone, a segment at a time, and keeps each
    day's first: about 65 MB, most of it the export's first windows and the allocator's slack."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("the peak resident size cannot be reset here (/proc/self/clear_refs)")
    done = subprocess.run([sys.executable, str(PROBE), str(tmp_path), "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["backlog"] > 30          # a DATA file a day at least: the month waits
    assert figures["size"] > 2**20
    # The backlog's times and a day of records at a time: a few MB, and the allocator's slack.
    assert figures["peak_mib"] - figures["rest_mib"] < 100, figures

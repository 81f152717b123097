"""Peak resident memory of one side of a benchmark, measured in this process.

Linux keeps the process's high-water mark (`VmHWM`) and lets the process reset it (writing 5 to
`/proc/self/clear_refs`), so ours and the baseline each get their own exact peak without a
sampling thread stealing CPU from the measure. Where the reset is refused, the peak is the
process's since start (`ru_maxrss`) and `PeakRss.exact` says so.
"""

from __future__ import annotations

import gc
import resource
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Self


def reset_peak() -> bool:
    """Start a new high-water mark at the current resident size; False if the kernel refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """The high-water mark of this process's resident memory, in MB (2**20 bytes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_anon_mb() -> float:
    """Resident memory not backed by a file (what the process allocated), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """The highest resident size seen while inside any of its `with` blocks, in MB.

    Resident size counts the pages of memory-mapped files read (the store reads its segments
    that way): reclaimable page cache, not allocations. With `sample_anon`, a thread also
    samples the anonymous part every 10 ms (`anon_mb`), which tells the two apart; the kernel
    keeps no high-water mark of it.
    """

    def __init__(self, *, sample_anon: bool = False) -> None:
        self.peak_mb = 0.0
        self.exact = True
        self.sample_anon = sample_anon
        self.peak_anon_mb = 0.0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> Self:
        # What the previous side left behind is not this side's: garbage, and memory Arrow's
        # pool still holds after freeing it, go back before the mark is reset.
        gc.collect()
        if "pyarrow" in sys.modules:
            sys.modules["pyarrow"].default_memory_pool().release_unused()
        self.exact = reset_peak() and self.exact
        if self.sample_anon:
            self._stop.clear()
            self._sampler = threading.Thread(target=self._sample, name="rss-anon", daemon=True)
            self._sampler.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.peak_mb = max(self.peak_mb, peak_rss_mb())
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self._sampler = None

    def _sample(self) -> None:
        while True:
            self.peak_anon_mb = max(self.peak_anon_mb, rss_anon_mb())
            if self._stop.wait(0.01):
                return

    @property
    def anon_mb(self) -> float:
        return round(self.peak_anon_mb, 1)

    @property
    def mb(self) -> float:
        return round(self.peak_mb, 1)

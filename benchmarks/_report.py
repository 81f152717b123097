"""The docs/style.md §10 figure line, built one way for every benchmark.

A benchmark passes its raw per-run measures; this module takes the medians and the speedup by
the §10 rule (theirs / ours for a time, ours / theirs for a rate, a unit ending in "/s"), so no
benchmark can get the direction of the ratio wrong. Benchmarks import it as `_report`: they run as
scripts (`python benchmarks/<figure>.py`), which puts this directory first on sys.path.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence


def speedup(unit: str, ours: float, theirs: float) -> float:
    """How many times better ours is than theirs, whatever the unit."""
    return ours / theirs if unit.endswith("/s") else theirs / ours


def figure_line(figure: str, baseline: str | None, unit: str, ours: Sequence[float],
                theirs: Sequence[float] | None, *, peak_rss_mb: float,
                theirs_peak_rss_mb: float | None = None, digits: int | None = 3,
                speedup_digits: int = 2, **extra: object) -> dict[str, object]:
    """One §10 line: `ours`/`theirs` are the medians of the runs given, rounded to `digits`
    (None: to an integer); the speedup comes from the unrounded medians. `peak_rss_mb` is the
    peak resident memory while ours ran (every line carries it), `theirs_peak_rss_mb` the
    baseline's; `extra` follows."""
    ours_m = statistics.median(ours)
    line: dict[str, object] = {"figure": figure, "baseline": baseline, "unit": unit,
                               "ours": round(ours_m, digits)}
    if theirs is not None:
        theirs_m = statistics.median(theirs)
        line["theirs"] = round(theirs_m, digits)
        line["speedup"] = round(speedup(unit, ours_m, theirs_m), speedup_digits)
    line["peak_rss_mb"] = round(peak_rss_mb, 1)
    if theirs_peak_rss_mb is not None:
        line["theirs_peak_rss_mb"] = round(theirs_peak_rss_mb, 1)
    line.update(extra)
    return line


def emit(line: dict[str, object]) -> None:
    print(json.dumps(line), flush=True)

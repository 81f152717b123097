"""benchmarks/_report.py: medians and the speedup direction of the docs/style.md §10 line."""

from __future__ import annotations

from _bench_load import load_benchmark

report = load_benchmark("_report")


def test_time_speedup_is_theirs_over_ours_from_medians() -> None:
    line = report.figure_line("f", "naive", "s", [0.3, 0.1, 0.2], [5.0, 1.0, 2.0],
                              peak_rss_mb=41.26, theirs_peak_rss_mb=80.0, digits=3,
                              speedup_digits=1, n=3)
    assert line == {"figure": "f", "baseline": "naive", "unit": "s", "ours": 0.2, "theirs": 2.0,
                    "speedup": 10.0, "peak_rss_mb": 41.3, "theirs_peak_rss_mb": 80.0, "n": 3}


def test_rate_speedup_is_ours_over_theirs_and_digits_none_rounds_to_int() -> None:
    line = report.figure_line("f", "db", "records/s", [900.4, 1000.6, 1100.0], [10.0, 20.0, 30.0],
                              peak_rss_mb=1.0, digits=None)
    assert line["ours"] == 1001 and isinstance(line["ours"], int)
    assert line["theirs"] == 20
    assert line["speedup"] == round(1000.6 / 20.0, 2)


def test_speedup_uses_unrounded_medians() -> None:
    line = report.figure_line("f", "b", "s", [0.0014], [0.0101], peak_rss_mb=1.0, digits=3,
                              speedup_digits=3)
    assert line["ours"] == 0.001 and line["speedup"] == round(0.0101 / 0.0014, 3)


def test_no_baseline_has_no_theirs_nor_speedup() -> None:
    assert report.figure_line("gateway_load", None, "s", [1.0], None, peak_rss_mb=3) == {
        "figure": "gateway_load", "baseline": None, "unit": "s", "ours": 1.0, "peak_rss_mb": 3}


def test_peak_rss_follows_a_reset_of_the_high_water_mark() -> None:
    memory = load_benchmark("_memory")
    peak = memory.PeakRss()
    with peak:
        ballast = bytearray(64 * 2**20)
        ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page: resident
    del ballast
    assert peak.mb >= 64
    if not peak.exact:
        return  # a kernel refusing the reset: the process-wide peak is all there is
    small = memory.PeakRss()
    with small:
        pass
    assert small.mb < peak.mb - 32

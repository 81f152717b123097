"""benchmarks/acquisition_load.py at a tiny size: both sides record every value and it reports
its figures."""

from __future__ import annotations

from _bench_load import load_benchmark


def test_acquisition_load_smoke() -> None:
    (line,) = load_benchmark("acquisition_load").run(((3, 20, 1),), 2.0, plant="lean")
    assert line["figure"] == "acquisition_load" and line["devices"] == 3
    assert line["values_expected"] == line["values_stored"] == line["baseline_values_stored"]
    assert int(line["values_stored"]) >= 3 * 20 * 2  # type: ignore[call-overload]
    assert line["overruns"] == 0 and line["records_dropped"] == 0
    assert isinstance(line["ours"], float) and line["ours"] > 0
    assert isinstance(line["speedup"], float) and line["speedup"] > 0
    assert isinstance(line["peak_rss_mb"], float) and line["peak_rss_mb"] > 0
    assert isinstance(line["fsyncs_per_s"], float) and line["fsyncs_per_s"] > 0
    assert isinstance(line["write_bytes_per_byte_stored"], float)

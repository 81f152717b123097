"""benchmarks/rtu_bus.py at a tiny size: it runs, sweeps the simulated bus and reports its
figures, a switched-off unit included."""

from __future__ import annotations

from _bench_load import load_benchmark


def test_rtu_bus_smoke() -> None:
    on, off = load_benchmark("rtu_bus").run(units=2, registers=4, timeout_ms=50, n=1,
                                            speeds=(19200,))
    for line in (on, off):
        assert line["figure"] == "rtu_bus" and line["speed"] == 19200
        assert line["requests_per_sweep"] == 2
        assert isinstance(line["speedup"], float) and 0 < line["speedup"] <= 1.01
        assert isinstance(line["peak_rss_mb"], float) and line["peak_rss_mb"] > 0
        # The simulated devices saw at least 3.5 characters of 11 bits before every request.
        assert isinstance(line["min_silence_ms"], float)
        assert line["min_silence_ms"] >= 38.5 / 19200 * 1000
    assert (on["switched_off_unit"], off["switched_off_unit"]) == (None, 2)
    # Two requests of 8 bytes; a reply of 4 registers is 13 bytes, and unit 2 sends none.
    assert (on["bytes_on_wire_per_sweep"], off["bytes_on_wire_per_sweep"]) == (42, 29)

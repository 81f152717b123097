"""benchmarks/rtu_bus.py at a tiny size: it runs, sweeps the simulated bus and reports its
figures, a switched-off unit included."""

from __future__ import annotations

from _bench_load import load_benchmark


def test_rtu_bus_smoke() -> None:
    # A loaded box can hold a simulated reply past a short timeout, which fails the baseline's
    # sweep; 200 ms keeps the smoke run about a second and out of that margin.
    lines = load_benchmark("rtu_bus").run(units=2, registers=4, timeout_ms=200, n=1,
                                          speeds=(19200,))
    wire_on, pymodbus_on, wire_off, pymodbus_off = lines
    assert {line["figure"] for line in lines} == {"rtu_bus"}
    assert wire_on["baseline"] == wire_off["baseline"] == "theoretical minimum of the frames " \
        "on the wire"
    assert str(pymodbus_on["baseline"]).startswith("pymodbus ")
    for line in lines:
        assert line["speed"] == 19200 and line["requests_per_sweep"] == 2
        assert isinstance(line["speedup"], float) and line["speedup"] > 0
        assert isinstance(line["peak_rss_mb"], float) and line["peak_rss_mb"] > 0
        # The simulated devices saw at least 3.5 characters of 11 bits before every request.
        assert isinstance(line["min_silence_ms"], float)
        assert line["min_silence_ms"] >= line["required_silence_ms"] == 2.005
    for line in (wire_on, wire_off):
        assert line["speedup"] <= 1.01                 # nothing beats the wire
    for line in (pymodbus_on, pymodbus_off):
        assert isinstance(line["baseline_min_silence_ms"], float)
    assert (wire_on["switched_off_unit"], wire_off["switched_off_unit"]) == (None, 2)
    # Two requests of 8 bytes; a reply of 4 registers is 13 bytes, and unit 2 sends none.
    assert (wire_on["bytes_on_wire_per_sweep"], wire_off["bytes_on_wire_per_sweep"]) == (42, 29)

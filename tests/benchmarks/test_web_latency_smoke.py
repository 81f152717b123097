"""benchmarks/web_latency.py at a tiny size: the service answers every page, and the figures
come out in the docs/style.md §10 shape."""

from __future__ import annotations

from _bench_load import load_benchmark


def test_web_latency_smoke() -> None:
    bench = load_benchmark("web_latency")
    lines = bench.run(3, 2)
    assert [line["page"] for line in lines] == list(bench.PAGES)
    for line in lines:
        assert line["figure"] == "web_latency" and line["devices"] == 3 and line["n"] == 2
        assert isinstance(line["ours"], float) and line["ours"] > 0
        assert isinstance(line["theirs"], float) and line["theirs"] > 0
        assert isinstance(line["peak_rss_mb"], float) and line["peak_rss_mb"] > 0
        assert int(line["bytes"]) > 0  # type: ignore[call-overload]

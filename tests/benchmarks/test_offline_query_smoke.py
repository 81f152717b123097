"""benchmarks/offline_query.py at a tiny size: both sides run as processes (ours alone and through
`sunpm sd serve`), agree on the answers, and the figure lines carry the speedup and each side's
peak RSS."""

from __future__ import annotations

from _bench_load import load_benchmark


def test_offline_query_smoke() -> None:
    lines = load_benchmark("offline_query").run(devices=2, days=2, period_s=7200, variables=3,
                                                n=1)
    # Two questions, each against three baselines (delivered DATA files, wide daily CSV, the
    # native DuckDB floor), ours as a process alone and answered by a server.
    assert [line["figure"] for line in lines] == [
        f"offline_query_{question}{mode}" for question in ("daily_energy", "hourly_power")
        for _ in range(3) for mode in ("", "_served")]
    assert len({line["baseline"] for line in lines}) == 3
    assert lines[4]["theirs_load_s"] >= 0 and "theirs_load_s" not in lines[0]
    for line in lines:
        assert line["unit"] == "s"
        for key in ("ours", "theirs", "speedup", "peak_rss_mb", "theirs_peak_rss_mb"):
            assert isinstance(line[key], (int, float)) and line[key] > 0, key  # type: ignore[operator]
    for line in lines[1::2]:
        for key in ("ours_first_s", "ours_start_s", "client_peak_rss_mb"):
            assert isinstance(line[key], (int, float)) and line[key] > 0, key  # type: ignore[operator]
    assert lines[0]["answer_rows"] == 2 * 2  # two devices, two days
    assert lines[6]["answer_rows"] == 2 * 2 * 12  # a record every two hours

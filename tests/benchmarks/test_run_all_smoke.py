"""`python -m benchmarks --quick`: runs the chosen benchmarks, writes their lines to one results
file with the run's conditions, and draws the chart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _bench_load import ROOT, load_benchmark


def test_run_all_collects_lines_and_draws_the_chart(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-cold", "--only", "store_query",
         "export_csv", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=True)
    lines = [json.loads(t) for t in (out / "results.jsonl").read_text().splitlines()]
    assert [line["figure"] for line in lines] == ["export_csv", "export_csv", "store_query"]
    assert all(line["peak_rss_mb"] > 0 for line in lines)
    run = json.loads((out / "run.json").read_text())
    assert run["quick"] is True and run["failed"] == {}
    assert set(run["benchmarks"]) == {"export_csv", "store_query"}
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "store_query" in done.stdout and "[warm]" in done.stdout


def test_run_all_finds_every_benchmark_and_reports_failures(tmp_path: Path) -> None:
    run_all = load_benchmark("run_all")
    names = {p.stem for p in run_all.benchmark_scripts()}
    assert {"store_append", "store_open", "store_query", "poll_sweep", "export_csv"} <= names
    assert not {n for n in names if n.startswith("_") or n == "run_all"}
    broken = tmp_path / "broken.py"
    broken.write_text('import sys\nprint(\'{"figure": "x"}\')\nsys.exit("it broke")\n')
    lines, error = run_all.run_script(broken, quick=True, no_cold=False)
    assert lines == [{"figure": "x"}] and error.startswith("exit status 1: it broke")


def test_verdicts_name_each_target_and_whether_it_holds() -> None:
    run_all = load_benchmark("run_all")
    assert run_all.verdicts({"speedup": 1.98, "target_speedup": 2.0, "cpu_speedup": 2.5,
                             "target_cpu_speedup": 2, "ours": 0.05, "target_sweep_s": 1.0}) == (
        "speedup>=2: NO, cpu_speedup>=2: yes, ours<=1: yes")
    assert run_all.verdicts({"ours": 2.5, "target_s": 2.0}) == "ours<=2: NO"
    assert run_all.verdicts({"speedup": 3.0}) == ""

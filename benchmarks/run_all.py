"""Run every benchmark of this directory, collect their JSON lines into one results file, and
draw ours against each baseline.

    python -m benchmarks [--quick] [--only NAME ...] [--out DIR] [--no-cold]
    python benchmarks/run_all.py ...

Each benchmark runs in its own process, one after another (its peak memory is its own; two at
once would only measure each other on a 2-core box), with the repository root first on
PYTHONPATH. `--quick` passes `--quick` (a smoke size) to the benchmarks that take it. Written in
DIR (default benchmarks/results/):
- `results.jsonl`: every figure line, in run order, exactly as the benchmarks printed them;
- `run.json`: when and where: date, cores, load average before and after each benchmark, the
  commit, the flags, the benchmarks that failed;
- `chart.png` (needs matplotlib, the `bench` extra): per line, how many times better ours is
  than that baseline, on a log scale around 1x, with the line's `target_speedup` if it has one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
NOT_BENCHMARKS = {"run_all.py", "__main__.py", "__init__.py"}
TIMEOUT_S = 3600


def benchmark_scripts() -> list[Path]:
    return sorted(p for p in BENCHMARKS.glob("*.py")
                  if not p.name.startswith("_") and p.name not in NOT_BENCHMARKS)


def takes_flag(script: Path, flag: str) -> bool:
    return f'"{flag}"' in script.read_text()


def run_script(script: Path, quick: bool, no_cold: bool) -> tuple[list[dict[str, object]], str]:
    """The figure lines one benchmark printed, and an error text ('' when it succeeded)."""
    command = [sys.executable, str(script)]
    if quick and takes_flag(script, "--quick"):
        command.append("--quick")
    if no_cold and takes_flag(script, "--no-cold"):
        command.append("--no-cold")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                              cwd=ROOT, env=env, check=False)
    except subprocess.TimeoutExpired:
        return [], f"no result within {TIMEOUT_S} s"
    sys.stderr.write(done.stderr)
    lines = []
    for text in done.stdout.splitlines():
        if text.startswith("{"):
            try:
                lines.append(json.loads(text))
            except ValueError:
                return lines, f"not a JSON line: {text[:200]}"
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return lines, f"exit status {done.returncode}: {tail[0][:300]}"
    if not lines:
        return lines, "printed no figure line"
    return lines, ""


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=ROOT, check=False, timeout=10)
    except OSError:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                           cwd=ROOT, check=False, timeout=10).stdout.strip()
    return done.stdout.strip() + ("+uncommitted" if dirty else "")


def short_baseline(line: dict[str, object], width: int = 64) -> str:
    """The baseline named in a few words; a page-cache state comes first (cold and warm lines
    of one figure share their baseline's wording otherwise)."""
    text = str(line.get("baseline"))
    cache = line.get("page_cache")
    if isinstance(cache, str):
        text = f"[{cache.split()[0]}] {text}"
    return text if len(text) <= width else text[:width - 1] + "…"


# A line's target fields: (field, the measure it bounds, True when the measure must reach it).
TARGETS = (("target_speedup", "speedup", True), ("target_cpu_speedup", "cpu_speedup", True),
           ("target_s", "ours", False), ("target_sweep_s", "ours", False))


def verdicts(line: dict[str, object]) -> str:
    """Which of the line's targets hold: `speedup>=2: no`, `ours<=1: yes` ..."""
    out = []
    for field, measure, at_least in TARGETS:
        target, value = line.get(field), line.get(measure)
        if not isinstance(target, (int, float)) or not isinstance(value, (int, float)):
            continue
        holds = value >= target if at_least else value <= target
        out.append(f"{measure}{'>=' if at_least else '<='}{target:g}: {'yes' if holds else 'NO'}")
    return ", ".join(out)


def table(lines: list[dict[str, object]]) -> str:
    """A plain-text table of the figures, one row per line."""
    keys = ("figure", "baseline", "unit", "ours", "theirs", "speedup", "peak_rss_mb")
    rows = [[*keys, "targets"]]
    for line in lines:
        rows.append([short_baseline(line) if k == "baseline" else str(line.get(k, ""))
                     for k in keys] + [verdicts(line)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     for row in rows)


def chart(lines: list[dict[str, object]], path: Path, title: str) -> bool:
    """Speedup of ours over each baseline, one bar per line; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [line for line in lines if isinstance(line.get("speedup"), (int, float))
             and float(line["speedup"]) > 0]  # type: ignore[arg-type]
    if not shown:
        return False
    labels = [f"{line['figure']}: {short_baseline(line, 60)}" for line in shown]
    speedups = [float(line["speedup"]) for line in shown]  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(12.5, 0.42 * len(shown) + 1.4))
    positions = list(range(len(shown)))[::-1]
    targets = [_target(line) for line in shown]
    # Green where the line's target holds (or, without one, where ours is ahead).
    colours = ["#2e7d32" if s >= (1.0 if t is None else t) else "#c62828"
               for s, t in zip(speedups, targets, strict=True)]
    ax.barh(positions, speedups, color=colours, height=0.6)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(positions, labels, fontsize=7.5)
    ax.set_xlabel("speedup: how many times better ours is (log scale; < 1: the baseline wins)")
    ax.set_title(title, fontsize=10)
    marked = [(y, t) for y, t in zip(positions, targets, strict=True) if t is not None]
    if marked:
        ax.scatter([t for _, t in marked], [y for y, _ in marked], marker="D", s=28,
                   color="black", zorder=3, label="target")
        ax.legend(loc="lower right", fontsize=7)
    for y, line, value, target in zip(positions, shown, speedups, targets, strict=True):
        unit = line.get("unit", "")
        ratio = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
        ax.annotate(f"  {ratio}x  (ours {_num(line.get('ours'))} vs "
                    f"{_num(line.get('theirs'))} {unit})",
                    (max(value, target or 0.0), y), va="center", fontsize=7)
    everything = speedups + [t for _, t in marked] + [1.0]
    ax.set_xlim(min(everything) / 3, max(everything) * 30)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _target(line: dict[str, object]) -> float | None:
    target = line.get("target_speedup")
    return float(target) if isinstance(target, (int, float)) else None


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes, where supported")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="benchmarks to run (file names without .py)")
    parser.add_argument("--out", type=Path, default=BENCHMARKS / "results",
                        help="directory of results.jsonl, run.json and chart.png")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip cold page-cache runs (they slow everyone on the box)")
    args = parser.parse_args(argv)
    scripts = benchmark_scripts()
    if args.only:
        unknown = set(args.only) - {p.stem for p in scripts}
        if unknown:
            parser.error(f"no such benchmark: {', '.join(sorted(unknown))}")
        scripts = [p for p in scripts if p.stem in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    run: dict[str, object] = {
        "started": started.isoformat(timespec="seconds"), "cores": os.cpu_count(),
        "quick": args.quick, "no_cold": args.no_cold, "commit": _commit(),
        "python": sys.version.split()[0], "benchmarks": {}, "failed": {}}
    lines: list[dict[str, object]] = []
    for script in scripts:
        load_before = os.getloadavg()
        began = time.perf_counter()
        print(f"{script.stem} ...", file=sys.stderr, flush=True)
        got, error = run_script(script, args.quick, args.no_cold)
        lines.extend(got)
        run["benchmarks"][script.stem] = {  # type: ignore[index]
            "seconds": round(time.perf_counter() - began, 1), "lines": len(got),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}
        if error:
            run["failed"][script.stem] = error  # type: ignore[index]
            print(f"{script.stem}: FAILED: {error}", file=sys.stderr, flush=True)
    run["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results = args.out / "results.jsonl"
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (args.out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    title = (f"sunpm benchmarks, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores"
             + (", quick sizes" if args.quick else ""))
    drawn = chart(lines, args.out / "chart.png", title)
    print(table(lines))
    print(f"\n{len(lines)} lines -> {results}" + (
        f"; chart -> {args.out / 'chart.png'}" if drawn else
        "; no chart (matplotlib missing: pip install 'sunpm[bench]')"))
    return 1 if run["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

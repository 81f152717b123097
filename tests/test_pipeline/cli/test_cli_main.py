"""The `sunpm` entry point itself: behaviour shared by every command family."""

from __future__ import annotations

import importlib.metadata
import os
import resource
import subprocess
import sys
from pathlib import Path

SUNPM = str(Path(sys.executable).with_name("sunpm"))


def test_help_lists_every_command_family() -> None:
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"],
                          capture_output=True, text=True, timeout=60, check=True)
    for family in ("config", "export", "discover", "tic", "modbus"):
        assert family in done.stdout


def test_help_writes_nothing_on_stderr_and_imports_nothing_heavy() -> None:
    # Third-party warnings (asyncssh under cryptography >= 51) once filled stderr before any
    # command ran; and every package imported up front made `--help` take a second.
    done = subprocess.run([SUNPM, "--help"], capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stderr == ""
    probe = ("import sys; from pipeline.cli import build_parser; build_parser(); "
             "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                timeout=60, check=True).stdout.split())
    heavy = {"asyncssh", "cryptography", "pyarrow", "duckdb", "polars", "pymodbus", "serial",
             "tqdm", "lupa", "aiomqtt", "httpx", "config", "store", "exporters"}
    assert loaded & heavy == set()


def test_what_the_commands_import_raises_no_third_party_warning() -> None:
    # With cryptography >= 51 (what a fresh install gets), asyncssh's import warned ten times.
    modules = ("exporters.transports", "exporters.sources", "pipeline.drivers.modbus.tcp",
               "pipeline.drivers.modbus.rtu", "pipeline.drivers.tic", "pipeline.drivers.sunspec",
               "store")
    done = subprocess.run([sys.executable, "-W", "error", "-c",
                           "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)",
                           *modules], capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stderr) == (0, "")


def test_help_answers_within_the_startup_budget() -> None:
    # The budget is 0.3 s of start-up work (0.1 s taken, 1 s when every package was imported up
    # front), counted in the CPU seconds of the process: its wall time also counts the wait for a
    # core, which on a loaded CI box took longer than the budget. The best of five absorbs what a
    # loaded box adds to the work itself (cold caches).
    cpu_s = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([SUNPM, "--help"], capture_output=True, timeout=60, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    assert min(cpu_s) < 0.3, cpu_s


def test_version_prints_the_installed_version() -> None:
    done = subprocess.run([SUNPM, "--version"], capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout == f"sunpm {importlib.metadata.version('sunpm')}\n"
    assert done.stderr == ""


def test_reader_closing_the_pipe_early_is_not_a_crash(tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "init", str(site)],
                   capture_output=True, timeout=60, check=True)
    # The reader is gone before show writes a byte (`sunpm config show DIR | head -c0`).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "show", str(site),
                               "--json"], stdout=write_end, stderr=subprocess.PIPE, timeout=60,
                              check=False)
    finally:
        os.close(write_end)
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.returncode == 0

"""The `sunpm` entry point itself: behaviour shared by every command family."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_help_lists_every_command_family() -> None:
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"],
                          capture_output=True, text=True, timeout=60, check=True)
    for family in ("config", "export", "discover", "tic", "modbus"):
        assert family in done.stdout


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

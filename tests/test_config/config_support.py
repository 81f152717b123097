"""Helpers of the config tests: the golden examples of docs/formats.md."""

from __future__ import annotations

from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
CASES = Path(__file__).parent / "cases"

#: The site of docs/formats.md §6: its daq.csv and every definition file it names (§8.5, §9.5).
EXAMPLE_DEFS = (
    "WPM00BDE4_IO.csv", "WPM00BDE4_TIC_LINKY.csv", "inv_small.csv", "meter_small.csv",
    "WPM00BDE4_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP.csv",
)


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()



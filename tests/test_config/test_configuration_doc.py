"""docs/configuration.md is what `python -m config.docs` writes from the parsers' own tables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from config import config_ini, daq_csv, definition, var_ini
from config.config_ini import KeySpec
from config.docs import MissingDoc, render

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"


def test_committed_file_is_the_generated_one() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `python -m config.docs > docs/configuration.md`")


def test_every_key_and_column_has_its_line() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE))
    names = {k.name for k in config_ini.KEY_TABLE} | set(var_ini.FIELDS) | \
        set(daq_csv.ETHERNET_COLUMNS) | set(daq_csv.SERIAL_COLUMNS) | \
        set(daq_csv.DEVICE_COLUMNS) | set(definition.HEADER_COLUMNS) | set(definition.COLUMNS)
    assert names - rows == set()


def test_a_key_added_without_its_description_stops_the_generation() -> None:
    added = KeySpec("SERVER_Colour", lambda _: "", "blue")
    with pytest.raises(MissingDoc, match=re.escape("config.ini: SERVER_Colour: no description")):
        render((*config_ini.KEY_TABLE, added))


def test_module_entry_point_prints_the_document() -> None:
    done = subprocess.run([sys.executable, "-m", "config.docs"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=True)
    assert done.stdout == render()


def test_server_2_lines_name_server_2_keys() -> None:
    """`MQTT2_TopicCommand` is set with `MQTT2_TopicResult`, not with server 1's key."""
    server_1_keys = {k.name for k in config_ini.KEY_TABLE
                     if re.match(r"(SERVER|FTP|HTTP|MQTT|DIR)_", k.name)}
    lines = [line for line in DOC.read_text(encoding="utf-8").splitlines()
             if re.match(r"^\| `(SERVER|FTP|HTTP|MQTT|DIR)2_", line)]
    assert lines
    wrong = [line for line in lines
             if set(re.findall(r"`([A-Za-z0-9_]+)`", line.split("|")[4])) & server_1_keys]
    assert wrong == []
    assert "set with `MQTT2_TopicResult` or not at all" in \
        next(line for line in lines if line.startswith("| `MQTT2_TopicCommand`"))

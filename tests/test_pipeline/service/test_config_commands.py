"""`apn` and `ftp` (SMS, local) set config.ini keys through `change_config` (docs/formats.md
§12.3): a bad value is an error and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.defaults import default_files
from pipeline.service.maintenance import MaintenanceError, change_config

UID = "WPM00BDE4"


@pytest.mark.parametrize("value", ["internet\nSYSTEM_UpdateCommand=curl x | sh",
                                   "internet\rSTORE_Path=/", "internet\r\n"])
def test_a_value_with_a_line_end_is_refused_and_changes_nothing(tmp_path: Path,
                                                                 value: str) -> None:
    for rel, data in default_files(UID).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    path = tmp_path / "CONFIG" / f"{UID}_config.ini"
    before = path.read_bytes()
    with pytest.raises(MaintenanceError, match=r"^MODEM_Apn: a line end in the value; "
                                               r"not written$"):
        change_config(tmp_path, UID, {"MODEM_Apn": value, "MODEM_Pin": "1234"})
    assert path.read_bytes() == before
    change_config(tmp_path, UID, {"MODEM_Apn": "plant.m2m"})
    assert path.read_bytes().endswith(b"MODEM_Apn=plant.m2m\n")

"""`apn` and `ftp` (SMS, local) set config.ini keys through `change_config` (docs/formats.md
§12.3): a bad value is an error and changes nothing."""

from __future__ import annotations

import threading
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


def _site(root: Path) -> Path:
    for rel, data in default_files(UID).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root / "CONFIG" / f"{UID}_config.ini"


def test_a_change_the_site_would_reject_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """config.ini alone is valid with the keys set, the site is not: `ftp` must not answer OK
    and leave a file the configuration watch then refuses (written, never in force)."""
    path = _site(tmp_path)
    path.write_bytes(path.read_bytes() + b"FTP_CaFile=ca.pem\n")    # unused while type none
    before = path.read_bytes()
    with pytest.raises(MaintenanceError) as caught:
        change_config(tmp_path, UID, {"SERVER_Type": "ftps", "FTP_Host": "ftp.example.net"})
    assert str(caught.value) == "FTP_CaFile: 'ca.pem' is missing from /CERT"
    assert path.read_bytes() == before
    (tmp_path / "CERT").mkdir(exist_ok=True)
    (tmp_path / "CERT" / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    change_config(tmp_path, UID, {"SERVER_Type": "ftps", "FTP_Host": "ftp.example.net"})
    assert b"SERVER_Type=ftps\n" in path.read_bytes()


def test_the_file_is_replaced_under_the_gateways_folder_lock(tmp_path: Path) -> None:
    """The gateway's reload and watch read the folder under its lock: never a file replaced
    while they read."""
    path = _site(tmp_path)
    before = path.read_bytes()
    lock = threading.Lock()
    done = threading.Event()

    def change() -> None:
        change_config(tmp_path, UID, {"MODEM_Apn": "plant.m2m"}, folder_lock=lock)
        done.set()

    with lock:
        worker = threading.Thread(target=change)
        worker.start()
        assert not done.wait(0.5)
        assert path.read_bytes() == before
    assert done.wait(30)
    worker.join(30)
    assert path.read_bytes().endswith(b"MODEM_Apn=plant.m2m\n")

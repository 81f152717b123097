"""TIC detection on a pty pair and the `TIC1` definition file it generates."""

from __future__ import annotations

import os

import pytest
from tic_ptys import pty_opener, repeating_meter

from config import parse_definition
from config.model import Daq
from pipeline.drivers.tic import TicMode, encode_frame
from pipeline.drivers.tic_discovery import (
    TicAlreadyConfigured,
    TicDetection,
    action_of,
    definition_name,
    definition_text,
    detect_tic,
    tic_device,
    unit_of,
)

HISTORIC = [("ADCO", "031664001115"), ("OPTARIF", "BASE"), ("ISOUSC", "30"),
            ("BASE", "000002080"), ("PTEC", "TH.."), ("IINST", "004"), ("IMAX", "090"),
            ("PAPP", "00910"), ("HHPHC", "A"), ("MOTDETAT", "000000")]
STANDARD = [("ADSC", "031664001115", None), ("VTIC", "02", None),
            ("DATE", "", "E210205083000"), ("EAST", "000001501", None),
            ("ERQ1", "000000012", None), ("IRMS1", "004", None), ("URMS1", "232", None),
            ("PREF", "12", None), ("SINSTS", "00720", None), ("SMAXSN", "07360", "E210205083000"),
            ("CCASN", "01234", "E210205083000"), ("NGTF", "      BASE      ", None)]


async def test_standard_meter_is_found_at_9600_with_every_label() -> None:
    async with repeating_meter(encode_frame(STANDARD, TicMode.STANDARD)) as path:
        found = await detect_tic(path, opener=pty_opener, listen_s=2.0)
    assert found is not None
    assert (found.mode, found.baud, found.address) == (TicMode.STANDARD, 9600, "031664001115")
    assert list(found.labels) == [g[0] for g in STANDARD]


async def test_historic_meter_is_found_at_1200_after_the_9600_slot() -> None:
    async with repeating_meter(encode_frame(HISTORIC, TicMode.HISTORIC)) as path:
        found = await detect_tic(path, opener=pty_opener, listen_s=0.5)
    assert found is not None and found.mode is TicMode.HISTORIC and found.baud == 1200
    assert found.labels["PAPP"] == "00910"


async def test_no_meter_gives_none(tmp_path: os.PathLike[str]) -> None:
    assert await detect_tic(os.path.join(tmp_path, "none"), opener=pty_opener, listen_s=0.2) is None
    async with repeating_meter(b"\x00\xff" * 40) as path:
        assert await detect_tic(path, opener=pty_opener, listen_s=0.3) is None


def test_generated_file_follows_the_label_rules_and_parses() -> None:
    detection = TicDetection(mode=TicMode.STANDARD, baud=9600, address="031664001115",
                             labels={g[0]: g[1] for g in STANDARD})
    text = definition_text(detection)
    assert text.splitlines() == [
        "tic;Meter;Enedis;Linky",
        "1;ADSC;;;;ADSC;;1;0;;1",
        "2;VTIC;;;;VTIC;;1;0;;4",
        "3;DATE;;;;DATE;;1;0;;0",
        "4;EAST;;;;EAST;;1;0;Wh;4",
        "5;ERQ1;;;;ERQ1;;1;0;varh;4",
        "6;IRMS1;;;;IRMS1;;1;0;A;4",
        "7;URMS1;;;;URMS1;;1;0;V;4",
        "8;PREF;;;;PREF;;1;0;kVA;4",
        "9;SINSTS;;;;SINSTS;;1;0;VA;4",
        "10;SMAXSN;;;;SMAXSN;;1;0;VA;4",
        "11;CCASN;;;;CCASN;;1;0;W;4",
        "12;NGTF;;;;NGTF;;1;0;;1",
    ]
    name = definition_name("WPM00BDE4", TicMode.STANDARD)
    assert name == "WPM00BDE4_TIC_LINKY_STD.csv"
    parsed = parse_definition(text.encode(), name)
    assert parsed.warnings == () and parsed.value.variables[0].tic_label == "ADSC"
    assert definition_name("U", TicMode.HISTORIC) == "U_TIC_LINKY.csv"


@pytest.mark.parametrize(("label", "unit"), [
    ("BASE", "Wh"), ("BBRHCJB", "Wh"), ("EASF01", "Wh"), ("EAIT", "Wh"), ("ERQ4", "varh"),
    ("ISOUSC", "A"), ("IINST2", "A"), ("IMAX", "A"), ("ADIR1", "A"), ("ADPS", "A"),
    ("UMOY3", "V"), ("PAPP", "VA"), ("SINSTI", "VA"), ("SMAXIN-1", "VA"), ("PCOUP", "kVA"),
    ("PMAX", "W"), ("CCAIN-1", "W"), ("PTEC", ""), ("HHPHC", "")])
def test_units_by_label(label: str, unit: str) -> None:
    assert unit_of(label) == unit


def test_actions_and_tic1_row() -> None:
    assert [action_of("ADCO", "031664001115"), action_of("PTEC", "TH.."),
            action_of("BASE", "000002080"), action_of("DATE", "")] == [1, 1, 4, 0]
    detection = TicDetection(mode=TicMode.HISTORIC, baud=1200, address="031664001115",
                             labels={"ADCO": "031664001115"})
    row = tic_device(Daq(), detection, "U_TIC_LINKY.csv")
    assert (row.index, row.name, row.serial_number, row.parameters, row.category, row.model) == \
        ("TIC1", "Linky", "031664001115", "1200", "Meter", "Linky")
    with pytest.raises(TicAlreadyConfigured, match="TIC1 is already configured; delete it first"):
        tic_device(Daq(devices=(row,)), detection, "U_TIC_LINKY.csv")

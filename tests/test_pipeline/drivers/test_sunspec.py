"""SunSpec discovery against SunSpec and non-SunSpec devices served by pymodbus on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import pytest
from _sunspec_sim import SunSpecImage, common_model, modbus_server, model, pymodbus_reader

from config import parse_definition
from config.model import Protocol, SerialPort
from pipeline.drivers._base import DiscoveryParams, RegisterReader
from pipeline.drivers.modbus.rtu import RtuBus
from pipeline.drivers.modbus.simulator import RtuResponder, SimulatedDevice, TcpSimulator
from pipeline.drivers.modbus.tcp import TcpConnection
from pipeline.drivers.sunspec import (
    ChainModel,
    GeneratedDefinition,
    Identity,
    SunSpecDevice,
    SunSpecScan,
    discover_sunspec,
    generate,
    measured_variables,
    write_definition,
)

GOLDEN = Path(__file__).parents[2] / "golden"
SMA = ("SMA", "Solar Inverter", "9301", "1.0", "SN-0001")
TIMEOUT_MS = 300


def _images() -> dict[int, list[tuple[int, list[int]]]]:
    # Device 4's 160 has two modules (L = 8 + 2 x 20); its 705 has NPt 3 (offset 5) and NCrv 2
    # (offset 6): L = 13 + 2 x (10 + 3 x 2).
    m160 = model(160, 48, [0xFFFE, 0xFFFF, 0, 0, 0, 0, 2, 0])
    m705 = model(705, 45, [1, 0, 0, 3, 2])
    return {
        # 1 is absent: no answer at all.
        2: [(0, list(range(10)))],                                   # a plain Modbus meter
        3: SunSpecImage([common_model(*SMA), model(103, 50), model(123, 24)]).blocks(),
        4: SunSpecImage([common_model("Fronius", "Symo 8.2-3-M", "", "1.2", "SN-4"),
                         model(101, 50), model(120, 26), model(121, 30), model(122, 44),
                         model(123, 24), m160, model(160, 48), m705], base=50000).blocks(),
        # 160 whose L (51) is not the fixed part plus whole 20-register modules.
        5: SunSpecImage([common_model("ABB", "PVS-100", "", "2", "SN-5"), model(160, 51)],
                        base=0).blocks(),
        # A chain that never ends: one vendor model after another.
        6: SunSpecImage([common_model("Loop", "L1", "", "1", "SN-6")]
                        + [model(64001, 0)] * 80).blocks(),
        # A chain whose L runs past register 65535.
        7: [(40000, [0x5375, 0x6E53, *common_model("Over", "O1", "", "1", "SN-7"),
                     64002, 30000])],
        # SunS but no common model first.
        8: SunSpecImage([model(103, 50)]).blocks(),
        # The same device as unit 3, answering a second unit id.
        9: SunSpecImage([common_model(*SMA), model(103, 50), model(123, 24)]).blocks(),
        # End model with its ID only (no L mapped).
        10: SunSpecImage([common_model("Kostal", "Plenticore", "", "1", "SN-10", length=65),
                          model(103, 50)], end=[0xFFFF]).blocks(),
    }


@contextlib.asynccontextmanager
async def _link(kind: str, port: int) -> AsyncIterator[RegisterReader]:
    if kind == "pymodbus":
        async with pymodbus_reader(port, TIMEOUT_MS) as reader:
            yield reader
        return
    conn = TcpConnection("127.0.0.1", port)
    try:
        yield conn
    finally:
        await conn.close()


async def _discover(first: int, last: int, max_devices: int = 240, link: str = "sunpm",
                    images: dict[int, list[tuple[int, list[int]]]] | None = None
                    ) -> tuple[list[str], list[SunSpecDevice]]:
    """A sweep of units `first`-`last` served with `images` (default `_images()`); the target
    reads "T" in the lines."""
    lines: list[str] = []
    async with modbus_server(_images() if images is None else images) as port, \
            _link(link, port) as reader:
        params = DiscoveryParams(ip="127.0.0.1", port=port, first_address=first,
                                 last_address=last, max_devices=max_devices, timeout_ms=TIMEOUT_MS)
        found = await discover_sunspec(reader, params, lines.append,
                                       target=f"127.0.0.1:{port}", interface="ethernet1",
                                       uid="WPM00BDE4", protocol=Protocol.MODBUS_TCP)
    return [line.replace(f"127.0.0.1:{port}", "T") for line in lines], list(found)


def _inverter(manufacturer: str, model_name: str, version: str, serial: str, *,
              delay_s: float = 0.0) -> SimulatedDevice:
    """A simulated SunSpec inverter: common model and model 103."""
    device = SimulatedDevice(delay_s=delay_s)
    for address, words in SunSpecImage([common_model(manufacturer, model_name, "", version,
                                                     serial), model(103, 50)]).blocks():
        device.set_words(address, words)
    return device


async def _discover_on_bus(pty_pair: tuple[int, str], units: dict[int, SimulatedDevice],
                           first: int, last: int, timeout_ms: int
                           ) -> tuple[list[str], list[SunSpecDevice]]:
    """A sweep of units `first`-`last` of a 115200-baud RTU bus where `units` answer."""
    master, path = pty_pair
    responder = RtuResponder(master, units)
    responder.start()
    bus = RtuBus(SerialPort(line=1, port="SERIAL1", speed=115200), path=path)
    bus.start()
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            found = await discover_sunspec(
                bus, DiscoveryParams(interface="serial1", first_address=first,
                                     last_address=last, timeout_ms=timeout_ms),
                lines.append, target="SERIAL1", interface="serial1", uid="U",
                protocol=Protocol.MODBUS_RTU)
    finally:
        await bus.close()
        await responder.stop()
    return lines, found


def test_generated_file_for_models_1_103_123_equals_the_spec_example(
        request: pytest.FixtureRequest) -> None:
    chain = [ChainModel(1, 40002, 66), ChainModel(103, 40070, 50), ChainModel(123, 40122, 24)]
    problems: list[str] = []
    made = generate("WPM00BDE4", Identity(*SMA[:5], device_address=1), Protocol.MODBUS_TCP,
                    chain, problems.append)
    # The golden file is docs/formats.md §8.5's example, copied byte for byte.
    golden = GOLDEN / "WPM00BDE4_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP.csv"
    if request.config.getoption("--update-golden"):
        golden.write_bytes(made.text.encode())
    assert made.name == golden.name
    assert made.text.encode() == golden.read_bytes()
    assert problems == []


@pytest.mark.parametrize("link", ["sunpm", "pymodbus"])
async def test_discovery_finds_exactly_the_sunspec_devices_among_others(link: str) -> None:
    lines, found = await _discover(1, 11, link=link)
    assert lines == [
        "Start of SunSpec detection on ethernet1, addresses 1-11, estimated duration 4 s",
        "NON SUNSPEC device found at @2 T",
        "SunSpec device found at @3 T",
        "Found table 1:66 at 40004@3 T",
        "Found table 103:50 at 40072@3 T",
        "Found table 123:24 at 40124@3 T",
        "SunSpec device found at @4 T",
        "Found table 1:66 at 50004@4 T",
        "Found table 101:50 at 50072@4 T",
        "Found table 120:26 at 50124@4 T",
        "Found table 121:30 at 50152@4 T",
        "Found table 122:44 at 50184@4 T",
        "Found table 123:24 at 50230@4 T",
        "Found table 160:48 at 50256@4 T",
        "Found table 160:48 at 50306@4 T",
        "Found table 705:45 at 50356@4 T",
        "SunSpec device found at @5 T",
        "Found table 1:66 at 4@5 T",
        "Found table 160:51 at 72@5 T",
        ("Error: @5 T: model 160 at 72: length 51 is not the fixed length 8 plus whole module "
         "blocks of 20 registers; fixed part only"),
        "SunSpec device found at @6 T",
        "Found table 1:66 at 40004@6 T",
        *[f"Found table 64001:0 at {40072 + 2 * k}@6 T" for k in range(63)],
        "Error: more than 64 models at @6 T",
        "Warning: @6 T: no measurement model; only parameters will be read",
        "SunSpec device found at @7 T",
        "Found table 1:66 at 40004@7 T",
        "Found table 64002:30000 at 40072@7 T",
        "Error: model chain passes register 65535 at @7 T",
        "Warning: @7 T: no measurement model; only parameters will be read",
        "SunSpec device found at @8 T",
        "Found table 103:50 at 40004@8 T",
        "Error: model 1 missing at @8 T",
        "SunSpec device found at @9 T",
        "Found table 1:66 at 40004@9 T",
        "Found table 103:50 at 40072@9 T",
        "Found table 123:24 at 40124@9 T",
        "Error: @9 T is the device found at @3",
        "SunSpec device found at @10 T",
        "Found table 1:65 at 40004@10 T",
        "Found table 103:50 at 40071@10 T",
        "End of SunSpec detection on ethernet1. 6 devices found.",
    ]
    assert [d.unit_id for d in found] == [3, 4, 5, 6, 7, 10]
    assert found[0].model_ids == (1, 103, 123) and found[0].identity.serial_number == "SN-0001"
    assert found[1].base == 50000 and found[2].base == 0
    # Every generated file passes the definition-file parser, without a warning.
    for device in found:
        parsed = parse_definition(device.definition.text.encode(), device.definition.name)
        assert parsed.warnings == ()
        assert len(parsed.value.variables) == len(device.definition.text.splitlines()) - 1


@pytest.mark.parametrize(("models", "measured"), [
    ([], False), ([(120, 26), (121, 30)], False), ([(64001, 4)], False),
    ([(701, 153), (713, 7)], True), ([(203, 105)], True), ([(802, 62)], True),
    ([(103, 50)], True),
])
def test_only_measurement_models_give_action_4_variables(models: list[tuple[int, int]],
                                                         measured: bool) -> None:
    chain = [ChainModel(1, 40002, 66)]
    address = 40070
    for model_id, length in models:
        chain.append(ChainModel(model_id, address, length, {}))
        address += 2 + length
    made = generate("WPM00BDE4", Identity(*SMA[:5], device_address=1), Protocol.MODBUS_TCP,
                    chain, lambda text: None)
    actions = {row.split(";")[5]: row.rsplit(";", 1)[1] for row in made.text.splitlines()[1:]}
    assert (measured_variables(made) > 0) is measured
    assert all(action != "4" for name, action in actions.items() if name.startswith("1_"))
    if measured:
        model_id = models[0][0]
        own = {n: a for n, a in actions.items() if n.startswith(f"{model_id}_")}
        # Every point but the header, scale factors and pads is recorded.
        assert {a for n, a in own.items() if not n.endswith(("_SF", "tableId", "tableSize"))
                and not n.endswith("Pad")} == {"4"}


async def test_a_device_without_measurement_model_is_warned_about() -> None:
    images = {1: SunSpecImage([common_model("ACME", "Box", "", "1", "SN-1"),
                               model(120, 26)]).blocks(),
              2: SunSpecImage([common_model("ACME", "Meter", "", "1", "SN-2"),
                               model(203, 105)]).blocks()}
    lines, found = await _discover(1, 2, images=images)
    assert [d.unit_id for d in found] == [1, 2]
    assert [line for line in lines if line.startswith("Warning:")] == [
        "Warning: @1 T: no measurement model; only parameters will be read"]


async def test_a_common_model_read_refused_whole_is_read_point_by_point() -> None:
    # The device declares L 66 but does not map Pad (40069): the 66-register read answers
    # exception 0x02, the identity points alone are readable.
    regs = [0x5375, 0x6E53, *common_model("Delta", "RPI M6A", "", "2", "SN-D"), *model(103, 50),
            0xFFFF, 0]
    pad = 40069 - 40000
    images = {1: [(40000, regs[:pad]), (40070, regs[pad + 1:])]}
    lines, found = await _discover(1, 1, images=images)
    assert not [line for line in lines if line.startswith("Error")]
    assert [(d.unit_id, d.identity) for d in found] == [
        (1, Identity("Delta", "RPI M6A", "", "2", "SN-D", device_address=1))]
    assert found[0].model_ids == (1, 103)


async def test_a_map_of_zeros_without_end_model_ends_at_the_first_id_0() -> None:
    # Registers past the map read as 0 on some devices: no model has id 0, so the walk ends
    # there, rather than listing 63 models "0:0" and a file full of their headers.
    images = {1: SunSpecImage([common_model("Zero", "Z1", "", "1", "SN-Z"), model(103, 50)],
                              end=[0] * 200).blocks()}
    lines, found = await _discover(1, 1, images=images)
    assert lines[1:] == [
        "SunSpec device found at @1 T",
        "Found table 1:66 at 40004@1 T",
        "Found table 103:50 at 40072@1 T",
        "Error: model id 0 at 40122@1 T: no end model; the chain ends there",
        "End of SunSpec detection on ethernet1. 1 devices found.",
    ]
    assert found[0].model_ids == (1, 103)


async def test_max_devices_stops_the_sweep() -> None:
    lines, found = await _discover(3, 10, max_devices=2)
    assert [d.unit_id for d in found] == [3, 4]
    assert lines[-1] == "End of SunSpec detection on ethernet1. 2 devices found."
    assert not any("@5 " in line for line in lines)


async def test_generated_names_cover_repeated_models_blocks_and_nested_groups() -> None:
    _, found = await _discover(4, 5)
    dev4 = found[0].definition
    rows = [line.split(";") for line in dev4.text.splitlines()[1:]]
    by_name = {r[5]: r for r in rows}
    assert dev4.name == "WPM00BDE4_SunSpec_inverter_Fronius_Symo_8.2-3-M_modbusTCP.csv"
    assert dev4.text.splitlines()[0] == "modbusTCP;Inverter;Fronius;Symo_8.2-3-M"
    # Repeating block: module k of 160 (ID, IDStr, then DCA), its scale factor at the top level.
    assert by_name["160_2_DCA"][1:5] == ["3", str(50256 + 8 + 20 + 9), "U16", "160_DCA_SF"]
    assert by_name["160_1_IDStr"][2:4] == ["50265_16", "String"]
    assert "160_3_DCA" not in by_name
    # The second 160 in the chain.
    assert by_name["160.2_1_DCWH"][3:5] == ["U32", "160.2_DCWH_SF"]
    assert by_name["160.2_tableId"][2] == "50304"
    # Nested groups counted from the device: NCrv 2 curves of NPt 3 points.
    assert by_name["705_2_3_Var"][3:5] == ["I16", "705_DeptRef_SF"]
    assert "705_3_1_V" not in by_name and "705_2_4_V" not in by_name
    assert by_name["705_1_RspTms"][4] == "705_RspTms_SF"
    # Actions: 160 instant, 705 parameters, scale factors parameters.
    assert by_name["160_1_DCA"][10] == "4" and by_name["705_1_1_V"][10] == "1"
    assert by_name["160_DCA_SF"][10] == "1"
    # Only the chain's first 123 carries the tags, and Indexes run 1..n in register order.
    assert by_name["123_WMaxLimPct"][6] == "cmdPwrPercent"
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    addresses = [int(r[2].split("_")[0]) for r in rows]
    assert addresses == sorted(addresses)
    # Device 5: the 160 that does not divide is described by its fixed part only.
    dev5_rows = found[1].definition.text.splitlines()
    assert dev5_rows[-1].split(";")[5] == "160_TmsPer"
    assert dev5_rows[0] == "modbusTCP;Inverter;ABB;PVS-100"


async def test_points_outside_l_and_their_scaled_points_are_left_out() -> None:
    # 103 cut to L 11: the voltages (offsets 5..10) are inside but V_SF (offset 11) is not, so
    # they go with it; the currents keep A_SF (offset 4).
    made = generate("U", Identity("M", "D", "", "", "", None), Protocol.MODBUS_RTU,
                    [ChainModel(1, 2, 66), ChainModel(103, 70, 11), ChainModel(64500, 83, 4)],
                    lambda text: None)
    names = [line.split(";")[5] for line in made.text.splitlines()[1:]]
    assert names[-2:] == ["64500_tableId", "64500_tableSize"]
    model_103 = [n for n in names if n.startswith("103_")]
    assert model_103 == ["103_tableId", "103_tableSize", "103_A", "103_AphA", "103_AphB",
                         "103_AphC", "103_A_SF"]
    assert made.name == "U_SunSpec_inverter_M_D_modbusRTU.csv"


def test_a_count_not_implemented_costs_no_more_than_the_registers_of_l() -> None:
    # NCrv and NPt read 0xFFFF on a device that does not implement them: 65535 curves of 65535
    # points each would be four billion points to place, of which only those inside L are kept.
    chain = [ChainModel(1, 40002, 66), ChainModel(705, 40070, 49, {"NPt": 0xFFFF,
                                                                   "NCrv": 0xFFFF})]
    started = time.process_time()          # CPU seconds: a loaded box does not stretch them
    made = generate("U", Identity("M", "D", "", "", "", None), Protocol.MODBUS_TCP, chain,
                    lambda text: None)
    assert time.process_time() - started < 2
    names = [row.split(";")[5] for row in made.text.splitlines()[1:]]
    # 13 fixed registers, curve 1's 10, then its points while they fit in L 49: 13 of them.
    assert names[-1] == "705_1_13_Var" and "705_2_ActPt" not in names
    parsed = parse_definition(made.text.encode(), made.name)
    assert parsed.warnings == ()


def test_numeric_scale_factor_becomes_coef_a() -> None:
    made = generate("U", Identity("M", "D", "", "", "", None), Protocol.MODBUS_TCP,
                    [ChainModel(1, 2, 66), ChainModel(305, 70, 36)], lambda text: None)
    rows = {line.split(";")[5]: line.split(";") for line in made.text.splitlines()[1:]}
    assert rows["305_Lat"][3:5] == ["I32", ""] and rows["305_Lat"][7] == "0.0000001"
    assert rows["305_Alt"][7] == "1"


def test_an_existing_file_with_other_content_gets_a_numbered_name(tmp_path: Path) -> None:
    first = GeneratedDefinition(name="U_SunSpec_inverter_M_D_modbusTCP.csv", text="a\n")
    other = GeneratedDefinition(name=first.name, text="b\n")
    assert write_definition(tmp_path, first).name == first.name
    assert write_definition(tmp_path, first).name == first.name          # reused
    assert write_definition(tmp_path, other).name == "U_SunSpec_inverter_M_D_modbusTCP_2.csv"
    assert write_definition(tmp_path, other).name == "U_SunSpec_inverter_M_D_modbusTCP_2.csv"
    third = GeneratedDefinition(name=first.name, text="c\n")
    assert write_definition(tmp_path, third).name == "U_SunSpec_inverter_M_D_modbusTCP_3.csv"
    assert (tmp_path / first.name).read_text() == "a\n"


def test_a_generated_file_is_fsynced_then_its_directory(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Durability is not visible from the file system of a running machine; what is synced is:
    # each fsync'ed descriptor is resolved to its path, in order.
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    made = GeneratedDefinition(name="U_SunSpec_inverter_M_D_modbusTCP.csv", text="a\n")
    path = write_definition(tmp_path, made)
    assert path.read_text() == "a\n"
    assert synced == [str(tmp_path / f".{made.name}.tmp"), str(tmp_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [made.name]


def _default_length(model_id: int, counts: dict[str, int]) -> int:
    """L of a model with 2 repetitions of every repeating group, from the JSON alone."""
    data = json.loads(resources.files("sunspec2").joinpath(
        "models", "json", f"model_{model_id}.json").read_text())

    def size(group: dict[str, object]) -> int:
        total = sum(int(p["size"]) for p in group.get("points", []))  # type: ignore[attr-defined]
        for sub in group.get("groups", []):  # type: ignore[attr-defined]
            count = sub.get("count")
            times = 1 if count is None else 2 if count == 0 else counts.get(count, 1) \
                if isinstance(count, str) else int(count)
            total += times * size(sub)
        return total

    return size(data["group"]) - 2


def test_every_shipped_model_generates_a_file_the_parser_accepts() -> None:
    root = resources.files("sunspec2").joinpath("models", "json")
    ids = sorted(int(p.name[6:-5]) for p in root.iterdir()
                 if p.name.startswith("model_") and p.name.endswith(".json"))
    assert len(ids) > 100
    for model_id in ids:
        counts = {"NCrv": 2, "NPt": 2, "NCrvSet": 2, "NProf": 2, "NStr": 2, "IVLen": 2,
                  "NPrt": 2, "NMod": 2, "NCtl": 2}
        problems: list[str] = []
        chain = [ChainModel(1, 40002, 66),
                 ChainModel(model_id, 40070, _default_length(model_id, counts), counts)]
        made = generate("U", Identity("M", "D", "", "", "", None), Protocol.MODBUS_TCP, chain,
                        problems.append)
        parsed = parse_definition(made.text.encode(), made.name)
        assert (problems, parsed.warnings) == ([], ()), model_id
        assert len(parsed.value.variables) > 2 or model_id == 1, model_id


async def test_discovery_over_an_rtu_bus_names_serial_targets(pty_pair: tuple[int, str]) -> None:
    units = {2: _inverter("Huawei", "SUN2000", "V1", "HW-1"),
             5: SimulatedDevice(holding={0: 1})}
    lines, found = await _discover_on_bus(pty_pair, units, first=1, last=6, timeout_ms=100)
    assert lines == [
        "Start of SunSpec detection on serial1, addresses 1-6, estimated duration 1 s",
        "SunSpec device found at @2 SERIAL1",
        "Found table 1:66 at 40004@2 SERIAL1",
        "Found table 103:50 at 40072@2 SERIAL1",
        "NON SUNSPEC device found at @5 SERIAL1",
        "End of SunSpec detection on serial1. 1 devices found.",
    ]
    assert found[0].definition.name == "U_SunSpec_inverter_Huawei_SUN2000_modbusRTU.csv"
    assert found[0].definition.text.startswith("modbusRTU;Inverter;Huawei;SUN2000\n")


async def test_a_late_reply_on_a_bus_is_not_taken_for_the_next_units_answer(
        pty_pair: tuple[int, str]) -> None:
    # Unit 2 answers 450 ms after each request, past the 300 ms timeout: its reply lands while
    # unit 3 (absent) is probed. It is unit 2's, not unit 3's: unit 3 is not "NON SUNSPEC", and
    # unit 4, after it, is found whole.
    units = {2: _inverter("SMA", "STP", "1", "S2", delay_s=0.45),
             4: _inverter("SMA", "STP", "1", "S4")}
    lines, found = await _discover_on_bus(pty_pair, units, first=2, last=4,
                                          timeout_ms=TIMEOUT_MS)
    assert lines[1:] == [
        "SunSpec device found at @4 SERIAL1",
        "Found table 1:66 at 40004@4 SERIAL1",
        "Found table 103:50 at 40072@4 SERIAL1",
        "End of SunSpec detection on serial1. 1 devices found.",
    ]
    assert [d.unit_id for d in found] == [4]


async def test_abort_stops_after_the_current_request() -> None:
    lines: list[str] = []
    async with modbus_server(_images()) as port, _link("sunpm", port) as reader:
        scan = SunSpecScan(reader, target="T", interface="ethernet1", uid="U",
                           protocol=Protocol.MODBUS_TCP, timeout_ms=TIMEOUT_MS,
                           log=lines.append)

        def log(line: str) -> None:
            lines.append(line)
            if line.startswith("Found table 103"):
                scan.abort()

        scan._log = log
        found = await scan.run(2, 11, 240)
    assert found == []
    assert lines[-3:] == ["Found table 103:50 at 40072@3 T", "Error: detection aborted by user",
                          "End of SunSpec detection on ethernet1. 0 devices found."]


async def test_a_peer_that_goes_away_mid_run_ends_the_run_cleanly() -> None:
    units = {unit: _inverter("SMA", "STP", "1", f"S{unit}") for unit in (1, 2)}
    lines: list[str] = []
    stopping: list[asyncio.Task[None]] = []
    async with TcpSimulator(units) as sim:
        conn = TcpConnection("127.0.0.1", sim.port)

        def log(line: str) -> None:
            lines.append(line)
            if line.startswith("SunSpec device found at @2"):
                stopping.append(asyncio.get_running_loop().create_task(sim.stop()))

        try:
            async with asyncio.timeout(30):
                found = await discover_sunspec(
                    conn, DiscoveryParams(first_address=1, last_address=5, timeout_ms=200), log,
                    target="T", interface="ethernet1", uid="U", protocol=Protocol.MODBUS_TCP)
        finally:
            await conn.close()
            await asyncio.gather(*stopping)
    assert [d.unit_id for d in found] == [1]
    assert "Error: model 1 missing at @2 T" in lines
    assert any(line.startswith("Error: model header read at 40002@2 T failed:") for line in lines)
    assert lines[-1] == "End of SunSpec detection on ethernet1. 1 devices found."

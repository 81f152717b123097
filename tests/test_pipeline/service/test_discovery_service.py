"""Discovery inside the running gateway: live log, one run at a time, abort, and an import that
never overwrites anything (pipeline/service/discovery.py).

Targets are demo SunSpec inverters (models 1 and 103) on the lean Modbus TCP simulator, beside the
gateway's own polled inverter; unit ids the simulator does not serve stay silent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _service_plant import UID, running_gateway, wait_for, write_site

from config import load_site
from pipeline.drivers._base import DiscoveryParams
from pipeline.drivers.discovery import DiscoveryRefused
from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator
from pipeline.service.config_edit import ChangeRejected, apply_change, check_change
from pipeline.service.demo import DemoInverter
from pipeline.service.discovery import DiscoveryBusy, RunState

pytestmark = pytest.mark.usefixtures("no_task_left_behind")


def _params(port: int, last: int = 6, timeout_ms: int = 100) -> DiscoveryParams:
    return DiscoveryParams(interface="ethernet1", ip="127.0.0.1", port=port, first_address=1,
                           last_address=last, timeout_ms=timeout_ms)


async def test_a_run_streams_its_log_finds_the_inverters_and_imports_them(tmp_path: Path) -> None:
    field = {3: DemoInverter(number=1), 5: DemoInverter(number=2),
             4: SimulatedDevice(holding={40000: 7})}
    async with TcpSimulator(field) as sim, running_gateway(tmp_path) as plant:
        discovery = plant.gateway.discovery
        run = discovery.start(_params(sim.port))
        with pytest.raises(DiscoveryBusy, match=r"^discoverDevices: a discovery is already "
                                                r"running$"):
            discovery.start(_params(sim.port))
        lines = [line async for line in run.follow()]
        assert run.state is RunState.DONE and run.scanned == 6
        messages = [line[20:] for line in lines]
        assert messages[0] == ("Start of SunSpec detection on ethernet1, addresses 1-6, "
                               "estimated duration 1 s")
        assert f"SunSpec device found at @3 127.0.0.1:{sim.port}" in messages
        assert f"NON SUNSPEC device found at @4 127.0.0.1:{sim.port}" in messages
        assert messages[-1] == "End of SunSpec detection on ethernet1. 2 devices found."
        assert lines[0][4] == "-" and lines[0][19] == ":"
        rows = [r.to_json() for r in run.rows]
        assert [(r["unitId"], r["serialNumber"], r["alreadyConfigured"]) for r in rows] == [
            (3, "DEMO-0001", False), (5, "DEMO-0002", False)]
        # A follower arriving late gets the whole log too.
        assert [line async for line in run.follow(0)] == lines

        before = set((plant.config_dir / "DEF").iterdir())
        result = await discovery.import_rows([0, 1])
        assert result.added == [f"ethernet_127.0.0.1_{sim.port}_3",
                                f"ethernet_127.0.0.1_{sim.port}_5"]
        site = load_site(plant.config_dir)
        new = [d for d in site.daq.devices if d.name in result.added]
        assert [(d.index, d.address, d.acq_period_s, d.timeout_ms, d.category) for d in new] == [
            ("2", 3, 600, 100, "Inverter"), ("3", 5, 600, 100, "Inverter")]
        written = set((plant.config_dir / "DEF").iterdir()) - before
        assert {p.name for p in written} == set(result.definitions) and len(written) == 2
        with pytest.raises(DiscoveryBusy, match="already imported"):
            await discovery.import_rows([0])

        # The gateway applies the import as a local change: the new devices get polled.
        await wait_for(lambda: plant.gateway.site is not None and len(
            plant.gateway.site.daq.devices) == len(site.daq.devices), 20, "reload")

        # Again: both are configured now; importing one adds a second device, reusing the file.
        run = discovery.start(_params(sim.port))
        assert [line async for line in run.follow()]
        assert [r.already_configured for r in run.rows] == [True, True]
        again = await discovery.import_rows([1])
        assert again.added == [f"ethernet_127.0.0.1_{sim.port}_5_2"]
        assert again.definitions == [] and again.reused == result.definitions[1:]
        assert set((plant.config_dir / "DEF").iterdir()) - before == written


async def test_a_polled_target_is_scanned_through_the_polls_connection(tmp_path: Path) -> None:
    # An inverter taking one Modbus TCP client (as many do) while the gateway polls it: a
    # connection of the run's own is closed at once and the scan finds nothing.
    async with running_gateway(tmp_path) as plant:
        sim = plant.simulators[0]
        sim.max_clients = 1
        poller = plant.gateway.poller
        assert poller is not None
        await wait_for(lambda: poller.latest("1") is not None, 20, "a poll of the inverter")
        run = plant.gateway.discovery.start(_params(sim.port, last=2))
        lines = [line[20:] async for line in run.follow()]
        assert run.state is RunState.DONE and run.error == ""
        assert f"SunSpec device found at @1 127.0.0.1:{sim.port}" in lines
        assert lines[-1] == "End of SunSpec detection on ethernet1. 1 devices found."
        assert [r.already_configured for r in run.rows] == [True]


async def test_an_import_never_overwrites_a_definition_file(tmp_path: Path) -> None:
    async with TcpSimulator({2: DemoInverter(number=3)}) as sim, \
            running_gateway(tmp_path) as plant:
        discovery = plant.gateway.discovery
        run = discovery.start(_params(sim.port, last=2))
        [line async for line in run.follow()]
        generated = run.rows[0].definition_file
        planted = plant.config_dir / "DEF" / generated
        planted.write_bytes(b"modbusTCP;Inverter;someone;else\n1;3;40000;U16;;X;;1;0;;4\n")
        result = await discovery.import_rows([0])
        stem = generated.removesuffix(".csv")
        assert result.definitions == [f"{stem}_2.csv"]
        assert planted.read_bytes().startswith(b"modbusTCP;Inverter;someone;else")
        row = next(d for d in load_site(plant.config_dir).daq.devices
                   if d.name in result.added)
        assert row.def_file == f"{stem}_2.csv"


async def test_abort_stops_the_scan_and_says_so(tmp_path: Path) -> None:
    async with TcpSimulator({}) as sim, running_gateway(tmp_path, inverters=0) as plant:
        discovery = plant.gateway.discovery
        run = discovery.start(_params(sim.port, last=200, timeout_ms=100))
        await wait_for(lambda: run.scanned >= 3, 20, "progress")
        assert discovery.abort()
        lines = [line async for line in run.follow()]
        assert run.state is RunState.ABORTED
        assert lines[-2].endswith(":Error: detection aborted by user")
        assert lines[-1].endswith(":End of SunSpec detection on ethernet1. 0 devices found.")
        assert run.scanned < 200
        with pytest.raises(DiscoveryBusy, match="no finished discovery"):
            discovery.cancel()
            await discovery.import_rows([0])
        assert not discovery.abort()


@pytest.mark.parametrize(("params", "message"), [
    (DiscoveryParams(interface="ethernet1"), "discoverDevices: ip is required for ethernet1"),
    (DiscoveryParams(ip="127.0.0.1", first_address=30, last_address=20),
     "discoverDevices: firstAddress 30 is above lastAddress 20"),
    (DiscoveryParams(ip="127.0.0.1", first_address=0),
     "discoverDevices: firstAddress 0 is outside 1..240"),
    (DiscoveryParams(ip="127.0.0.1", port=0), "discoverDevices: port 0 is outside 1..65535"),
    (DiscoveryParams(ip="127.0.0.1", timeout_ms=0),
     "discoverDevices: timeout 0 is outside 1..60000 ms"),
    (DiscoveryParams(interface="serial2"), "discoverDevices: serial2 has no path"),
])
async def test_parameters_are_refused_before_anything_is_sent(
        tmp_path: Path, params: DiscoveryParams, message: str) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        with pytest.raises(DiscoveryRefused) as refused:
            plant.gateway.discovery.start(params)
        assert str(refused.value) == message


def test_a_change_that_breaks_the_configuration_writes_nothing(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    write_site(config_dir, tmp_path / "server", [1502])
    daq = config_dir / "CONFIG" / f"{UID}_daq.csv"
    before = {p: p.read_bytes() for p in config_dir.rglob("*") if p.is_file()}
    broken = daq.read_bytes() + b"9;127.0.0.1:502;x;1;600;1000;;1;Inverter;M;missing.csv\n"
    with pytest.raises(ChangeRejected) as rejected:
        apply_change(config_dir, UID, {f"CONFIG/{UID}_daq.csv": broken,
                                       "DEF/new.csv": b"modbusTCP;Inverter;a;b\n"})
    assert any(p.field == "defFile" and "missing.csv" in p.message
               for p in rejected.value.problems)
    after = {p: p.read_bytes() for p in config_dir.rglob("*") if p.is_file()}
    assert after == before
    taken = check_change(config_dir, UID, {}, create_only=[f"CONFIG/{UID}_daq.csv"])
    assert [str(p) for p in taken] == [f"{UID}_daq.csv: file: already exists in /CONFIG; not "
                                       "overwritten"]


async def test_a_discovery_with_nothing_to_answer_ends_with_zero_devices(tmp_path: Path) -> None:
    async with TcpSimulator({}) as sim, running_gateway(tmp_path, inverters=0) as plant:
        run = plant.gateway.discovery.start(_params(sim.port, last=3, timeout_ms=50))
        async with asyncio.timeout(20):
            lines = [line async for line in run.follow()]
        assert run.state is RunState.DONE and run.rows == []
        assert lines[-1].endswith("0 devices found.")


async def test_a_closed_port_ends_the_run_saying_nothing_could_be_reached(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = int(sock.getsockname()[1])
    async with running_gateway(tmp_path, inverters=0) as plant:
        run = plant.gateway.discovery.start(_params(closed, last=3, timeout_ms=50))
        async with asyncio.timeout(30):
            [line async for line in run.follow()]
        assert run.state is RunState.DONE and run.rows == []
        assert run.error.startswith(f"nothing could be reached on ethernet1: 127.0.0.1:{closed}")
        assert run.to_json()["error"] == run.error


async def test_the_command_shares_the_web_run_lock_and_adds_only_what_is_not_configured(
        tmp_path: Path) -> None:
    from pipeline.service.commands import CommandError

    field: dict[int, SimulatedDevice] = {3: DemoInverter(number=1), 5: DemoInverter(number=2)}
    async with TcpSimulator(field) as sim, running_gateway(tmp_path) as plant:
        gateway = plant.gateway
        assert gateway.site is not None
        configured = len(gateway.site.daq.devices)
        run = gateway.discovery.start(_params(sim.port))
        with pytest.raises(CommandError,
                           match=r"^discoverDevices: a discovery is already running$"):
            await gateway.discover(_params(sim.port))
        [line async for line in run.follow()]
        assert (await gateway.discovery.import_rows([0])).added == [
            f"ethernet_127.0.0.1_{sim.port}_3"]
        await wait_for(lambda: gateway.site is not None and len(gateway.site.daq.devices) == configured + 1, 20,
                       "reload after the page's import")
        definitions = {p.name: p.read_bytes() for p in (plant.config_dir / "DEF").iterdir()}

        said: list[str] = []
        command = asyncio.create_task(gateway.discover(_params(sim.port), progress_log=said.append))
        await wait_for(lambda: gateway.discovery.run is not None
                       and gateway.discovery.run is not run, 20, "the command's run")
        # The page sees the command's run, and cannot start another beside it.
        with pytest.raises(DiscoveryBusy):
            gateway.discovery.start(_params(sim.port))
        assert await command == 2
        assert said[-1] == "End of SunSpec detection on ethernet1. 2 devices found."
        commanded = gateway.discovery.run
        assert commanded is not None and commanded.imported and commanded.lines
        site = load_site(plant.config_dir)
        assert sorted((d.address or 0, d.name) for d in site.daq.devices
                      if d.name.startswith("ethernet_")) == [
            (3, f"ethernet_127.0.0.1_{sim.port}_3"), (5, f"ethernet_127.0.0.1_{sim.port}_5")]
        after = {p.name: p.read_bytes() for p in (plant.config_dir / "DEF").iterdir()}
        assert {k: v for k, v in after.items() if k in definitions} == definitions
        assert len(after) == len(definitions) + 1
        await wait_for(lambda: gateway.site is not None
                       and len(gateway.site.daq.devices) == configured + 2, 20,
                       "reload after the command's import")

        # Everything configured now: found again, nothing added.
        assert await gateway.discover(_params(sim.port)) == 2
        assert len(load_site(plant.config_dir).daq.devices) == configured + 2


async def test_a_tic_discovery_is_refused_without_a_port_and_answers_the_spec_text(
        tmp_path: Path) -> None:
    from pipeline.service.commands import CommandError

    async with running_gateway(tmp_path, inverters=0) as plant:
        with pytest.raises(CommandError, match=r"^discoverDevices: TIC_Port is not set$"):
            await plant.gateway.discover(DiscoveryParams(protocol="tic"))
        with pytest.raises(CommandError,
                           match=r"^discoverDevices: protocol must be sunspec or tic, got 'smanet'$"):
            await plant.gateway.discover(DiscoveryParams(protocol="smanet"))


async def test_a_tic_meter_found_by_the_command_becomes_tic1_with_its_definition(
        tmp_path: Path) -> None:

    from tic_ptys import repeating_meter

    from config import parse_config_ini, parse_definition, render_config_ini
    from pipeline.drivers.tic import TicMode, encode_frame
    from pipeline.service.commands import CommandError

    groups: list[tuple[str, str, str | None]] = [
        ("ADSC", "031664001115", None), ("VTIC", "02", None), ("EAST", "000001501", None),
        ("SINSTS", "00720", None)]
    frame = encode_frame(groups, TicMode.STANDARD)

    async with repeating_meter(frame) as path:
        # The site's config.ini with TIC_Port on the meter's pty.
        probe = tmp_path / "probe"
        write_site(probe / "config", probe / "server", [1502])
        cfg_name = f"CONFIG/{UID}_config.ini"
        ini = parse_config_ini((probe / "config" / cfg_name).read_bytes(), cfg_name).value
        config_ini = render_config_ini(ini.with_value("TIC_Port", path))
        async with running_gateway(tmp_path, inverters=0,
                                   extra_files={cfg_name: config_ini}) as plant:
            gateway = plant.gateway
            said: list[str] = []
            async with asyncio.timeout(30):
                assert await gateway.discover(DiscoveryParams(protocol="tic"),
                                              progress_log=said.append) == 1
            assert said[-1] == "End of TIC detection: standard meter 031664001115 at 9600 baud"
            site = load_site(plant.config_dir)
            (tic1,) = [d for d in site.daq.devices if d.index == "TIC1"]
            assert tic1.def_file == f"{UID}_TIC_LINKY_STD.csv"
            assert (tic1.serial_number, tic1.parameters) == ("031664001115", "9600")
            definition = parse_definition(
                (plant.config_dir / "DEF" / tic1.def_file).read_bytes(), tic1.def_file).value
            assert [v.name for v in definition.variables] == ["ADSC", "VTIC", "EAST", "SINSTS"]
            await wait_for(lambda: gateway.site is not None and any(
                d.index == "TIC1" for d in gateway.site.daq.devices), 20, "reload with TIC1")
            with pytest.raises(CommandError, match=r"^discoverDevices: TIC1 is already "
                                                   r"configured; delete it first$"):
                await gateway.discover(DiscoveryParams(protocol="tic"))


async def test_a_scan_by_hand_and_the_gateways_run_exclude_each_other(tmp_path: Path) -> None:
    import sys

    from pipeline.service.discovery import discovery_lock

    sunpm = str(Path(sys.executable).parent / "sunpm")
    async with TcpSimulator({3: DemoInverter(number=1)}) as sim, \
            running_gateway(tmp_path) as plant:
        discovery = plant.gateway.discovery
        # Silent ids waiting out their timeout keep the gateway's run going for seconds.
        run = discovery.start(_params(sim.port, last=30, timeout_ms=300))
        proc = await asyncio.create_subprocess_exec(
            sunpm, "discover", "--config", str(plant.config_dir), "--ip", "127.0.0.1",
            "--port", str(sim.port), "--first", "3", "--last", "3",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert run.state is RunState.RUNNING, "the run ended before the command was refused"
        assert (proc.returncode, out) == (2, b"")
        assert err.decode() == (f"sunpm discover: a discovery is already running on "
                                f"{plant.config_dir} (the gateway's or another sunpm discover); "
                                "try again when it is done\n")
        assert discovery.abort()
        assert run.task is not None
        async with asyncio.timeout(30):
            await asyncio.wait([run.task])     # the lock is released once its links are closed

        # Held elsewhere (as a `sunpm discover --config` run holds it), the gateway refuses.
        busy = r"^discoverDevices: a discovery is already running$"
        with discovery_lock(plant.config_dir), pytest.raises(DiscoveryBusy, match=busy):
            discovery.start(_params(sim.port))
        again = discovery.start(_params(sim.port, last=3))
        async with asyncio.timeout(30):
            [line async for line in again.follow()]
        assert again.state is RunState.DONE and len(again.rows) == 1

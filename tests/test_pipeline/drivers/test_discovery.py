"""`discoverDevices` parameters and interfaces (docs/behaviour.md §3.1), over loopback and a pty."""

from __future__ import annotations

import pytest
from _sunspec_sim import SunSpecImage, common_model, modbus_server, model

from config.model import Daq, SerialPort
from pipeline.drivers._base import DiscoveryParams, RegisterReader
from pipeline.drivers.discovery import DiscoveryRefused, discover_devices, interfaces_to_scan
from pipeline.drivers.modbus.rtu import RtuBus
from pipeline.drivers.modbus.simulator import RtuResponder, SimulatedDevice
from pipeline.drivers.modbus.tcp import TcpConnection

DAQ = Daq(serial=(SerialPort(line=2, port="SERIAL1", path="/dev/ttyS1"),
                  SerialPort(line=3, port="SERIAL2", protocol="smanet", path="/dev/ttyS2"),
                  SerialPort(line=None, port="SERIAL3")))


@pytest.mark.parametrize(("params", "message"), [
    (DiscoveryParams(interface="ethernet1"), "discoverDevices: ip is required for ethernet1"),
    (DiscoveryParams(interface="serial3"), "discoverDevices: serial3 has no path"),
    (DiscoveryParams(interface="serial2"),
     "discoverDevices: serial2 protocol is smanet, not modbusRTU"),
    (DiscoveryParams(first_address=0), "discoverDevices: firstAddress 0 is outside 1..240"),
    (DiscoveryParams(first_address=30, last_address=20),
     "discoverDevices: firstAddress 30 is above lastAddress 20"),
    # Found devices are imported with `<ip>:<port>`: daq.csv takes a dotted IPv4 address only.
    (DiscoveryParams(interface="ethernet1", ip="localhost"),
     "discoverDevices: ip 'localhost' is not an IPv4 address"),
    (DiscoveryParams(ip="1.2.3"), "discoverDevices: ip '1.2.3' is not an IPv4 address"),
    (DiscoveryParams(interface="ethernet2", ip="::1"),
     "discoverDevices: ip '::1' is not an IPv4 address"),
])
def test_refusals_read_as_the_spec_writes_them(params: DiscoveryParams, message: str) -> None:
    with pytest.raises(DiscoveryRefused) as err:
        interfaces_to_scan(params, DAQ)
    assert str(err.value) == message


def test_without_interface_serial_ports_then_ethernet1() -> None:
    assert interfaces_to_scan(DiscoveryParams(), DAQ) == ["serial1"]
    assert interfaces_to_scan(DiscoveryParams(ip="10.0.0.5"), DAQ) == ["serial1", "ethernet1"]


async def test_one_run_scans_the_bus_then_the_ip_and_max_devices_spans_both(
        pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    on_bus = SimulatedDevice()
    for address, words in SunSpecImage([common_model("Huawei", "SUN2000", "", "1", "H1"),
                                        model(103, 50)]).blocks():
        on_bus.set_words(address, words)
    responder = RtuResponder(master, {1: on_bus})
    responder.start()
    daq = Daq(serial=(SerialPort(line=2, port="SERIAL1", speed=115200, path=path),
                      SerialPort(line=None, port="SERIAL2"), SerialPort(line=None, port="SERIAL3")))
    tcp_devices = {u: SunSpecImage([common_model("SMA", "STP", "", "1", f"S{u}"),
                                    model(103, 50)]).blocks() for u in (1, 2)}
    links: list[TcpConnection | RtuBus] = []

    async def link_for(interface: str, target: str) -> RegisterReader:
        link: TcpConnection | RtuBus
        if target == "SERIAL1":
            link = RtuBus(daq.port(interface))
            link.start()
        else:
            host, _, port = target.partition(":")
            link = TcpConnection(host, int(port))
        links.append(link)
        return link

    lines: list[str] = []
    try:
        async with modbus_server(tcp_devices) as port:
            found = await discover_devices(
                DiscoveryParams(ip="127.0.0.1", port=port, first_address=1, last_address=3,
                                max_devices=2, timeout_ms=150),
                lines.append, uid="U", daq=daq, link_for=link_for)
    finally:
        for link in links:
            await link.close()
        await responder.stop()
    assert [(d.target, d.unit_id) for d in found] == [("SERIAL1", 1), (f"127.0.0.1:{port}", 1)]
    assert found[0].definition.name == "U_SunSpec_inverter_Huawei_SUN2000_modbusRTU.csv"
    assert found[1].definition.name == "U_SunSpec_inverter_SMA_STP_modbusTCP.csv"
    ends = [line for line in lines if line.startswith("End of")]
    assert ends == ["End of SunSpec detection on serial1. 1 devices found.",
                    "End of SunSpec detection on ethernet1. 1 devices found."]

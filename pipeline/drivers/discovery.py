"""`discoverDevices` over the configured interfaces (docs/behaviour.md §3.1, docs/formats.md §12.3).

Checks the parameters before anything is sent (the refusals of §3.1, one line each), then runs
the SunSpec sweep on each interface in turn: the one named, or without `interface` every serial
port with a `path` and protocol `modbusRTU`, then `ethernet1` when `ip` is set. The links come
from the caller (the service's own TCP connections and RTU buses, so discovery requests queue
with the polls), which keeps this module free of link life cycles.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from config.model import Daq, Protocol
from pipeline.drivers._base import DeviceError, DiscoveryLog, DiscoveryParams, RegisterReader

from .sunspec import ScanProgress, SunSpecDevice, discover_sunspec

#: Unit ids a discovery may scan (daq.csv `address`).
ADDRESS_RANGE = range(1, 241)
_SERIAL = ("serial1", "serial2", "serial3")
_ETHERNET = ("ethernet1", "ethernet2")


class DiscoveryRefused(DeviceError):
    """`discoverDevices` refused before starting; `str()` is the spec's one-line message."""


def interfaces_to_scan(params: DiscoveryParams, daq: Daq) -> list[str]:
    """The interfaces of this run, in order; raises `DiscoveryRefused` with §3.1's message."""
    if params.first_address not in ADDRESS_RANGE:
        raise DiscoveryRefused(f"discoverDevices: firstAddress {params.first_address} is outside "
                               "1..240")
    if params.last_address not in ADDRESS_RANGE:
        raise DiscoveryRefused(f"discoverDevices: lastAddress {params.last_address} is outside "
                               "1..240")
    if params.first_address > params.last_address:
        raise DiscoveryRefused(f"discoverDevices: firstAddress {params.first_address} is above "
                               f"lastAddress {params.last_address}")
    if params.ip:
        try:
            ipaddress.IPv4Address(params.ip)
        except ValueError:
            # What is found is imported with `<ip>:<port>` as its daq.csv interface, which takes
            # a dotted IPv4 address only (docs/formats.md §6): a host name would be imported
            # into a configuration that is then rejected.
            raise DiscoveryRefused(f"discoverDevices: ip '{params.ip[:64]}' is not an IPv4 "
                                   "address") from None
    if params.interface is None:
        chosen = [f"serial{p.number}" for p in daq.serial
                  if p.path and p.protocol == "modbusRTU"]
        return chosen + (["ethernet1"] if params.ip else [])
    name = params.interface.lower()
    if name in _ETHERNET:
        if not params.ip:
            raise DiscoveryRefused(f"discoverDevices: ip is required for {name}")
        return [name]
    if name in _SERIAL:
        port = daq.port(name)
        if not port.path:
            raise DiscoveryRefused(f"discoverDevices: {name} has no path")
        if port.protocol != "modbusRTU":
            raise DiscoveryRefused(f"discoverDevices: {name} protocol is {port.protocol}, "
                                   "not modbusRTU")
        return [name]
    raise DiscoveryRefused(f"discoverDevices: unknown interface '{params.interface}'")


def target_of(interface: str, params: DiscoveryParams) -> str:
    """`<ip>:<port>` or `SERIAL<k>` (docs/formats.md §11)."""
    if interface in _SERIAL:
        return interface.upper()
    return f"{params.ip}:{params.port}"


async def discover_devices(params: DiscoveryParams, log: DiscoveryLog, *, uid: str, daq: Daq,
                           link_for: Callable[[str, str], Awaitable[RegisterReader]],
                           progress: ScanProgress | None = None) -> list[SunSpecDevice]:
    """Every SunSpec device found, interface after interface; `maxDevices` counts the whole run.

    `link_for(interface, target)` returns the link to read through (a TCP connection for
    `<ip>:<port>`, the bus of `SERIAL<k>`); `progress` hears of each unit id scanned.
    """
    found: list[SunSpecDevice] = []
    for interface in interfaces_to_scan(params, daq):
        left = params.max_devices - len(found)
        if left <= 0:
            break
        target = target_of(interface, params)
        link = await link_for(interface, target)
        protocol = Protocol.MODBUS_RTU if interface in _SERIAL else Protocol.MODBUS_TCP
        run = DiscoveryParams(protocol=params.protocol, interface=interface, ip=params.ip,
                              port=params.port, first_address=params.first_address,
                              last_address=params.last_address, max_devices=left,
                              timeout_ms=params.timeout_ms)
        found += await discover_sunspec(link, run, log, target=target, interface=interface,
                                        uid=uid, protocol=protocol, progress=progress)
    return found

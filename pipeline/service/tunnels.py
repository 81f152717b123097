"""The RTU-over-TCP tunnels of a site (`forwardTcpPort`, docs/behaviour.md §2.8).

One `RtuTunnel` per serial port row with a `path` and a `forwardTcpPort`, listening on `WEB_Bind`.
It relays through the bus the plant polls that port with, so tunnel and poll requests queue on one
bus; a port nothing polls gets a bus of its own for the tunnel. A tunnel whose port cannot be
listened on (in use, not allowed) is logged and left out: polling goes on.
"""

from __future__ import annotations

import logging

from config import Site
from pipeline.drivers.modbus.rtu import ModbusRtuDriver, RtuBus
from pipeline.drivers.modbus.tunnel import RtuTunnel, tunnel_for
from pipeline.service.wiring import Plant

log = logging.getLogger("sunpm.modbus")


class Tunnels:
    """`start()` the site's tunnels, `stop()` them (and the buses opened for them only)."""

    def __init__(self, site: Site, plant: Plant) -> None:
        self._site = site
        self._plant = plant
        self.tunnels: list[RtuTunnel] = []
        self._own_buses: list[RtuBus] = []

    async def start(self) -> None:
        polled = {settings.serial.port.upper(): driver.bus
                  for driver, settings in self._plant.drivers
                  if isinstance(driver, ModbusRtuDriver) and settings.serial is not None
                  and driver.bus is not None}
        for port in self._site.daq.serial:
            if port.forward_tcp_port is None or not port.path:
                continue
            bus = polled.get(port.port.upper())
            if bus is None:
                bus = RtuBus(port)
                bus.start()
                self._own_buses.append(bus)
            tunnel = tunnel_for(bus, self._site.daq.devices, host=self._site.settings.web_bind)
            if tunnel is None:
                continue
            try:
                await tunnel.start()
            except OSError as err:
                log.error("%s: tunnel not started on %s:%d: %s", port.port, tunnel.host,
                          tunnel.port, err.strerror or err)
                continue
            self.tunnels.append(tunnel)

    async def stop(self) -> None:
        for tunnel in self.tunnels:
            await tunnel.stop()
        for bus in self._own_buses:
            await bus.close()
        self.tunnels, self._own_buses = [], []

"""Turning discovered devices into daq.csv rows (docs/behaviour.md §3.5), as a pure function.

New devices only: a device whose interface and address are already configured is left alone
(the command's rule); the web page may still import it as a second device on purpose
(`include_configured`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from config.model import Daq, Device

from .definitions import clean_part
from .scan import SunSpecDevice


def _same_interface(device: Device, target: str) -> bool:
    if target.startswith("SERIAL"):
        return device.serial_port == target
    host, _, port = target.partition(":")
    return device.tcp_endpoint == (host, int(port or 502))


def is_configured(daq: Daq, target: str, unit_id: int) -> bool:
    return any(d.address == unit_id and _same_interface(d, target) for d in daq.devices)


def _name_for(target: str, unit_id: int) -> str:
    if target.startswith("SERIAL"):
        return f"serial{target[6:]}_{unit_id}"
    host, _, port = target.partition(":")
    return f"ethernet_{host}_{port or 502}_{unit_id}"


def import_devices(daq: Daq, found: Sequence[SunSpecDevice], *, timeout_ms: int,
                   definition_names: Mapping[tuple[str, int], str] | None = None,
                   include_configured: bool = False) -> tuple[Daq, list[Device]]:
    """`daq` with a row per device not configured yet, and the rows added.

    `definition_names` maps (target, unit id) to the file name actually written (after the `_2`
    rule); by default the generated name.
    """
    devices = list(daq.devices)
    names = {d.name for d in devices}
    next_index = max((d.numeric_index or 0 for d in devices), default=0) + 1
    next_line = max((d.line for d in devices), default=0) + 1
    added: list[Device] = []
    for dev in found:
        if not include_configured and is_configured(daq, dev.target, dev.unit_id):
            continue
        base = _name_for(dev.target, dev.unit_id)
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.add(name)
        serial = dev.target.startswith("SERIAL")
        row = Device(line=next_line, index=str(next_index), interface=dev.target, name=name,
                     address=dev.unit_id, acq_period_s=600, timeout_ms=timeout_ms,
                     serial_number="", parameters="" if serial else "1", category="Inverter",
                     model=clean_part(dev.identity.model),
                     def_file=(definition_names or {}).get((dev.target, dev.unit_id),
                                                           dev.definition.name))
        devices.append(row)
        added.append(row)
        next_index += 1
        next_line += 1
    blocks = daq.blocks | {"devices"} if added else daq.blocks
    return dataclasses.replace(daq, devices=tuple(devices), blocks=blocks), added

"""The normalised configuration as JSON-ready data (`sunpm config show DIR --json`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING

from config.masking import is_secret, url_passwords_masked
from config.model import DefinitionFile, Device, SerialPort, Variable
from config.var_ini import format_start

if TYPE_CHECKING:
    from config.site import Site

#: (Info1, Info3) of an io variable -> what it measures (docs/formats.md §8.2).
_IO_MODES: dict[tuple[int, int | None], str] = {(1, 1): "4-20mA", (1, 2): "0-10V", (2, 1): "on/off", (2, 2): "S0"}

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def _variable(var: Variable, defn: DefinitionFile) -> dict[str, JsonValue]:
    point = var.modbus
    scale_name: str | None = None
    if var.scale_factor_index is not None:
        scale_name = defn.variable(var.scale_factor_index).name
    out: dict[str, JsonValue] = {
        "index": var.index, "name": var.name, "key": var.key, "tag": var.tag,
        "kind": None, "address": None, "size": None, "type": None, "byte_order": None,
        "byte": None, "bit": None, "nbits": None,
        "scale_factor": scale_name, "scale_factor_index": var.scale_factor_index,
        "coefA": var.coef_a_text, "coefB": var.coef_b_text, "unit": var.unit,
        "action": int(var.action),
    }
    if point is not None:
        out.update(kind=point.kind.name.lower(), address=point.address,
                   size=point.register_count,
                   type=None if point.data_type is None else point.data_type.value,
                   byte_order=None if point.data_type is None else
                   (point.byte_order.value or "big-endian"),
                   byte=point.byte, bit=point.bit, nbits=point.nbits)
        if point.string_bytes is not None:
            out["string_bytes"] = point.string_bytes
    elif var.io is not None:
        out.update(kind=var.io.kind.name.lower(), address=var.io.channel, size=1,
                   type=_IO_MODES.get((int(var.io.kind), var.io.mode)))
    elif var.tic_label is not None:
        out.update(kind="tic", address=var.tic_label, type="text")
    return out


def _device(d: Device) -> dict[str, JsonValue]:
    return {"index": d.index, "kind": d.kind.value, "interface": d.interface, "name": d.name,
            "address": d.address, "acqPeriod_s": d.acq_period_s, "timeout_ms": d.timeout_ms,
            "serialNumber": d.serial_number, "parameters": d.parameters,
            "category": d.category, "model": d.model, "defFile": d.def_file, "line": d.line}


def _port(p: SerialPort) -> dict[str, JsonValue]:
    return {"port": p.port, "speed": p.speed, "dataBits": p.data_bits, "parity": p.parity.value,
            "stopBits": p.stop_bits, "wires": p.wires, "protocol": p.protocol,
            "interFrame_ms": p.inter_frame_ms, "forwardTcpPort": p.forward_tcp_port,
            "path": p.path, "line": p.line}


def _plain(value: object) -> JsonValue:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [str(v) for v in sorted(value, key=str)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _masked(data: Mapping[str, str]) -> dict[str, JsonValue]:
    return {k: ("***" if v and is_secret(k) else url_passwords_masked(v))
            for k, v in data.items()}


def _masked_settings(value: JsonValue) -> JsonValue:
    if isinstance(value, dict):
        return {k: ("***" if v and isinstance(v, str) and is_secret(k) else _masked_settings(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_masked_settings(v) for v in value]
    if isinstance(value, str):
        return url_passwords_masked(value)
    return value


def site_to_json(site: Site) -> dict[str, JsonValue]:
    """The site as JSON-ready data; the values of keys that look like secrets (passwords, hashes,
    the PIN, misspelt or unknown ones included) are shown as `***`, and so is the password of
    any URL (`https://user:***@host/`)."""
    schedules: dict[str, JsonValue] = {
        f"server{slot}": [{"id": s.id, "type": s.type.value, "start": format_start(s.start_s),
                           "interval_min": s.interval_min, "count": s.count}
                          for s in site.var_ini.schedules(slot)]
        for slot in (1, 2)}
    definitions: dict[str, JsonValue] = {
        name: {"protocol": d.protocol.value, "category": d.category,
               "manufacturer": d.manufacturer, "model": d.model, "sha256": d.sha256,
               "variables": [_variable(v, d) for v in d.variables]}
        for name, d in sorted(site.definitions.items())}
    return {
        "uid": site.uid,
        "settings": _masked_settings(_plain(asdict(site.settings))),
        "config_ini": _masked(site.config_ini.resolved()),
        "unknown_keys": _masked({k: site.config_ini.values[k]
                                 for k in site.config_ini.unknown_keys}),
        "schedules": schedules,
        "daq": {
            "lan": [_plain(asdict(lan)) for lan in site.daq.lan],
            "tcpInterFrameMs": site.daq.tcp_inter_frame_ms,
            "serial": [_port(p) for p in site.daq.serial],
            "devices": [_device(d) for d in site.daq.devices],
        },
        "scripts": list(site.scripts.files),
        "definitions": definitions,
        "warnings": [str(p) for p in site.warnings],
    }

"""A complete, valid default configuration (`sunpm config init`).

The gateway's own I/O (docs/formats.md §8.1: `<uid>_IO.csv`, every action 0) as its one device, no
server (`SERVER_Type=none`, the default), an hourly schedule ready for when a server is set, no
scripts. Every file is built from the models and written by the package's writers.
"""

from __future__ import annotations

from decimal import Decimal

from config import config_ini, daq_csv, definition, scl_ini, var_ini
from config._ini import IniLine
from config.model import (
    Action,
    Daq,
    DefinitionFile,
    Device,
    IoKind,
    IoPoint,
    Protocol,
    Schedule,
    Variable,
)
from config.scl_ini import ScriptList
from config.var_ini import VarIni


def io_definition(uid: str) -> DefinitionFile:
    """`<uid>_IO.csv`: AI1..AI4 (4-20 mA), DI1..DI4 (ON/OFF), Relay; all not read."""
    rows: list[tuple[IoKind, int, str, str, str]] = [
        *((IoKind.ANALOG, k, "1", f"AI{k}", "mA") for k in range(1, 5)),
        *((IoKind.DIGITAL, k, "1", f"DI{k}", "") for k in range(1, 5)),
        (IoKind.RELAY, 1, "", "Relay", ""),
    ]
    variables = tuple(
        Variable(line=i + 2, index=i + 1, info1=str(int(kind)), info2=str(channel), info3=mode,
                 info4="", name=name, tag="", coef_a=Decimal(1), coef_b=Decimal(0), unit=unit,
                 action=Action.NOT_READ, coef_a_text="1", coef_b_text="0", key=name,
                 io=IoPoint(kind=kind, channel=channel,
                            mode=None if kind is IoKind.RELAY else int(mode)))
        for i, (kind, channel, mode, name, unit) in enumerate(rows))
    return DefinitionFile(file_name=f"{uid}_IO.csv", protocol=Protocol.IO,
                          category="WebdynSunPM", manufacturer="Webdyn", model="ioSunPM",
                          variables=variables, sha256="")


def default_files(uid: str) -> dict[str, bytes]:
    """Relative path -> bytes of every file of a default configuration directory."""
    io_def = io_definition(uid)
    cfg = config_ini.ConfigIni(uid=uid, lines=(
        IniLine(1, "# sunpm gateway settings (every key: docs/configuration.md); absent keys take "
                   "their defaults"),), values={})
    schedules = VarIni(server1=(Schedule(line=None, id=1, interval_min=60, count=24),),
                       server2=(Schedule(line=None, id=1, interval_min=60, count=24),))
    daq = Daq(devices=(Device(line=2, index="IO", interface="", name="Io", address=None,
                              category="WebdynSunPM", model="ioSunPM",
                              def_file=io_def.file_name),),
              blocks=frozenset({"devices"}))
    return {
        f"CONFIG/{uid}_config.ini": config_ini.render(cfg),
        f"CONFIG/{uid}_var.ini": var_ini.render(schedules),
        f"CONFIG/{uid}_daq.csv": daq_csv.render(daq),
        f"CONFIG/{uid}_scl.ini": scl_ini.render(ScriptList()),
        f"DEF/{io_def.file_name}": definition.render(io_def),
    }

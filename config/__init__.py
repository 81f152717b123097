"""sunpm config: typed models and byte-exact readers/writers of every configuration file.

Every `parse_*` returns `Parsed(value, warnings)` or raises `ConfigError` carrying all problems of
the file (warnings included); nothing else escapes. Every `render_*` writes the canonical form, so
`parse(render(x)).value == x` and a canonical file round-trips byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from config import config_ini as _config_ini
from config import daq_csv as _daq_csv
from config import definition as _definition
from config import scl_ini as _scl_ini
from config import var_ini as _var_ini
from config._text import Findings
from config.config_ini import KEY_TABLE, ConfigIni, new_config
from config.errors import ConfigError, Problem, Severity, SunpmError
from config.identity import default_uid, uid_from_mac
from config.masking import url_passwords_masked
from config.model import Daq, DefinitionFile, Schedule
from config.scl_ini import ScriptEntry, ScriptList
from config.show import site_to_json
from config.site import (
    Site,
    check_site,
    check_site_change,
    check_site_files,
    find_uid,
    load_site,
    load_site_files,
)
from config.var_ini import VarIni, connection_times

T = TypeVar("T")

__all__ = [
    "KEY_TABLE", "ConfigError", "ConfigIni", "Parsed", "Problem", "Schedule", "ScriptEntry",
    "ScriptList", "Severity", "Site", "SunpmError", "VarIni", "check_site", "check_site_change", "check_site_files",
    "connection_times", "default_uid", "find_uid", "load_site", "load_site_files", "new_config", "parse_config_ini", "parse_daq",
    "parse_definition", "parse_scl", "parse_var_ini", "render_config_ini", "render_daq",
    "render_definition", "render_scl", "render_var_ini", "site_to_json", "uid_from_mac",
    "url_passwords_masked",
]


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    value: T
    warnings: tuple[Problem, ...]


def _done(value: T | None, findings: Findings) -> Parsed[T]:
    findings.raise_if_rejected()
    assert value is not None
    return Parsed(value, findings.warnings())


def parse_definition(data: bytes, file_name: str) -> Parsed[DefinitionFile]:
    return _done(*_definition.parse(data, file_name))


def render_definition(defn: DefinitionFile) -> bytes:
    return _definition.render(defn)


def parse_daq(data: bytes, file_name: str) -> Parsed[Daq]:
    """daq.csv on its own; checks needing definition files are `load_site`'s."""
    return _done(*_daq_csv.parse(data, file_name))


def render_daq(daq: Daq) -> bytes:
    return _daq_csv.render(daq)


def parse_config_ini(data: bytes, file_name: str) -> Parsed[ConfigIni]:
    return _done(*_config_ini.parse(data, file_name))


def render_config_ini(cfg: ConfigIni) -> bytes:
    return _config_ini.render(cfg)


def parse_var_ini(data: bytes, file_name: str) -> Parsed[VarIni]:
    return _done(*_var_ini.parse(data, file_name))


def render_var_ini(v: VarIni) -> bytes:
    return _var_ini.render(v)


def parse_scl(data: bytes, file_name: str) -> Parsed[ScriptList]:
    """scl.ini (or `_sci.ini`) on its own; that the scripts exist is `load_site`'s check."""
    return _done(*_scl_ini.parse(data, file_name))


def render_scl(s: ScriptList) -> bytes:
    return _scl_ini.render(s)

"""A site: the whole configuration directory (`CONFIG/`, `DEF/`, `SCRIPT/`), checked together.

Layout read (docs/formats.md §3, the server tree):

    DIR/CONFIG/<uid>_config.ini   missing: empty (all defaults)
    DIR/CONFIG/<uid>_var.ini      missing: no schedules
    DIR/CONFIG/<uid>_daq.csv      missing: no devices
    DIR/CONFIG/<uid>_scl.ini      else <uid>_sci.ini; missing: no scripts
    DIR/DEF/<defFile>             every file a daq.csv device names
    DIR/SCRIPT/<name>.lua         every script scl.ini lists

Nothing is applied unless every file passes: `load_site` raises one `ConfigError` carrying all
problems of all files. `load_site_files` / `check_site_files` read the same tree from a mapping
of relative path to bytes (a configuration snapshot, a candidate set laid over the running one),
with no directory at all.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from config import config_ini, daq_csv, definition, scl_ini, var_ini
from config._text import Findings
from config.config_ini import ConfigIni
from config.errors import ConfigError, Problem, Severity
from config.identity import UID_PATTERN, default_uid
from config.model import (
    Daq,
    DefinitionFile,
    Device,
    DeviceKind,
    GatewaySettings,
    Protocol,
    ServerType,
)
from config.scl_ini import ScriptList
from config.var_ini import VarIni

#: Certificate keys each server type reads from /CERT (docs/formats.md §4).
_CERT_KEYS: Final[Mapping[ServerType, tuple[str, ...]]] = {
    ServerType.FTPS: ("FTP_CaFile",),
    ServerType.WEBDAV: ("HTTP_CaFile",),
    ServerType.MQTTS: ("MQTT_CaFile", "MQTT_CertFile", "MQTT_KeyFile"),
}

_FITS: Final[Mapping[DeviceKind, tuple[Protocol, ...]]] = {
    DeviceKind.IO: (Protocol.IO,),
    DeviceKind.TIC: (Protocol.TIC,),
    DeviceKind.MODBUS_TCP: (Protocol.MODBUS_RTU, Protocol.MODBUS_TCP),
    DeviceKind.MODBUS_RTU: (Protocol.MODBUS_RTU, Protocol.MODBUS_TCP),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    directory: Path
    uid: str
    settings: GatewaySettings
    config_ini: ConfigIni
    var_ini: VarIni
    daq: Daq
    scripts: ScriptList
    #: Parsed definition files by file name (those of devices whose port has a driver).
    definitions: Mapping[str, DefinitionFile]
    warnings: tuple[Problem, ...] = ()
    #: Relative path -> bytes of every file read (`CONFIG/...`, `DEF/...`, `SCRIPT/...`).
    loaded: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only views: a loaded site is shared by every task of the gateway.
        object.__setattr__(self, "definitions", MappingProxyType(dict(self.definitions)))
        object.__setattr__(self, "loaded", MappingProxyType(dict(self.loaded)))

    def files(self) -> dict[str, bytes]:
        return dict(self.loaded)

    def definition_of(self, device: Device) -> DefinitionFile | None:
        """The device's definition, None for a device on a port without driver."""
        return self.definitions.get(device.def_file)

    @property
    def polled_devices(self) -> tuple[Device, ...]:
        """Devices sunpm acquires: all but those on a port whose protocol has no driver."""
        return tuple(d for d in self.daq.devices if d.def_file in self.definitions)


def find_uid(directory: Path, uid: str | None = None) -> str:
    """The uid of the configuration in `directory` (docs/formats.md §3, configuration dir)."""
    if uid is not None:
        if not UID_PATTERN.fullmatch(uid):
            # It names the files read: `../x` must never become a path.
            raise ConfigError([Problem(file="CONFIG", line=None, field="uid",
                                       message=f"'{uid[:40]}' is not 1..32 of A-Z a-z 0-9 -",
                                       severity=Severity.ERROR)])
        _check_uid_has_files(directory / "CONFIG", uid)
        return uid
    config_dir = directory / "CONFIG"
    names = [p.name for p in config_dir.glob("*_config.ini")] if config_dir.is_dir() else []
    return _uid_of(names)


def _check_uid_has_files(config_dir: Path, uid: str) -> None:
    """A uid chosen beside other configurations must have a file of its own: `--uid WPM00C44E`
    mistyped among `WPM00C44F`'s files would otherwise read as an empty, valid configuration
    (docs/formats.md §3: a typo must not pass as valid). A folder of no configuration at all
    keeps §3's rule: every file missing reads as empty."""
    if not config_dir.is_dir():
        return
    others = sorted(p.name[:-len("_config.ini")] for p in config_dir.glob("*_config.ini"))
    own = (f"{uid}_{suffix}" for suffix in ("config.ini", "var.ini", "daq.csv", "scl.ini",
                                             "sci.ini"))
    if others and not any((config_dir / name).is_file() for name in own):
        raise ConfigError([Problem(
            file="CONFIG", line=None, field="uid",
            message=f"no file of '{uid}' (configurations here: {', '.join(others)})",
            severity=Severity.ERROR)])


def _uid_of(config_names: list[str]) -> str:
    found = sorted(n[:-len("_config.ini")] for n in config_names if n.endswith("_config.ini"))
    if len(found) > 1:
        raise ConfigError([Problem(file="CONFIG", line=None, field="uid",
                                   message=f"several configurations ({', '.join(found)}); "
                                           "choose one with --uid",
                                   severity=Severity.ERROR)])
    return found[0] if found else default_uid()


#: Reads one file of the tree by relative path (`CONFIG/<uid>_daq.csv`); None when missing.
_ReadFile = Callable[[str], bytes | None]


#: The largest file of each folder read, as a session's downloads are capped (docs/behaviour.md
#: §4.5): a file past it is refused, never read whole.
FILE_CAPS: Final[Mapping[str, int]] = {"CONFIG": 1 << 20, "SCRIPT": 1 << 20, "DEF": 4 << 20,
                                       "CERT": 64 << 10}


def _size_text(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def _directory_reader(directory: Path) -> _ReadFile:
    def refused(rel: str, why: str) -> ConfigError:
        return ConfigError([Problem(file=rel[:80], line=None, field="file",
                                    message=f"{why}; file rejected", severity=Severity.ERROR)])

    def read(rel: str) -> bytes | None:
        cap = FILE_CAPS.get(rel.partition("/")[0], 1 << 20)
        try:
            # Non-blocking: a FIFO in a file's place must not hang the check (or the gateway)
            # waiting for a writer; only a regular file is read, and never past its cap (a
            # link to /dev/zero would be read until memory runs out).
            fd = os.open(directory / rel, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as err:
            if not os.path.lexists(directory / rel):
                return None
            # A link to nothing (an unmounted card, a moved folder) is no missing file: read as
            # one, the site would run on every default.
            raise refused(rel, "cannot be read (a link to a missing file)") from err
        except (OSError, ValueError) as err:  # ValueError: a NUL in a name the parsers let by
            why = err.strerror if isinstance(err, OSError) else "not a file name"
            raise refused(rel, f"cannot be read ({why})") from err
        try:
            with os.fdopen(fd, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                if stat.S_ISDIR(mode):
                    raise refused(rel, "cannot be read (Is a directory)")
                if not stat.S_ISREG(mode):
                    raise refused(rel, "not a regular file")
                data = f.read(cap + 1)
        except OSError as err:
            raise refused(rel, f"cannot be read ({err.strerror})") from err
        if len(data) > cap:
            raise refused(rel, f"larger than {_size_text(cap)}")
        return data
    return read


@dataclass(slots=True)
class _Loader:
    read_file: _ReadFile
    uid: str
    loaded: dict[str, bytes] = field(default_factory=dict)
    by_file: dict[str, Findings] = field(default_factory=dict)
    #: Files there but unreadable (a folder in a file's place...): each said once, read as
    #: missing without a second "missing" error, and the other files still checked.
    unreadable: dict[str, list[Problem]] = field(default_factory=dict)
    #: The file names of a tree folder (`DEF`), for hints only.
    names: Callable[[str], list[str]] = lambda folder: []

    def add(self, findings: Findings) -> None:
        self.by_file[findings.file] = findings

    def read(self, rel: str) -> bytes | None:
        try:
            data = self.read_file(rel)
        except ConfigError as err:
            self.unreadable.setdefault(rel, list(err.problems))
            return None
        if data is not None:
            self.loaded[rel] = data
        return data

    def missing(self, rel: str) -> bool:
        """Absent from the tree (a file there but unreadable is already reported)."""
        return rel not in self.unreadable

    def missing_message(self, rel: str) -> str:
        """`'Inv.csv' is missing from /DEF`, naming a file of the folder whose name differs only
        in case (a name typed on a system that ignores case, a card formatted FAT)."""
        folder, _, name = rel.partition("/")
        same = sorted(n for n in self.names(folder) if n.casefold() == name.casefold()
                      and n != name)
        hint = f" (there is '{same[0]}': names are case-sensitive)" if same else ""
        return f"'{name}' is missing from /{folder}{hint}"

    def config_file(self, suffix: str) -> tuple[str, bytes]:
        name = f"{self.uid}_{suffix}"
        data = self.read(f"CONFIG/{name}")
        return name, data if data is not None else b""


def _collect(directory: Path, uid: str | None) -> tuple[Site | None, list[Problem]]:
    _check_tree(directory)
    return _collect_from(_Loader(_directory_reader(directory), find_uid(directory, uid),
                                 names=_folder_names(directory)), directory)


def _folder_names(directory: Path) -> Callable[[str], list[str]]:
    def names(folder: str) -> list[str]:
        try:
            return os.listdir(directory / folder)
        except OSError:
            return []
    return names


def _check_tree(directory: Path) -> None:
    if not directory.is_dir():
        # An empty directory is a valid site of defaults; a mistyped path must not be one.
        message = "is not a directory" if directory.exists() else "no such directory"
        raise ConfigError([Problem(file=str(directory), line=None, field="directory",
                                   message=message, severity=Severity.ERROR)])
    if not (directory / "CONFIG").is_dir():
        # Without CONFIG/ this is no configuration tree (docs/formats.md §3): a path typed one
        # level off must not pass as a valid site of defaults.
        raise ConfigError([Problem(file=str(directory), line=None, field="",
                                   message="no CONFIG/ folder (not a configuration directory)",
                                   severity=Severity.ERROR)])


def _collect_files(files: Mapping[str, bytes], uid: str | None,
                   directory: Path) -> tuple[Site | None, list[Problem]]:
    names = [rel.partition("/")[2] for rel in files if rel.startswith("CONFIG/")]
    loader = _Loader(files.get, uid if uid is not None else _uid_of(names),
                     names=lambda folder: [rel.partition("/")[2] for rel in files
                                           if rel.partition("/")[0] == folder])
    return _collect_from(loader, directory)


def _misnamed(loader: _Loader) -> list[Problem]:
    """A CONFIG file named in another case than the uid's own (`wpm00bde4_daq.csv` saved on a
    system that ignores case) is an error when the right name is absent: read as missing, the
    file would leave the site running on defaults (no device polled) with no word of it."""
    own = {f"{loader.uid}_{s}".casefold(): f"{loader.uid}_{s}"
           for s in ("config.ini", "var.ini", "daq.csv", "scl.ini", "sci.ini")}
    scl = f"CONFIG/{loader.uid}_scl.ini"
    problems = []
    for name in sorted(loader.names("CONFIG")):
        proper = own.get(name.casefold())
        # Not when the right name was read all the same (a FAT card ignores case), nor for a
        # `_sci.ini` while the `_scl.ini` it stands for was read.
        if proper is not None and proper != name and f"CONFIG/{proper}" not in loader.loaded \
                and not (proper.endswith("_sci.ini") and scl in loader.loaded):
            problems.append(Problem(
                file=name, line=None, field="file",
                message=f"not read: this configuration's file is '{proper}' (names are "
                        "case-sensitive); rename it", severity=Severity.ERROR))
    return problems


def _collect_from(loader: _Loader, directory: Path) -> tuple[Site | None, list[Problem]]:
    name, data = loader.config_file("config.ini")
    cfg, found = config_ini.parse(data, name)
    _check_certificates(loader, cfg, found)
    loader.add(found)
    name, data = loader.config_file("var.ini")
    var, found = var_ini.parse(data, name)
    loader.add(found)
    name, data = loader.config_file("daq.csv")
    daq, daq_found = daq_csv.parse(data, name)
    loader.add(daq_found)
    scl_name, scl_data = loader.config_file("scl.ini")
    if f"CONFIG/{scl_name}" not in loader.loaded:
        sci_name, sci_data = loader.config_file("sci.ini")
        if f"CONFIG/{sci_name}" in loader.loaded:
            scl_name, scl_data = sci_name, sci_data
    scripts, found = scl_ini.parse(scl_data, scl_name)
    _check_scripts(loader, scripts, found)
    loader.add(found)
    definitions = _definitions(loader, daq, daq_found)
    order = [f"{loader.uid}_{s}" for s in ("config.ini", "var.ini", "daq.csv")] + [scl_name]
    problems = _misnamed(loader) + [p for found in loader.unreadable.values() for p in found]
    for file_name in order + sorted(k for k in loader.by_file if k not in order):
        if file_name in loader.by_file:
            problems += loader.by_file[file_name].reported()
    if any(p.severity is Severity.ERROR for p in problems):
        return None, problems
    site = Site(directory=directory, uid=loader.uid, settings=cfg.settings(loader.uid),
                config_ini=cfg, var_ini=var, daq=daq, scripts=scripts, definitions=definitions,
                warnings=tuple(problems), loaded=dict(loader.loaded))
    return site, problems


def _check_certificates(loader: _Loader, cfg: ConfigIni, found: Findings) -> None:
    """Certificate files the selected server types use must be in /CERT."""
    resolved = cfg.resolved()
    line_of = {ln.key: ln.line for ln in cfg.lines if ln.key is not None}
    for slot in (1, 2):
        stype = ServerType(resolved[config_ini.server_key("SERVER_Type", slot)])
        for base in _CERT_KEYS.get(stype, ()):
            key = config_ini.server_key(base, slot)
            name = resolved[key]
            if name and loader.read(f"CERT/{name}") is None and loader.missing(f"CERT/{name}"):
                found.error(line_of.get(key), key, loader.missing_message(f"CERT/{name}"))


def _check_scripts(loader: _Loader, scripts: ScriptList, found: Findings) -> None:
    for entry in scripts.scripts:
        rel = f"SCRIPT/{entry.file}"
        if loader.read(rel) is None and loader.missing(rel):
            found.error(entry.line, f"SCRIPT_File[{entry.n}]", loader.missing_message(rel))


def _parse_definition(loader: _Loader, name: str, data: bytes,
                      parsed: dict[str, DefinitionFile | None]) -> DefinitionFile | None:
    if name not in parsed:
        defn, found = definition.parse(data, name)
        loader.add(found)
        parsed[name] = defn
    return parsed[name]


def _definitions(loader: _Loader, daq: Daq,
                 daq_found: daq_csv.DaqFindings) -> dict[str, DefinitionFile]:
    """Read and check every definition file a device names; errors on the device's line."""
    parsed: dict[str, DefinitionFile | None] = {}
    for line, name in daq_found.rejected_refs:
        # The row is already rejected; its file is still checked so every problem shows at once.
        data = loader.read(f"DEF/{name}")
        if data is None:
            if loader.missing(f"DEF/{name}"):
                daq_found.error(line, "defFile", loader.missing_message(f"DEF/{name}"))
        else:
            _parse_definition(loader, name, data, parsed)
    for device in daq.devices:
        name = device.def_file
        data = loader.read(f"DEF/{name}")
        if data is None:
            if loader.missing(f"DEF/{name}"):
                daq_found.error(device.line, "defFile",
                                loader.missing_message(f"DEF/{name}"))
            continue
        port = daq.port(device.serial_port) if device.serial_port else None
        if port is not None and not port.has_driver:
            continue  # kept, not parsed: no driver polls it (docs/formats.md §6)
        defn = _parse_definition(loader, name, data, parsed)
        if defn is None:
            daq_found.error(device.line, "defFile", f"'{name}' is not valid (see its errors)")
        elif defn.protocol not in _FITS[device.kind]:
            wanted = " or ".join(p.value for p in _FITS[device.kind])
            daq_found.error(device.line, "defFile", f"'{name}' is a {defn.protocol.value} "
                                                    f"file; device {device.index} needs {wanted}")
    return {k: v for k, v in parsed.items() if v is not None}


def load_site(directory: Path, uid: str | None = None) -> Site:
    """The checked site; raises `ConfigError` carrying every problem of every file."""
    site, problems = _collect(Path(directory), uid)
    if site is None:
        raise ConfigError(problems)
    return site


def check_site(directory: Path, uid: str | None = None) -> list[Problem]:
    """Every warning and error of the site, in file then line order."""
    try:
        return _collect(Path(directory), uid)[1]
    except ConfigError as err:
        return list(err.problems)


def load_site_files(files: Mapping[str, bytes], uid: str | None = None, *,
                    directory: Path = Path()) -> Site:
    """`load_site` of a tree given as relative path -> bytes (`CONFIG/<uid>_config.ini`,
    `DEF/<name>`, ...), read from nowhere else; `directory` is only recorded in the `Site`."""
    site, problems = _collect_files(files, uid, directory)
    if site is None:
        raise ConfigError(problems)
    return site


def check_site_files(files: Mapping[str, bytes], uid: str | None = None) -> list[Problem]:
    """`check_site` of a tree given as relative path -> bytes."""
    try:
        return _collect_files(files, uid, Path())[1]
    except ConfigError as err:
        return list(err.problems)


def check_site_change(directory: Path, change: Mapping[str, bytes],
                      uid: str | None = None) -> list[Problem]:
    """`check_site` of `directory` with `change` (relative path -> bytes) laid over its files:
    what the site would be once the change is written, read without copying or writing
    anything."""
    directory = Path(directory)
    base = _directory_reader(directory)

    def read(rel: str) -> bytes | None:
        return change[rel] if rel in change else base(rel)

    try:
        _check_tree(directory)
        in_folder = _folder_names(directory)

        def names(folder: str) -> list[str]:
            return in_folder(folder) + [rel.partition("/")[2] for rel in change
                                        if rel.partition("/")[0] == folder]
        return _collect_from(_Loader(read, find_uid(directory, uid), names=names),
                             directory)[1]
    except ConfigError as err:
        return list(err.problems)


def referenced_files(files: Mapping[str, bytes], uid: str) -> list[tuple[str, str, str]]:
    """`(folder, name, naming file)` of every DEF, SCRIPT and CERT file the CONFIG files of a
    tree (relative path -> bytes) name: daq.csv's `defFile` cells and scl.ini's `SCRIPT_File`
    values (those holding no `/`), and config.ini's `*File` keys (every one set, whatever the server type, as a path's
    last part). In file then line order, repeats kept.

    The files are read with the parsers' readers but not judged: a candidate set that is not
    valid still names what to fetch before it is checked whole, and a name no file system takes
    is for the caller to refuse (and log) before any path is built of it.
    """
    def data(suffix: str) -> bytes:
        return files.get(f"CONFIG/{uid}_{suffix}", b"")

    # A path names no file of the tree's DEF or SCRIPT: the set's check reports it.
    out = [("DEF", name, "daq.csv")
           for _, name in daq_csv.named_definition_files(data("daq.csv"), f"{uid}_daq.csv")
           if "/" not in name]
    out += [("SCRIPT", name, "scl.ini")
            for _, name in scl_ini.named_scripts(data("scl.ini"), f"{uid}_scl.ini")
            if "/" not in name]
    cfg, _ = config_ini.parse(data("config.ini"), f"{uid}_config.ini")
    for ln in cfg.lines:
        if ln.key is not None and ln.key.endswith("File") and ln.value:
            out.append(("CERT", ln.value.rsplit("/", 1)[-1], "config.ini"))
    return out

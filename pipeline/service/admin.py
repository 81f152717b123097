"""What the web UI's diagnostics, scripts and system pages (and their API) do to the running
gateway, free of HTTP (docs/behaviour.md §10.2).

    admin = Admin(gateway)
    admin.start_trace("ethernet1", 10); admin.traces(); await admin.trace_zip(None)
    await admin.upload_script("limit.lua", data); await admin.enable_script("limit.lua")
    await admin.script_log("limit"); admin.export_script("limit.lua")
    await admin.command("connect", {"server": 1})       # reboot, factory, updateFirmware
    await admin.log_text(start_ns, end_ns); await admin.backfill_zip(1, start_ns, end_ns)
    await admin.debug_archive()

Actions the command executor has (`connect`, `reboot`, `factory`, `updateFirmware`) go through it
on the local channel: journaled, answered, and run with the same rules as from a `/CMD` file or
`sunpm cmd`. Script and configuration files change through `config_edit` (validated by `config`,
written all or nothing); the gateway's configuration watch then applies them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from config import ScriptList, parse_scl, render_scl
from config.errors import Problem, Severity, SunpmError
from config.model import ServerType
from config.scl_ini import ScriptEntry
from exporters.rendering.backfill import plan_backfill, render_backfill
from exporters.rendering.source import store_source
from exporters.views.context import Dates, ViewConfig
from exporters.views.log import log_text, one_line
from exporters.views.traces import trace_line, trace_texts
from pipeline.scripts import ScriptError, ScriptStatus
from pipeline.scripts.loading import MAX_SCRIPT_BYTES, MAX_SCRIPTS, site_scripts
from pipeline.service.commands import CommandError
from pipeline.service.config_edit import ChangeRejected, apply_change, config_lock
from pipeline.service.maintenance import (
    PACKAGE_NAME,
    UPDATE_FOLDER,
    MaintenanceError,
    update_argv,
    write_package,
)
from pipeline.service.scripts import ScriptsPlugin
from store.delivery import FILE_SERVER_STREAMS, DeliveryState, Stream
from store.events import Channel, CommandReceived, JsonValue, LogLine, journal_items
from store.traces import TRACE_INTERFACES

if TYPE_CHECKING:
    from pipeline.service.gateway import Gateway

__all__ = ["Admin", "AdminError", "TraceState"]

#: A script's log as the page shows it: its last lines of the last 7 days.
SCRIPT_LOG_LINES: Final = 200
SCRIPT_LOG_DAYS: Final = 7
NS_PER_S: Final = 1_000_000_000
#: The diagnostics page's live tail: the last lines of the last two minutes.
TAIL_LINES: Final = 50
TAIL_S: Final = 120
#: A backfill export of the web page covers at most this many days (a bigger one: `sunpm export`).
BACKFILL_MAX_DAYS: Final = 31
#: The gateway log is read an hour at a time for a download.
LOG_SLICE_NS: Final = 3600 * NS_PER_S
#: What a download spooled to disk leaves free at least on the data folder's disk, which the
#: store shares.
EXPORT_FREE_RESERVE: Final = 64 * 2**20
_SCRIPT_FILE: Final = re.compile(r"[^/\\\x00-\x1f]{1,200}\.lua")

log = logging.getLogger("sunpm.system")


class AdminError(SunpmError):
    """A request that cannot be done; `field` names the form field at fault, if one is."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class TraceState:
    interface: str
    running: bool
    ends_ns: int | None
    entries: int            # frames of the running capture
    stored_bytes: int       # what the store holds for the interface (until delivered)

    def to_json(self) -> dict[str, object]:
        return {"interface": self.interface, "running": self.running, "endsNs": self.ends_ns,
                "entries": self.entries, "storedBytes": self.stored_bytes}


class Admin:
    """See the module docstring; one per gateway, cheap to make."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    # ----------------------------------------------------------------- commands

    async def command(self, name: str, parameters: Mapping[str, JsonValue] | None = None
                      ) -> JsonValue:
        """A built-in on the local channel; its result, or `CommandError` with its error."""
        commands = self.gateway.commands
        if commands is None:
            raise CommandError(f"{name}: the service is not running")
        result = await commands.call(CommandReceived(
            channel=Channel.LOCAL, rpc_name=f"sunpm.{name}", parameters=dict(parameters or {})))
        if result.error is not None:
            raise CommandError(result.error)
        return result.result

    async def connect(self, server: int) -> None:
        await self.command("connect", {"server": server})

    async def reboot(self) -> None:
        """A clean restart of the service (not of the host), once answered."""
        await self.command("reboot")

    async def factory_reset(self, typed_uid: str) -> None:
        """The page's factory reset: the uid typed as confirmation (docs/behaviour.md §10.2)."""
        site = self.gateway.site
        if site is None or typed_uid.strip() != site.uid:
            raise AdminError("type the gateway's uid to confirm the factory reset", "confirm")
        await self.command("factory", {"confirm": True})

    async def update(self, package: tuple[str, IO[bytes]] | None = None, url: str = "",
                     md5: str = "") -> None:
        """`updateFirmware` of the package at `url` with its MD5 (downloaded, checked, then
        installed through SYSTEM_UpdateCommand), or of an uploaded `(file name, file)`."""
        if package is not None:
            await self._install_upload(*package, md5=md5)
            return
        await self.command("updateFirmware", {"url": url, "checksum": md5})

    async def _install_upload(self, name: str, source: IO[bytes], *, md5: str) -> None:
        """An uploaded package staged in `<data>/update/` as `updateFirmware` stages a download
        (copied in chunks, its MD5 checked when one is given), then installed by the command
        `updateFirmware` `{package, checksum}` of the local channel: journaled and answered as
        any command, SYSTEM_UpdateCommand run once the commands queued with it are answered."""
        site = self.gateway.site
        if site is None:
            raise AdminError("the service is not running", "package")
        try:
            update_argv(site.settings.system_update_command)
        except MaintenanceError as err:
            raise AdminError(f"updateFirmware: {err}", "package") from None
        if not PACKAGE_NAME.fullmatch(name):
            raise AdminError(f"{name[:60]!r}: a package is a plain file name ending .spm",
                             "package")
        path = self.gateway.data_dir / UPDATE_FOLDER / name
        got = await asyncio.to_thread(_stage_upload, source, path, md5.strip().lower())
        log.info("Update staged from an upload. package=%s md5=%s", path, got)
        await self.command("updateFirmware", {"package": name, "checksum": got})

    # ----------------------------------------------------------------- diagnostics

    def start_trace(self, interface: str, minutes: int) -> None:
        """Frame traces of `interface` for `minutes` (0 stops); `CommandError` for bad input."""
        if interface not in TRACE_INTERFACES:
            raise AdminError(f"unknown interface {interface!r}; expected one of "
                             f"{', '.join(TRACE_INTERFACES)}", "interface")
        self.gateway.start_trace(interface, minutes)

    def traces(self) -> list[TraceState]:
        capture, store = self.gateway.capture, self.gateway.traces
        out = []
        for interface in TRACE_INTERFACES:
            run = capture.run_of(interface) if capture is not None else None
            stored = store.stats(interface).bytes if store is not None else 0
            out.append(TraceState(interface=interface, running=run is not None,
                                  ends_ns=run.end_ns if run is not None else None,
                                  entries=run.entries if run is not None else 0,
                                  stored_bytes=stored))
        return out

    async def trace_zip(self, interface: str | None) -> tuple[str, IO[bytes]]:
        """The stored traces (of one interface, or all) as LOG files in a zip, spooled an
        interface at a time (`_spooled`: up to 20 MB of traces each, several interfaces)."""
        traces, site = self.gateway.traces, self.gateway.site
        if traces is None or site is None:
            raise AdminError("the service is not running")
        if interface is not None and interface not in TRACE_INTERFACES:
            raise AdminError(f"unknown interface {interface!r}", "interface")
        chosen = [interface] if interface is not None else list(TRACE_INTERFACES)
        now_ns = self.gateway.clock.wall_ns()
        config = ViewConfig(uid=site.uid, time_zone=site.settings.time_zone)

        def build(spool: IO[bytes], room: int) -> None:
            traces.flush()
            with zipfile.ZipFile(spool, "w") as archive:
                for one in chosen:
                    for name, text in trace_texts({one: traces.entries(one)}, config, now_ns):
                        data = text.encode()
                        _room_for(spool, len(data), room, self.gateway.data_dir)
                        # The `.log.gz` file's text, named without `.gz`: the zip compresses.
                        _add(archive, name.removesuffix(".gz"), data)

        spooled = await asyncio.to_thread(_spooled, self.gateway.data_dir, build)
        return f"{site.uid}_traces_{_stamp(now_ns)}.zip", spooled

    async def trace_tail(self, interface: str, lines: int = TAIL_LINES) -> list[str]:
        """The last lines traced on `interface` in the last `TAIL_S` (the page's live tail)."""
        traces, site = self.gateway.traces, self.gateway.site
        if traces is None or site is None:
            raise AdminError("the service is not running")
        if interface not in TRACE_INTERFACES:
            raise AdminError(f"unknown interface {interface!r}", "interface")
        since = self.gateway.clock.wall_ns() - TAIL_S * NS_PER_S
        dates = Dates(site.settings.time_zone)

        def read() -> list[str]:
            traces.flush()
            return [trace_line(e, dates) for e in traces.entries(interface, start_ns=since)]

        return (await asyncio.to_thread(read))[-lines:]

    # ----------------------------------------------------------------- scripts

    def _plugin(self) -> ScriptsPlugin:
        plugin = next((p for p in self.gateway.plugins if isinstance(p, ScriptsPlugin)), None)
        if plugin is None or plugin.runner is None:
            raise AdminError("scripts are not running")
        return plugin

    def scripts(self, files: list[str] | None = None) -> list[ScriptStatus]:
        """The scripts `files` names (by default `saved_scripts()`, read here: blocking) with
        the runner's state of each. A file the runner does not know yet (just uploaded, the
        configuration not reloaded yet) shows as disabled."""
        if files is None:
            files = self.saved_scripts()
        plugin = next((p for p in self.gateway.plugins if isinstance(p, ScriptsPlugin)), None)
        known = plugin.runner.scripts() if plugin is not None and plugin.runner else []
        by_file = {s.file: s for s in known}
        return [by_file.get(f) or
                ScriptStatus(file=f, name=f.removesuffix(".lua"), label="", version="",
                             enabled=False, last_error="")
                for f in files]

    def saved_scripts(self) -> list[str]:
        """The files scl.ini lists as saved (blocking). Not those of the configuration in
        force: a script uploaded a moment ago was missing from the list shown after its
        upload, one deleted still there, until the reload caught up. Those in force when
        scl.ini cannot be read (a hand edit the configuration watch rejected)."""
        site = self.gateway.site
        if site is None:
            return []
        try:
            return [e.file for e in self._script_list().scripts]
        except (ChangeRejected, OSError):
            return [e.file for e in site.scripts.scripts]

    async def enable_script(self, file: str) -> ScriptStatus:
        site = self.gateway.site
        assert site is not None
        runner = self._plugin().runner
        assert runner is not None
        sources, problems = site_scripts(site.scripts, site.uid, site.loaded)
        source = next((s for s in sources if s.file == file), None)
        if source is None:
            found = next((p for p in problems if file in str(p)), None)
            if found is None and file in await asyncio.to_thread(self.saved_scripts):
                # Listed as saved (the page shows it) but not loaded yet: 'not listed' read
                # as a contradiction.
                raise AdminError(f"{file} was saved a moment ago; the gateway starts it with "
                                 "the configuration reload, within seconds", "file")
            raise AdminError(str(found) if found else f"no script '{file}' is listed", "file")
        self._plugin().held_off.discard(file)
        try:
            await runner.enable(source)
        except ScriptError as err:
            raise AdminError(str(err), "file") from None
        status = next((s for s in runner.scripts() if s.file == file), None)
        assert status is not None
        return status

    async def disable_script(self, name: str) -> None:
        """Disable a running script until the service restarts (a reload keeps it off)."""
        plugin = self._plugin()
        runner = plugin.runner
        assert runner is not None
        try:
            await runner.disable(name)
        except ScriptError as err:
            raise AdminError(str(err), "name") from None
        plugin.held_off.update(s.file for s in runner.scripts() if s.name == name)

    async def script_log(self, name: str, *, lines: int = SCRIPT_LOG_LINES) -> list[str]:
        """The script's last log lines (category `script:<name>`) from the journal, oldest
        first, in the LOG files' form."""
        store, site = self.gateway.store, self.gateway.site
        if store is None or site is None:
            raise AdminError("the service is not running")
        since = self.gateway.clock.wall_ns() - SCRIPT_LOG_DAYS * 86_400 * NS_PER_S
        category = f"script:{name}"
        dates = Dates(site.settings.time_zone)

        def read() -> list[str]:
            table = store.journal(start_ns=since, kinds=["log"])
            out = []
            for item in journal_items(table.sort_by("seq")):
                line = LogLine.from_body(item.body)
                if line.category == category:
                    out.append(f"{dates.log(item.ts_ns)} {line.level.value} {line.category}: "
                               f"{one_line(line.message)}")
            return out[-lines:]

        return await asyncio.to_thread(read)

    def export_script(self, file: str) -> bytes:
        path = self._script_path(file)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise AdminError(f"no script '{file}'", "file") from None

    async def upload_script(self, file: str, data: bytes) -> list[Problem]:
        """Add (or replace) `SCRIPT/<file>` and list it in scl.ini; the whole configuration is
        validated first. Returns the warnings of the two files (those of other files, a daq.csv
        row copied, were shown as the upload's problems)."""
        self._script_path(file)
        if len(data) > MAX_SCRIPT_BYTES:
            raise AdminError(f"{file}: {len(data)} bytes, more than {MAX_SCRIPT_BYTES}", "file")
        if data.startswith(b"\x1bLua"):
            raise AdminError(f"{file}: precompiled Lua bytecode is refused; send the source",
                             "file")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise AdminError(f"{file}: not UTF-8 text (byte {err.start})", "file") from None
        gateway = self.gateway
        async with config_lock(gateway.config_dir):
            listed = self._script_list()
            if file not in [e.file for e in listed.scripts]:
                if len(listed.scripts) >= MAX_SCRIPTS:
                    raise AdminError(f"{MAX_SCRIPTS} scripts are listed already; delete one "
                                     "first", "file")
                n = max((e.n for e in listed.scripts), default=-1) + 1
                listed = ScriptList(scripts=(*listed.scripts, ScriptEntry(line=None, n=n, file=file)),
                                    other_lines=listed.other_lines)
            change = {f"SCRIPT/{file}": data, self._scl_rel(): render_scl(listed)}
            written = {rel.rpartition("/")[2] for rel in change}
            warnings = [p for p in await asyncio.to_thread(self._apply, change)
                        if p.file in written]
        # An upload starts its script with the reload (docs/web.md), even one disabled before.
        self._release(file)
        gateway.config_written()
        return warnings

    def _release(self, file: str) -> None:
        plugin = next((p for p in self.gateway.plugins if isinstance(p, ScriptsPlugin)), None)
        if plugin is not None:
            plugin.held_off.discard(file)
            if plugin.runner is not None:
                plugin.runner.release(file)

    async def delete_script(self, file: str) -> None:
        """Unlist the script from scl.ini (validated, written), then delete its file."""
        path = self._script_path(file)
        gateway = self.gateway
        async with config_lock(gateway.config_dir):
            listed = self._script_list()
            kept = tuple(e for e in listed.scripts if e.file != file)
            if len(kept) == len(listed.scripts) and not path.exists():
                raise AdminError(f"no script '{file}'", "file")
            if len(kept) != len(listed.scripts):
                await asyncio.to_thread(self._apply, {self._scl_rel(): render_scl(
                    ScriptList(scripts=kept, other_lines=listed.other_lines))})
            await asyncio.to_thread(path.unlink, missing_ok=True)
        self._release(file)
        gateway.config_written()

    def _apply(self, change: Mapping[str, bytes]) -> list[Problem]:
        gateway = self.gateway
        assert gateway.site is not None
        return apply_change(gateway.config_dir, gateway.site.uid, change,
                            folder_lock=gateway.config_lock)

    def _script_path(self, file: str) -> Path:
        if not _SCRIPT_FILE.fullmatch(file) or file.startswith(".") or file.strip() != file:
            raise AdminError(f"{file!r}: a script is a plain file name ending .lua", "file")
        return self.gateway.config_dir / "SCRIPT" / file

    def _scl_rel(self) -> str:
        site = self.gateway.site
        assert site is not None
        return f"CONFIG/{site.uid}_scl.ini"

    def _script_list(self) -> ScriptList:
        """scl.ini as it is on disk now (a change may have come since the site was loaded)."""
        site = self.gateway.site
        assert site is not None
        for name in (f"{site.uid}_scl.ini", f"{site.uid}_sci.ini"):
            path = self.gateway.config_dir / "CONFIG" / name
            if path.is_file():
                try:
                    return parse_scl(path.read_bytes(), name).value
                except SunpmError as err:
                    raise ChangeRejected([Problem(file=name, line=None, field="file",
                                                  message=str(err),
                                                  severity=Severity.ERROR)]) from None
        return ScriptList(scripts=())

    # ----------------------------------------------------------------- downloads

    async def log_text(self, start_ns: int, end_ns: int) -> tuple[str, IO[bytes]]:
        """The gateway log lines of `[start_ns, end_ns)` (the LOG files' text), at most
        `BACKFILL_MAX_DAYS` days, read an hour at a time into a temporary file of the data
        folder (as `backfill_zip`) and returned open at its start: a month of log is up to
        the journal's quota, hundreds of MB of text once uncompressed."""
        store, site = self.gateway.store, self.gateway.site
        if store is None or site is None:
            raise AdminError("the service is not running")
        _check_range(start_ns, end_ns)
        _check_days(start_ns, end_ns)
        config = ViewConfig(uid=site.uid, time_zone=site.settings.time_zone)

        def read(spool: IO[bytes], room: int) -> None:
            for hour in range(start_ns, end_ns, LOG_SLICE_NS):
                table = store.journal(start_ns=hour, end_ns=min(hour + LOG_SLICE_NS, end_ns),
                                      kinds=["log"])
                data = log_text(journal_items(table), config).encode()
                _room_for(spool, len(data), room, self.gateway.data_dir)
                spool.write(data)

        spooled = await asyncio.to_thread(_spooled, self.gateway.data_dir, read)
        return f"{site.uid}_LOG_{_stamp(start_ns)}_{_stamp(end_ns)}.log", spooled

    async def backfill_zip(self, server: int, start_ns: int, end_ns: int) -> tuple[str, IO[bytes]]:
        """The files of server `server` for `[start_ns, end_ns)` rebuilt from the store as
        `sunpm export --out` writes them (docs/behaviour.md §5.3), in a zip; cursors untouched.

        The zip is written window by window into a temporary file of the data folder
        (`_spooled`) and returned open at its start: a month's export is tens of MB, which the
        gateway held three times over in memory while it built and sent it."""
        store, site = self.gateway.store, self.gateway.site
        if store is None or site is None:
            raise AdminError("the service is not running")
        _check_range(start_ns, end_ns)
        _check_days(start_ns, end_ns)
        settings = next((s for s in site.settings.servers if s.slot == server), None)
        if settings is None or settings.type is ServerType.NONE:
            raise AdminError(f"server {server} is not configured", "server")
        streams: tuple[Stream, ...] = FILE_SERVER_STREAMS if settings.type.is_file_server \
            else (Stream.DATA,)
        source = store_source(store, site, server, traces=self.gateway.traces)
        folder = self.gateway.data_dir

        def build(spool: IO[bytes], room: int) -> None:
            table = store.journal(kinds=["window", "delivered"])
            plan = plan_backfill(DeliveryState.from_table(table), source, server=server,
                                 streams=streams, start_ns=start_ns, end_ns=end_ns)
            with zipfile.ZipFile(spool, "w") as archive:
                for window_files in render_backfill(source, plan, allow_partial=True):
                    for f in window_files:
                        r = f.rendered
                        _room_for(spool, len(r.data), room, folder)
                        # An MQTT document's folder is the root: its name alone, never
                        # `/name` (an absolute member, which unzip strips with a warning).
                        under = r.directory.strip("/")
                        _add(archive, f"{under}/{r.name}" if under else r.name, r.data)

        spooled = await asyncio.to_thread(_spooled, folder, build)
        return f"{site.uid}_server{server}_{_stamp(start_ns)}_{_stamp(end_ns)}.zip", spooled

    async def debug_archive(self) -> tuple[str, bytes]:
        """The debug archive made now (`<uid>_SYSTEME_<ts>.tar.gz`, docs/formats.md §11, as
        `sunpm archive` makes it: it also goes to server 1's /LOG at its next session)."""
        try:
            path = await self.gateway.debug_archive()
        except (CommandError, OSError) as err:
            raise AdminError(str(err)) from None
        return path.name, await asyncio.to_thread(path.read_bytes)


def _check_range(start_ns: int, end_ns: int) -> None:
    if end_ns <= start_ns:
        raise AdminError("'to' must be after 'from'", "to")


def _check_days(start_ns: int, end_ns: int) -> None:
    if end_ns - start_ns > BACKFILL_MAX_DAYS * 86_400 * NS_PER_S:
        raise AdminError(f"at most {BACKFILL_MAX_DAYS} days at a time; use sunpm export "
                         "for more", "to")


def _spooled(folder: Path, write: Callable[[IO[bytes], int], None]) -> IO[bytes]:
    """A download written by `write(spool, room)` into a temporary file of `folder` (already
    unlinked: it goes with its last reader, a crash leaves nothing), open at its start (blocking).
    `room`: the bytes it may take and leave `EXPORT_FREE_RESERVE` free for the store."""
    # Returned open: closed by its reader (`FileDownload`).
    spool = tempfile.TemporaryFile(dir=folder, prefix="download-")  # noqa: SIM115
    try:
        write(spool, shutil.disk_usage(folder).free - EXPORT_FREE_RESERVE)
        spool.seek(0)
    except OSError as err:
        spool.close()
        raise AdminError(f"not written in {folder}: {err.strerror or err}", "to") from None
    except BaseException:
        spool.close()
        raise
    return spool


def _room_for(spool: IO[bytes], size: int, room: int, folder: Path) -> None:
    if spool.tell() + size > room:
        raise AdminError(f"the download would leave less than {EXPORT_FREE_RESERVE >> 20} MiB "
                         f"free in {folder}; ask for fewer days", "to")


def _stamp(ts_ns: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts_ns / NS_PER_S))


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """A file into `archive`, deflated unless it is gzip already (deflating it again costs the
    CPU the polling shares and makes it larger)."""
    archive.writestr(name, data, zipfile.ZIP_STORED if name.endswith(".gz")
                     else zipfile.ZIP_DEFLATED)


def _stage_upload(source: IO[bytes], path: Path, expected_md5: str) -> str:
    """`source` staged at `path` (`write_package`); its MD5, which must be `expected_md5` when
    that is given. A refused package is not left staged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        got, size = write_package(source, path)
    except MaintenanceError as err:
        raise AdminError(str(err), "package") from None
    except OSError as err:              # the gateway's disk (full, read-only), not the package
        raise AdminError(f"{path.name} not staged: {err.strerror or err}", "package") from None
    if size == 0 or (expected_md5 and expected_md5 != got):
        path.unlink()
        if size == 0:
            raise AdminError(f"{path.name} is empty", "package")
        raise AdminError(f"checksum mismatch (expected {expected_md5}, got {got})", "md5")
    return got

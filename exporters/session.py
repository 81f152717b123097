"""Connection sessions with a file server (docs/behaviour.md §4.2, §4.3, §4.5).

A session is one connection to one server: server 1 syncs configuration both ways, fetches the
command file and uploads the streams through the outbox; server 2 gets copies only. Every step that
touches durable state writes a journal event (`sync`, `command`, `window`, `delivered`), so a crash
at any point is finished by the next session.

Configuration applied from the server goes through a two-phase rename so a set of files is applied
whole or not at all, even across a power cut::

    <config>/.apply            names of the staged files, fsynced; present = roll forward
    <config>/<dir>/<name>.new  the staged bytes, fsynced

Session log lines are the fixed messages of docs/formats.md §11, category `session`.

The server is semi-trusted (docs/behaviour.md §4.5, hostile server): every download has its cap,
names read from a listing or a configuration file are plain file names or refused, the
configuration set fetched is bounded as a whole, a malformed command file or message becomes an
error result (the file is deleted all the same), and a server's configuration may not change the
local-only keys of docs/formats.md §4.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

from config import load_site
from config.config_ini import local_only_changes
from config.errors import Problem, Severity, SunpmError
from config.model import ServerSettings, ServerType
from exporters.outbox import JournalLog, Outbox, Stream, StreamRefused, cut_of, event_delivered_body
from exporters.transports._base import (
    DownloadTooLarge,
    FileTransport,
    MessageTransport,
    TransportError,
    is_plain_name,
    size_text,
)
from exporters.views.events import (
    Channel,
    CommandReceived,
    CommandResult,
    JournalItem,
    journal_items,
)
from exporters.views.mqtt import result_message
from store.fsio import fsync_dir, write_synced

log = logging.getLogger("sunpm.session")
config_log = logging.getLogger("sunpm.config")

CMD_MAX_BYTES: Final = 1 << 20          # docs/formats.md §12.1
# docs/behaviour.md §4.5 (hostile server): the cap of each file a session fetches, by tree folder.
DOWNLOAD_CAPS: Final = {"CONFIG": 1 << 20, "SCRIPT": 1 << 20, "CMD": CMD_MAX_BYTES,
                        "DEF": 4 << 20, "CERT": 64 << 10}
#: The whole configuration set fetched in one session (**Decision**, docs/spec-notes.md): each
#: file has its cap, but a daq.csv naming thousands of definition files must not fill memory.
CONFIG_SET_MAX_BYTES: Final = 16 << 20
#: Commands in one file or message (**Decision**, docs/spec-notes.md): 1 MiB of `{}` would
#: otherwise be 300,000 results to journal and send back.
CMD_MAX_ENTRIES: Final = 1000
#: How deep parameters may nest (**Decision**): deeper JSON would not survive being journaled
#: again (the encoder recurses) and no command needs it.
CMD_MAX_DEPTH: Final = 32
_MAX_INT_DIGITS: Final = 30
CONFIG_SUFFIXES: Final = ("config.ini", "daq.csv", "var.ini", "scl.ini")
_SERVER_PREFIX: Final = re.compile(r"^server \d+: ")


class Trigger(StrEnum):
    """Why a session started; the word of the `session started` line (docs/formats.md §11)."""

    SCHEDULE = "schedule"
    ALARM = "alarm"
    COMMAND = "command"
    STARTUP = "startup"
    CONFIG_CHANGE = "config change"
    RETRY = "retry"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionResult:
    ok: bool
    files: int = 0
    commands: int = 0
    reason: str = ""
    retriable: bool = True


_RETRY_MIN: Final = (5, 10, 20, 40)


def retry_delay_s(failures: int, *, retriable: bool) -> int:
    """When the `failures`-th failed session in a row (from 1) is retried (docs/behaviour.md §4.1,
    §4.5): 5, 10, 20, 40, then every 60 min; a non-retriable failure waits 60 min at once."""
    if not retriable or failures > len(_RETRY_MIN):
        return 3600
    return _RETRY_MIN[max(failures, 1) - 1] * 60


# --------------------------------------------------------------------------- commands


#: One entry of a command file or message: the command, or the error result its entry gave.
CommandEntry = CommandReceived | CommandResult


@runtime_checkable
class ConfigSnapshots(Protocol):
    """A store that keeps configuration snapshots (`store.Log`)."""

    def put_config(self, files: Mapping[str, bytes]) -> str: ...


class CommandHandler(Protocol):
    """Where received commands go; the gateway service implements it (docs/behaviour.md §7).

    `submit` queues and returns: results are journaled by the handler as `result` events and go
    up in the next ACK file (or on the MQTT result topic). The commands are journaled already.
    """

    async def submit(self, commands: Sequence[CommandReceived]) -> None: ...


class _Unreadable(ValueError):
    """Why a command document cannot be used, worded after `<file>: invalid JSON: `."""


def _reject_constant(name: str) -> object:
    raise _Unreadable(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _Unreadable(f"a number of more than {_MAX_INT_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unreadable(f"{text[:20]} is out of range")
    return value


def _depth_exceeds(doc: object, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iterative: no recursion to exhaust)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = (node.values() if isinstance(node, dict) else
                    node if isinstance(node, list) else None)
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _load_command_json(data: bytes, where: str) -> tuple[object, str | None]:
    """(document, None) or (None, the error text) for command JSON from a server or a broker:
    strict JSON (no NaN or Infinity), numbers and nesting bounded, and nothing but an error text
    ever comes out of it, whatever the bytes (docs/behaviour.md §4.5)."""
    try:
        doc = json.loads(data.decode("utf-8-sig"), parse_constant=_reject_constant,
                         parse_int=_bounded_int, parse_float=_finite_float)
    except UnicodeDecodeError as err:
        return None, f"{where}: invalid JSON at line 1 column {err.start + 1}: not valid UTF-8"
    except json.JSONDecodeError as err:
        return None, f"{where}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
    except _Unreadable as err:
        return None, f"{where}: invalid JSON: {err}"
    except RecursionError:
        return None, f"{where}: invalid JSON: nested deeper than {CMD_MAX_DEPTH} levels"
    except ValueError as err:  # what else the decoder may refuse; one line, bounded
        return None, f"{where}: invalid JSON: {' '.join(str(err).split())[:200]}"
    if _depth_exceeds(doc, CMD_MAX_DEPTH):
        return None, f"{where}: invalid JSON: nested deeper than {CMD_MAX_DEPTH} levels"
    return doc, None


def parse_command_file(data: bytes, file_name: str) -> list[CommandEntry]:
    """The entries of `/CMD/<uid>_cmd.json` in file order; unreadable ones as error results worded
    as docs/formats.md §12.1. Never raises, whatever the bytes."""
    def fail(text: str) -> list[CommandEntry]:
        return [CommandResult(channel=Channel.FILE, caller_id=None, error=text)]

    if len(data) > CMD_MAX_BYTES:
        return fail(f"{file_name}: larger than 1 MiB; not executed")
    doc, problem = _load_command_json(data, file_name)
    if problem is not None:
        return fail(problem)
    entries = doc if isinstance(doc, list) else [doc]
    if len(entries) > CMD_MAX_ENTRIES:
        return fail(f"{file_name}: more than {CMD_MAX_ENTRIES} commands; not executed")
    return [_command_entry(entry, f"{file_name}: entry {k}: ", Channel.FILE)
            for k, entry in enumerate(entries, start=1)]


def parse_command_message(payload: bytes, topic: str) -> CommandEntry:
    """A command-topic message (docs/formats.md §14.4): one object, errors without `entry <k>: `.
    Never raises, whatever the bytes."""
    def fail(text: str) -> CommandEntry:
        return CommandResult(channel=Channel.MQTT, caller_id=None, error=text)

    if len(payload) > CMD_MAX_BYTES:
        return fail(f"{topic}: larger than 1 MiB; not executed")
    doc, problem = _load_command_json(payload, topic)
    if problem is not None:
        return fail(problem)
    if isinstance(doc, list):
        return fail(f"{topic}: one command object per message, got an array")
    return _command_entry(doc, f"{topic}: ", Channel.MQTT)


def _command_entry(entry: object, prefix: str, channel: Channel) -> CommandEntry:
    if not isinstance(entry, dict):
        return CommandResult(channel=channel, caller_id=None, error=f"{prefix}not a command object")
    caller = entry.get("callerId")
    if caller is not None and (isinstance(caller, bool) or not isinstance(caller, (str, int))):
        return CommandResult(channel=channel, caller_id=None,
                             error=f"{prefix}callerId must be a string or an integer")
    rpc = entry.get("rpcName")
    if not isinstance(rpc, str):
        return CommandResult(channel=channel, caller_id=caller,
                             error=f"{prefix}rpcName is missing")
    params = entry.get("parameters", {})
    return CommandReceived(channel=channel, rpc_name=rpc, caller_id=caller,
                           parameters=params if isinstance(params, dict) else {})


class CollectingHandler:
    """A CommandHandler that keeps what it is given and answers each with "OK"."""

    def __init__(self, log: JournalLog) -> None:
        self._log = log
        self.received: list[CommandReceived] = []

    async def submit(self, commands: Sequence[CommandReceived]) -> None:
        for command in commands:
            self.received.append(command)
            result = CommandResult(channel=command.channel, caller_id=command.caller_id,
                                   rpc_name=command.rpc_name, result="OK")
            await self._log.append_journal("result", json.loads(result.to_body()))


# --------------------------------------------------------------------------- configuration files


#: Validates a configuration directory: every warning and error (config.check_site).
Validator = Callable[[Path], Sequence[Problem]]

#: Called once a configuration set is applied, with the relative paths written.
ConfigApplied = Callable[[Sequence[str]], Awaitable[None]]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_config_files(config_dir: Path, uid: str) -> dict[str, bytes]:
    """The configuration a file server mirrors: CONFIG's four files, DEF and SCRIPT.

    Keys are tree paths without the leading `/` (`CONFIG/WPM00BDE4_daq.csv`). CERT is read from
    the server only (docs/formats.md §3).
    """
    files: dict[str, bytes] = {}
    for suffix in CONFIG_SUFFIXES:
        path = config_dir / "CONFIG" / f"{uid}_{suffix}"
        if path.is_file():
            files[f"CONFIG/{path.name}"] = path.read_bytes()
    for sub in ("DEF", "SCRIPT"):
        folder = config_dir / sub
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.endswith((".new", ".part")):
                    files[f"{sub}/{path.name}"] = path.read_bytes()
    return files


def referenced_files(files: Mapping[str, bytes], uid: str) -> list[str]:
    """Tree paths of the DEF, SCRIPT and CERT files the candidate CONFIG files name.

    Only chooses what to fetch; whether the set is valid is `config`'s to say. A name that is not
    a plain file name (a NUL or control character, over 255 bytes, `\\`...) is refused here,
    before any path is built of it (docs/behaviour.md §4.5); validation then finds it missing.
    """
    wanted: list[str] = []

    def text(name: str) -> str:
        return files.get(f"CONFIG/{uid}_{name}", b"").decode("utf-8", "replace")

    def want(folder: str, name: str, source: str) -> None:
        if is_plain_name(name):
            wanted.append(f"{folder}/{name}")
        else:
            shown = name if len(name) <= 40 else name[:37] + "..."
            config_log.error("%s_%s: %r is not a plain file name; not fetched", uid, source,
                             shown)

    for line in text("daq.csv").splitlines():
        for cell in line.split(";"):
            cell = cell.strip().strip('"')
            if cell.lower().endswith(".csv") and "/" not in cell:
                want("DEF", cell, "daq.csv")
    for line in text("scl.ini").splitlines():
        _, _, value = line.partition("=")
        value = value.strip()
        if value.lower().endswith(".lua") and "/" not in value:
            want("SCRIPT", value, "scl.ini")
    for line in text("config.ini").splitlines():
        key, sep, value = line.partition("=")
        value = value.strip()
        if sep and key.strip().endswith("File") and value:
            want("CERT", os.path.basename(value), "config.ini")
    return list(dict.fromkeys(wanted))


def apply_config_files(config_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write a set of configuration files all or nothing (module docstring); blocking."""
    staged = []
    for rel, data in sorted(files.items()):
        target = config_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        new = target.with_name(target.name + ".new")
        write_synced(new, data)
        staged.append(rel)
    for folder in {(config_dir / rel).parent for rel in staged}:
        fsync_dir(folder)
    write_synced(config_dir / ".apply", "\n".join(staged).encode())
    fsync_dir(config_dir)
    recover_config_apply(config_dir)


def recover_config_apply(config_dir: Path) -> list[str]:
    """Finish an interrupted `apply_config_files` (roll forward); the paths renamed."""
    marker = config_dir / ".apply"
    if not marker.is_file():
        return []
    staged = [line for line in marker.read_text().splitlines() if line]
    for rel in staged:
        target = config_dir / rel
        new = target.with_name(target.name + ".new")
        if new.exists():
            os.replace(new, target)
    for folder in {(config_dir / rel).parent for rel in staged}:
        fsync_dir(folder)
    marker.unlink()
    fsync_dir(config_dir)
    return staged


def last_synced(log: JournalLog, server: int) -> dict[str, str]:
    """Per tree path, the SHA-256 last exchanged with `server` (`sync` events, and the `sync`
    section of `state` events, which outlives the segments holding older `sync` events)."""
    table = log.journal(kinds=["state", "sync"]).sort_by("seq")
    synced: dict[str, str] = {}
    prefix = f"{server}/"
    for kind, body in zip(table.column("kind").to_pylist(), table.column("body").to_pylist(),
                          strict=True):
        event = json.loads(body)
        if kind == "state":
            # store.state keys its sync section "<server>/<tree path>".
            for key, sha in dict(event.get("sync") or {}).items():
                if str(key).startswith(prefix):
                    synced[str(key)[len(prefix):]] = str(sha)
        elif int(event["server"]) == server:
            synced[str(event["file"])] = str(event["sha256"])
    return synced


# --------------------------------------------------------------------------- the session


class _DirectoryRefused(SunpmError):
    pass


def server_label(settings: ServerSettings) -> str:
    """`<type> <host>:<port>` of the `session started` line (`dir`: its path)."""
    if settings.type is ServerType.DIR:
        return f"{settings.type} {settings.dir_path}"
    if settings.type is ServerType.WEBDAV and settings.http_url:
        url = urlsplit(settings.http_url)
        return f"{settings.type} {url.hostname}:{url.port or 443}"
    return f"{settings.type} {settings.host}:{settings.port}"


def _reason(err: BaseException | str) -> str:
    return _SERVER_PREFIX.sub("", str(err))


@dataclass(slots=True)
class _Counts:
    files: int = 0
    commands: int = 0
    refusals: list[str] = field(default_factory=list)


class FileServerSession:
    """One session with a file server in slot 1 (full) or 2 (copies only)."""

    def __init__(self, *, settings: ServerSettings, uid: str, transport: FileTransport,
                 outbox: Outbox, log: JournalLog, config_dir: Path | None = None,
                 validate: Validator | None = None, commands: CommandHandler | None = None,
                 config_applied: ConfigApplied | None = None) -> None:
        self.settings = settings
        self.server = settings.slot
        self.uid = uid
        self._transport = transport
        self._outbox = outbox
        self._log = log
        self._config_dir = config_dir
        self._validate = validate
        self._commands = commands
        self._config_applied = config_applied

    async def run(self, trigger: Trigger, *, started: datetime | None = None) -> SessionResult:
        started = started or datetime.now(UTC)
        counts = _Counts()
        log.info("server %d %s: session started (%s)", self.server, server_label(self.settings),
                 trigger)
        try:
            await self._transport.connect()
            if self._config_dir is not None:
                try:
                    await self._sync_configuration(counts)
                except TransportError as err:
                    # A configuration directory refused: that step stops, the rest goes on.
                    self._refused(err, counts)
            if self.server == 1:
                await self._fetch_commands(counts)
            await self._upload_streams(counts, cut_of(started))
        except TransportError as err:
            return self._failed(err, counts, retriable=err.retriable)
        except SunpmError as err:
            # A window that cannot be built (a snapshot missing from the store...) or a journal
            # write refused: the session fails like any other and is retried.
            return self._failed(err, counts, retriable=True)
        finally:
            await self._transport.close()
        if counts.refusals:
            return self._failed(None, counts, retriable=False)
        log.info("server %d: session ended OK (%d files uploaded, %d commands)", self.server,
                 counts.files, counts.commands)
        return SessionResult(ok=True, files=counts.files, commands=counts.commands)

    def _failed(self, err: SunpmError | None, counts: _Counts, *,
                retriable: bool) -> SessionResult:
        reasons = list(counts.refusals) + ([] if err is None else [str(err)])
        reason = "; ".join(_reason(r) for r in dict.fromkeys(reasons))
        level = logging.WARNING if retriable else logging.ERROR
        log.log(level, "server %d: session failed: %s", self.server, reason)
        return SessionResult(ok=False, files=counts.files, commands=counts.commands,
                             reason=reason, retriable=retriable)

    def _refused(self, err: TransportError, counts: _Counts) -> None:
        """A directory missing or a right lacking: that part stops, the rest goes on."""
        if err.retriable:
            raise err
        log.error("%s", err)
        counts.refusals.append(str(err))

    # ----- steps 2-5: configuration

    async def _sync_configuration(self, counts: _Counts) -> None:
        assert self._config_dir is not None
        local = await asyncio.to_thread(local_config_files, self._config_dir, self.uid)
        synced = await asyncio.to_thread(last_synced, self._log, self.server)
        remote: dict[str, bytes] = {}
        if self.server == 1:
            remote = await self._fetch_configuration(local, counts)
        uploads: dict[str, bytes] = {}
        candidates: dict[str, bytes] = {}
        agreed: dict[str, str] = {}
        for rel in sorted(set(local) | set(remote)):
            here, there = local.get(rel), remote.get(rel)
            last = synced.get(rel)
            if there is None:
                if here is not None and (self.server == 2 or rel.split("/")[0] != "CERT") \
                        and sha256_hex(here) != last:
                    uploads[rel] = here
                continue
            there_sha = sha256_hex(there)
            if here is not None and sha256_hex(here) == there_sha:
                if last != there_sha:
                    agreed[rel] = there_sha
                continue
            if there_sha == last:
                if here is not None:
                    uploads[rel] = here
                continue
            if here is not None and sha256_hex(here) != last and last is not None:
                log.warning("server %d: %s changed on both sides; the server's copy replaces the "
                            "local one", self.server, rel)
            candidates[rel] = there
        if candidates:
            await self._apply(candidates, agreed)
        for rel, sha in agreed.items():
            await self._log.append_journal("sync", {"server": self.server, "file": rel,
                                                    "sha256": sha})
        await self._upload_configuration(uploads, counts)

    async def _fetch_configuration(self, local: Mapping[str, bytes],
                                   counts: _Counts) -> dict[str, bytes]:
        remote: dict[str, bytes] = {}
        try:
            listing = {f.name for f in await self._transport.list("/CONFIG")}
        except TransportError as err:
            self._refused(err, counts)
            return remote
        budget = [CONFIG_SET_MAX_BYTES]
        for suffix in CONFIG_SUFFIXES:
            name = f"{self.uid}_{suffix}"
            source = name
            if suffix == "scl.ini" and name not in listing and f"{self.uid}_sci.ini" in listing:
                source = f"{self.uid}_sci.ini"
            elif name not in listing:
                continue
            data = await self._fetch_capped(f"/CONFIG/{source}", budget)
            if data is not None:
                remote[f"CONFIG/{name}"] = data
        merged = {**local, **remote}
        for rel in referenced_files(merged, self.uid):
            if await self._transport.size(f"/{rel}") is not None:
                data = await self._fetch_capped(f"/{rel}", budget)
                if data is not None:
                    remote[rel] = data
        return remote

    async def _fetch_capped(self, path: str, budget: list[int]) -> bytes | None:
        """A configuration file under its folder's cap and what is left of the set's budget;
        None (logged) when it passes either: that file is not used, the rest goes on."""
        cap = DOWNLOAD_CAPS[path.split("/")[1]]
        name = path.rsplit("/", 1)[-1]
        cap = min(cap, budget[0])
        try:
            data = await self._transport.download(path, max_bytes=cap)
        except DownloadTooLarge as err:
            if err.max_bytes < DOWNLOAD_CAPS[path.split("/")[1]]:
                config_log.error("%s: the configuration set passes %s; not used", name,
                                 size_text(CONFIG_SET_MAX_BYTES))
            else:
                config_log.error("%s: larger than %s; not used", name, size_text(err.max_bytes))
            return None
        budget[0] -= len(data)
        return data

    async def _apply(self, candidates: Mapping[str, bytes], agreed: dict[str, str]) -> None:
        assert self._config_dir is not None
        try:
            problems = await asyncio.to_thread(self._check_candidates, candidates)
        except Exception:  # noqa: BLE001 - the one top-level guard of server-sent configuration
            # A validator fault on a server's bytes would end every session the same way while
            # the files stay on the server: rejected, logged with its trace, the session goes on.
            config_log.exception("configuration from server %d could not be checked; "
                                 "configuration rejected; running configuration unchanged",
                                 self.server)
            return
        names = {rel: rel.rsplit("/", 1)[-1] for rel in candidates}
        errors = [p for p in problems if p.severity is Severity.ERROR]
        for problem in problems:
            config_log.log(logging.ERROR if problem.severity is Severity.ERROR
                           else logging.WARNING, "%s", problem)
        if errors:
            for name in names.values():
                n = sum(1 for p in errors if os.path.basename(p.file) == name)
                config_log.error("%s rejected; errors: %d; running configuration unchanged",
                                 name, n)
            return
        await asyncio.to_thread(apply_config_files, self._config_dir, candidates)
        await self._journal_snapshot(sorted(candidates))
        for rel, name in names.items():
            n = sum(1 for p in problems if os.path.basename(p.file) == name)
            config_log.info("%s applied; warnings: %d", name, n)
            agreed[rel] = sha256_hex(candidates[rel])
        if self._config_applied is not None:
            await self._config_applied(sorted(candidates))

    async def _journal_snapshot(self, files: Sequence[str]) -> None:
        """Store the configuration now in force and journal it (`config` event), so windows
        ending from now on render with it (docs/behaviour.md §5.1 step 4)."""
        if not isinstance(self._log, ConfigSnapshots) or self._config_dir is None:
            return
        log_ = self._log
        site = await asyncio.to_thread(load_site, self._config_dir, self.uid)
        snapshot = await asyncio.to_thread(log_.put_config, site.files())
        await self._log.append_journal("config", {"snapshot": snapshot,
                                                  "origin": f"server {self.server}",
                                                  "files": list(files)}, commit_now=True)

    def _check_candidates(self, candidates: Mapping[str, bytes]) -> list[Problem]:
        """Validate the running configuration with the candidates laid over it, in a copy."""
        assert self._config_dir is not None
        local_only: list[Problem] = []
        config_ini = f"CONFIG/{self.uid}_config.ini"
        if config_ini in candidates:
            running = self._config_dir / config_ini
            local_only = local_only_changes(running.read_bytes() if running.is_file() else b"",
                                            candidates[config_ini], running.name)
        if self._validate is None:
            return local_only
        with tempfile.TemporaryDirectory(prefix="sunpm-candidate-") as tmp:
            trial = Path(tmp) / "config"
            shutil.copytree(self._config_dir, trial, ignore=shutil.ignore_patterns(".apply"))
            for rel, data in candidates.items():
                (trial / rel).parent.mkdir(parents=True, exist_ok=True)
                (trial / rel).write_bytes(data)
            return local_only + list(self._validate(trial))

    async def _upload_configuration(self, uploads: Mapping[str, bytes], counts: _Counts) -> None:
        for rel, data in uploads.items():
            path = f"/{rel}"
            try:
                await self._transport.upload(path, data, two_step=self.settings.two_step)
            except TransportError as err:
                self._refused(err, counts)
                continue
            await self._log.append_journal("sync", {"server": self.server, "file": rel,
                                                    "sha256": sha256_hex(data)})
            counts.files += 1
            log.info("server %d: uploaded %s (%d bytes)", self.server, path, len(data))

    # ----- step 7: commands

    async def _fetch_commands(self, counts: _Counts) -> None:
        for name in (f"{self.uid}_cmd.json", f"{self.uid}_cmd.csv"):
            path = f"/CMD/{name}"
            if await self._transport.size(path) is None:
                continue
            try:
                data = await self._transport.download(path, max_bytes=CMD_MAX_BYTES)
                entries = parse_command_file(data, name)
            except DownloadTooLarge:
                entries = [CommandResult(channel=Channel.FILE, caller_id=None,
                                         error=f"{name}: larger than 1 MiB; not executed")]
            for k, entry in enumerate(entries, start=1):
                # Acknowledged before the delete, so a crash after it loses no command; an entry
                # that cannot run is answered at once.
                await self._log.append_journal(
                    "command" if isinstance(entry, CommandReceived) else "result",
                    json.loads(entry.to_body()), commit_now=k == len(entries))
            requests = [e for e in entries if isinstance(e, CommandReceived)]
            counts.commands += len(entries)
            try:
                await self._transport.delete(path)
            except TransportError as err:
                if err.retriable:
                    raise
                log.error("server %d: cannot delete %s (%s); commands not executed",
                          self.server, path, err.detail)
                counts.refusals.append(f"cannot delete {path} ({err.detail})")
                continue
            if self._commands is not None:
                await self._commands.submit(requests)

    # ----- step 8: streams

    async def _upload_streams(self, counts: _Counts, cut_ns: int) -> None:
        async def confirmed(path: str, size: int, uploaded: bool) -> None:
            counts.files += 1
            if uploaded:
                log.info("server %d: uploaded %s (%d bytes)", self.server, path, size)
            else:
                log.info("server %d: %s already on the server (%d bytes)", self.server, path,
                         size)

        try:
            await self._outbox.deliver(self._transport, cut_ns, two_step=self.settings.two_step,
                                       confirmed=confirmed)
        except StreamRefused as err:
            for _, reason in err.failures:
                log.error("%s", reason)
                counts.refusals.append(reason)


# --------------------------------------------------------------------------- MQTT (§4.4)


#: The payload of one journal event (an `alarm` or a `result`) on its topic.
EventPayload = Callable[[JournalItem], bytes]

_RECONNECT_S: Final = (1, 2, 4, 8, 16, 32, 60)
_EVENT_POLL_S: Final = 1.0


def result_payload(item: JournalItem) -> bytes:
    """docs/formats.md §14.4: an array of the one result entry, compact JSON."""
    return result_message(CommandResult.from_body(item.body))


class MqttSession:
    """A broker in either slot: data windows at sessions, alarms and results as they come,
    commands from the command topic (docs/behaviour.md §4.4)."""

    def __init__(self, *, settings: ServerSettings, transport: MessageTransport, outbox: Outbox,
                 log: JournalLog, alarm_payload: EventPayload | None = None,
                 commands: CommandHandler | None = None) -> None:
        self.settings = settings
        self.server = settings.slot
        self._transport = transport
        self._outbox = outbox
        self._log = log
        self._alarm_payload = alarm_payload
        self._commands = commands
        # One publisher of events at a time, so alarms and results keep journal order.
        self._events_lock = asyncio.Lock()
        # Per stream the last event seq acknowledged, read from the journal once.
        self._event_cursors: dict[Stream, int] = {}

    @property
    def permanent(self) -> bool:
        """An alarm or command topic keeps the connection open (docs/formats.md §14.1)."""
        return bool(self.settings.topic_alarm or self.settings.topic_command)

    async def run(self, trigger: Trigger, *, started: datetime | None = None,
                  keep_open: bool = False) -> SessionResult:
        """Connect, send pending alarms and results, then the data windows up to the cut."""
        started = started or datetime.now(UTC)
        log.info("server %d %s: session started (%s)", self.server, server_label(self.settings),
                 trigger)
        sent = 0
        try:
            await self._transport.connect()
            sent += await self.publish_events()
            if self.settings.topic_data:
                report = await self._outbox.deliver_messages(
                    self._transport, self.settings.topic_data, cut_of(started))
                sent += report.files
        except SunpmError as err:
            await self._transport.close()
            retriable = bool(getattr(err, "retriable", True))
            level = logging.WARNING if retriable else logging.ERROR
            log.log(level, "server %d: session failed: %s", self.server, _reason(err))
            return SessionResult(ok=False, files=sent, reason=_reason(err), retriable=retriable)
        except BaseException:
            # Cancelled (the service stopping): the connection and its reader task go too.
            await self._transport.close()
            raise
        if not keep_open:
            await self._transport.close()
        log.info("server %d: session ended OK (%d files uploaded, %d commands)", self.server,
                 sent, 0)
        return SessionResult(ok=True, files=sent)

    async def publish_events(self) -> int:
        """Alarms, then command results, not yet acknowledged, in journal order."""
        async with self._events_lock:
            sent = 0
            if self.settings.topic_alarm and self._alarm_payload is not None:
                sent += await self._publish_kind(Stream.ALARM, "alarm", self.settings.topic_alarm,
                                                 self._alarm_payload)
            if self.settings.topic_result:
                sent += await self._publish_kind(Stream.ACK, "result",
                                                 self.settings.topic_result, result_payload,
                                                 channel=Channel.MQTT)
            return sent

    async def _publish_kind(self, stream: Stream, kind: str, topic: str, payload: EventPayload,
                            channel: Channel | None = None) -> int:
        last = self._event_cursors.get(stream)
        if last is None:
            state = await asyncio.to_thread(self._outbox.state)
            # A slot newly configured starts at the oldest event stored (docs/behaviour.md §5.1).
            last = state.events.get((self.server, stream), 0)
        table = await asyncio.to_thread(self._log.journal, kinds=[kind], seq_from=last + 1)
        items = [i for i in journal_items(table.sort_by("seq")) if i.seq > last]
        self._event_cursors[stream] = last
        sent = 0
        for item in items:
            if channel is None or json.loads(item.body).get("channel") == channel.value:
                await self._transport.publish(topic, payload(item))
                await self._log.append_journal(
                    "delivered", event_delivered_body(self.server, stream, item.seq))
                sent += 1
            # Other channels' results are skipped for good, not looked at again.
            self._event_cursors[stream] = item.seq
        return sent

    async def serve(self, stop: asyncio.Event) -> None:
        """The permanent connection: commands in, alarms and results out, reconnecting after
        1, 2, 4 … 60 s, until `stop` is set."""
        attempt = 0
        faulted = False     # the last round ended on our side's error, not the connection's
        while not stop.is_set():
            try:
                await self._transport.connect()
                if not faulted:
                    attempt = 0
                faulted = False
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._pump_events(stop), name=f"mqtt-events:{self.server}")
                    tg.create_task(self._take_commands(stop), name=f"mqtt-commands:{self.server}")
            except* TransportError as group:
                err = group.exceptions[0]
                log.warning("server %d: connection lost: %s", self.server, _reason(err))
            except* SunpmError as group:
                # A journal append or read failing (disk full, damaged segment) or an event that
                # cannot be rendered: the permanent connection outlives it. The connection is
                # renewed after the backoff, which keeps growing while the fault repeats;
                # unacknowledged events go again then.
                faulted = True
                for fault in group.exceptions:
                    log.error("server %d: event delivery failed, reconnecting in %d s: %s",
                              self.server, _RECONNECT_S[min(attempt, len(_RECONNECT_S) - 1)],
                              _reason(fault), exc_info=fault if attempt == 0 else None)
            finally:
                await self._transport.close()
            if stop.is_set():
                break
            delay = _RECONNECT_S[min(attempt, len(_RECONNECT_S) - 1)]
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()

    async def _pump_events(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.publish_events()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_EVENT_POLL_S):
                    await stop.wait()

    async def _take_commands(self, stop: asyncio.Event) -> None:
        if not self.settings.topic_command:
            await stop.wait()
            return
        messages = self._transport.messages()
        while not stop.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            nxt = asyncio.ensure_future(anext(messages))
            try:
                done, _ = await asyncio.wait({stopping, nxt}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # Cancelled with its sibling's failure: the pending read would otherwise fail
                # with the closed connection as an exception nobody retrieves.
                nxt.cancel()
                raise
            finally:
                stopping.cancel()
            if nxt not in done:
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
                return
            message = nxt.result()
            await self.take_command(message.payload, message.topic)

    async def take_command(self, payload: bytes, topic: str) -> None:
        """Journal a command-topic message and hand it on; an unreadable one is answered."""
        entry = parse_command_message(payload, topic)
        if isinstance(entry, CommandReceived):
            await self._log.append_journal("command", json.loads(entry.to_body()),
                                           commit_now=True)
            if self._commands is not None:
                await self._commands.submit([entry])
        else:
            await self._log.append_journal("result", json.loads(entry.to_body()),
                                           commit_now=True)

"""Configuration sync with a file server (docs/behaviour.md §4.2 steps 2-5): each file decided
against the SHA-256 last exchanged (`sync` events), the server's candidates validated laid over a
copy of the running configuration and applied all or nothing (`config_apply`), what changed
locally uploaded.

The server is semi-trusted (docs/behaviour.md §4.5): each download has its cap by folder, the set
fetched is bounded as a whole, names a configuration file gives are fetched only when plain file
names, and a server `config.ini` changing a local-only key is rejected whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from config import load_site
from config.config_ini import local_only_changes
from config.errors import Problem, Severity
from config.model import ServerSettings
from config.site import referenced_files as config_references
from exporters.outbox import JournalLog, journal_unless_full
from exporters.transports._base import (
    DownloadTooLarge,
    FileTransport,
    TransportError,
    is_plain_name,
    size_text,
)
from store.events import ConfigInForce, SyncedFile
from store.state import synced_files

from .commands import CMD_MAX_BYTES
from .config_apply import apply_config_files
from .outcome import Counts, refused

log = logging.getLogger("sunpm.session")
config_log = logging.getLogger("sunpm.config")

# docs/behaviour.md §4.5 (hostile server): the cap of each file a session fetches, by tree folder.
DOWNLOAD_CAPS: Final = {"CONFIG": 1 << 20, "SCRIPT": 1 << 20, "CMD": CMD_MAX_BYTES,
                        "DEF": 4 << 20, "CERT": 64 << 10}
#: The whole configuration set fetched in one session (**Decision**, docs/spec-notes.md): each
#: file has its cap, but a daq.csv naming thousands of definition files must not fill memory.
CONFIG_SET_MAX_BYTES: Final = 16 << 20
CONFIG_SUFFIXES: Final = ("config.ini", "daq.csv", "var.ini", "scl.ini")

#: Validates a configuration directory with candidate files (relative path -> bytes) laid over it:
#: every warning and error (config.check_site_change).
Validator = Callable[[Path, Mapping[str, bytes]], Sequence[Problem]]

#: Called once a configuration set is applied, with the relative paths written.
ConfigApplied = Callable[[Sequence[str]], Awaitable[None]]

#: Writes a checked set into the configuration folder, all or nothing (blocking); by default
#: `apply_config_files`. A running gateway gives its own, holding its folder lock, so neither its
#: reload nor its configuration watch ever reads the folder half written.
ApplyFiles = Callable[[Mapping[str, bytes]], None]


@runtime_checkable
class ConfigSnapshots(Protocol):
    """A store that keeps configuration snapshots (`store.Log`)."""

    def put_config(self, files: Mapping[str, bytes]) -> str: ...



def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_config_files(config_dir: Path, uid: str) -> dict[str, bytes]:
    """The configuration a file server mirrors: CONFIG's four files, DEF and SCRIPT.

    Keys are tree paths without the leading `/` (`CONFIG/WPM00BDE4_daq.csv`); a `_sci.ini`
    without `_scl.ini` is `CONFIG/<uid>_scl.ini`. CERT is read from the server only
    (docs/formats.md §3).
    """
    return {rel: path.read_bytes() for rel, path in local_config_paths(config_dir, uid).items()}


def local_config_paths(config_dir: Path, uid: str) -> dict[str, Path]:
    """The files `local_config_files` reads, by tree path, without reading them.

    An editor's own files beside a definition or script (vim's `.inv.csv.swp`, rewritten every
    few seconds while it is open; `inv.csv~` backups) are none of them: the configuration watch
    took each rewrite for a local change and reloaded, ending the open recording periods, and
    sessions uploaded them to the server."""
    paths: dict[str, Path] = {}
    for suffix in CONFIG_SUFFIXES:
        path = config_dir / "CONFIG" / f"{uid}_{suffix}"
        if suffix == "scl.ini" and not path.is_file():
            # The script list a unit's folder calls `_sci.ini` (docs/formats.md §7): read when
            # there is no `_scl.ini`, so its edits are seen, and mirrored as `_scl.ini`.
            path = path.with_name(f"{uid}_sci.ini")
        if path.is_file():
            paths[f"CONFIG/{uid}_{suffix}"] = path
    for sub in ("DEF", "SCRIPT"):
        folder = config_dir / sub
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.endswith((".new", ".part", "~")) \
                        and not path.name.startswith("."):
                    paths[f"{sub}/{path.name}"] = path
    return paths


def in_force_view(local: Mapping[str, bytes], in_force: Mapping[str, bytes],
                  uid: str) -> tuple[dict[str, bytes], list[str]]:
    """What the gateway mirrors to a server: the configuration in force, not the folder.

    A local edit the gateway rejected (or has not applied yet) is not the configuration: it is
    neither uploaded nor compared with the server (docs/behaviour.md §4.2 step 3,
    docs/spec-notes.md). CONFIG's four files are taken from `in_force` (absent there: absent);
    a DEF or SCRIPT file the configuration in force reads, from `in_force`; any other DEF or
    SCRIPT file (not part of the configuration, e.g. a definition discovery wrote) as it is on
    disk. Returns the view and the tree paths whose folder copy differs from it.
    """
    config_names = {f"CONFIG/{uid}_{suffix}" for suffix in CONFIG_SUFFIXES}
    scl, sci = f"CONFIG/{uid}_scl.ini", f"CONFIG/{uid}_sci.ini"
    if sci in in_force and scl not in in_force:
        # Loaded from `_sci.ini`: the same script list `local_config_files` reads as `_scl.ini`.
        in_force = {**{k: v for k, v in in_force.items() if k != sci}, scl: in_force[sci]}
    view: dict[str, bytes] = {}
    differing: list[str] = []
    for rel in sorted(set(local) | (set(in_force) & config_names)):
        if rel in config_names or rel in in_force:
            kept = in_force.get(rel)
            if kept is not None:
                view[rel] = kept
            if local.get(rel) != kept:
                differing.append(rel)
        else:
            view[rel] = local[rel]
    return view, differing


def referenced_files(files: Mapping[str, bytes], uid: str) -> list[str]:
    """Tree paths of the DEF, SCRIPT and CERT files the candidate CONFIG files name
    (`config.site.referenced_files`).

    Only chooses what to fetch; whether the set is valid is `config`'s to say. A name that is not
    a plain file name (a NUL or control character, over 255 bytes, `\\`...) is refused here,
    before any path is built of it (docs/behaviour.md §4.5); validation then finds it missing.
    """
    wanted: list[str] = []
    for folder, name, source in config_references(files, uid):
        if is_plain_name(name):
            wanted.append(f"{folder}/{name}")
        else:
            shown = name if len(name) <= 40 else name[:37] + "..."
            config_log.error("%s_%s: %r is not a plain file name; not fetched", uid, source,
                             shown)
    return list(dict.fromkeys(wanted))


def last_synced(log: JournalLog, server: int) -> dict[str, str]:
    """Per tree path, the SHA-256 last exchanged with `server` (`sync` events, and the `sync`
    section of `state` events, which outlives the segments holding older `sync` events)."""
    return synced_files(log, server)


class ConfigSync:
    """Steps 2-5 of a file server's session: server 1 both ways, server 2 uploads only."""

    def __init__(self, *, settings: ServerSettings, uid: str, transport: FileTransport,
                 log: JournalLog, config_dir: Path, validate: Validator | None = None,
                 config_applied: ConfigApplied | None = None,
                 in_force: Mapping[str, bytes] | None = None,
                 apply_files: ApplyFiles | None = None) -> None:
        self.settings = settings
        self.server = settings.slot
        self.uid = uid
        self._transport = transport
        self._log = log
        self._config_dir = config_dir
        self._validate = validate
        self._config_applied = config_applied
        self._apply_files = apply_files
        #: The files of the configuration in force (`Site.loaded`); None: the folder is.
        self._in_force = in_force
        #: Tree paths server 1 was seen not to hold this session (its listing of /CONFIG, the
        #: size lookup of a referenced file).
        self._missing: set[str] = set()

    async def run(self, counts: Counts) -> None:
        """Fetch (server 1), decide each file against the last sync, apply, upload."""
        local = await asyncio.to_thread(local_config_files, self._config_dir, self.uid)
        differing: list[str] = []
        if self._in_force is not None:
            local, differing = in_force_view(local, self._in_force, self.uid)
            # A folder gone differs in every file: the configuration watch says it once.
            said = differing if (self._config_dir / "CONFIG").is_dir() else []
            for rel in said:
                config_log.warning("server %d: %s differs from the configuration in force (a "
                                   "local change rejected or not applied yet); the copy in "
                                   "force is synced", self.server, rel)
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
                # Seen missing on server 1: uploaded again, even unchanged (the manual); else
                # (server 2, a file not looked up) only what changed since the last sync.
                if here is not None and (self.server == 2 or rel.split("/")[0] != "CERT") \
                        and (sha256_hex(here) != last or rel in self._missing):
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
            # A local edit not in force is a local change too: the server's copy replaces it.
            if (here is not None and sha256_hex(here) != last and last is not None) \
                    or rel in differing:
                log.warning("server %d: %s changed on both sides; the server's copy replaces the "
                            "local one", self.server, rel)
            candidates[rel] = there
        if candidates:
            await self._apply(candidates, agreed)
        for rel, sha in agreed.items():
            await self._journal_sync(rel, sha)
        await self._upload_configuration(uploads, counts)

    async def _journal_sync(self, rel: str, sha: str) -> None:
        """A `sync` event, committed at once: a session must not wait a flush period per file
        it syncs. While the store's commits fail (a full disk) it is queued, not waited for:
        lost in a crash, it only has the same file compared or uploaded again, and waiting
        would hold the session's deliveries until there is room."""
        await journal_unless_full(self._log, "sync", SyncedFile(
            server=self.server, file=rel, sha256=sha).to_fields())

    async def _fetch_configuration(self, local: Mapping[str, bytes],
                                   counts: Counts) -> dict[str, bytes]:
        remote: dict[str, bytes] = {}
        try:
            listing = {f.name for f in await self._transport.list("/CONFIG")}
        except TransportError as err:
            refused(err, counts)
            return remote
        budget = [CONFIG_SET_MAX_BYTES]
        for suffix in CONFIG_SUFFIXES:
            name = f"{self.uid}_{suffix}"
            source = name
            if suffix == "scl.ini" and name not in listing and f"{self.uid}_sci.ini" in listing:
                source = f"{self.uid}_sci.ini"
            elif name not in listing:
                self._missing.add(f"CONFIG/{name}")
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
            else:
                self._missing.add(rel)
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
        try:
            if self._apply_files is not None:
                await asyncio.to_thread(self._apply_files, candidates)
            else:
                await asyncio.to_thread(apply_config_files, self._config_dir, candidates)
        except OSError as err:
            # A configuration folder the gateway may not write (root's, under the service's
            # user) or a full disk: the set is not applied, as a rejected one is not, and the
            # session goes on to deliver the data; the next session tries again.
            for name in names.values():
                config_log.error("%s not applied: %s: %s; running configuration unchanged",
                                 name, err.filename or self._config_dir,
                                 err.strerror or err)
            return
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
        if not isinstance(self._log, ConfigSnapshots):
            return
        log_ = self._log
        site = await asyncio.to_thread(load_site, self._config_dir, self.uid)
        try:
            snapshot = await asyncio.to_thread(log_.put_config, site.files())
        except OSError as err:
            # A full disk: the reload the set makes stores it once there is room (tried every
            # 5 s), and the session goes on to deliver.
            config_log.error("Configuration snapshot not stored: %s", err)
            return
        await journal_unless_full(self._log, "config", ConfigInForce(
            snapshot=snapshot, origin=f"server {self.server}", files=tuple(files)).to_fields())

    def _check_candidates(self, candidates: Mapping[str, bytes]) -> list[Problem]:
        """Validate the running configuration with the candidates laid over it."""
        local_only: list[Problem] = []
        config_ini = f"CONFIG/{self.uid}_config.ini"
        if config_ini in candidates:
            running = self._config_dir / config_ini
            if self._in_force is not None:
                # The keys in force, not a local edit the gateway rejected or has not applied.
                in_force = self._in_force.get(config_ini, b"")
            else:
                in_force = running.read_bytes() if running.is_file() else b""
            local_only = local_only_changes(in_force, candidates[config_ini], running.name)
        if self._validate is None:
            return local_only
        return local_only + list(self._validate(self._config_dir, candidates))

    async def _upload_configuration(self, uploads: Mapping[str, bytes], counts: Counts) -> None:
        refused_folders: set[str] = set()
        for rel, data in uploads.items():
            path = f"/{rel}"
            folder = rel.split("/")[0]
            if folder in refused_folders:
                # docs/behaviour.md §4.5: what needs a refused directory stops for the session
                # (said once, not once per file).
                continue
            try:
                await self._transport.upload(path, data, two_step=self.settings.two_step)
            except TransportError as err:
                refused(err, counts)
                refused_folders.add(folder)
                continue
            await self._journal_sync(rel, sha256_hex(data))
            counts.files += 1
            log.info("server %d: uploaded %s (%d bytes)", self.server, path, len(data))

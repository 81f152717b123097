"""A session with a file server (docs/behaviour.md §4.2): connect; server 1 syncs configuration
both ways (`config_sync`), fetches the command file and hands its commands on; every server gets
its streams through the outbox. Every step that touches durable state writes a journal event
(`sync`, `command`, `window`, `delivered`), so a crash at any point is finished by the next
session. Log lines are the fixed messages of docs/formats.md §11, category `session`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from config.errors import SunpmError
from config.model import ServerSettings
from exporters.outbox import JournalLog, Outbox, StreamRefused, commits_failing
from exporters.transports._base import DownloadTooLarge, Failure, FileTransport, TransportError
from exporters.views.windows import cut_of
from store.events import Channel, CommandReceived, CommandResult

from .commands import CMD_MAX_BYTES, CommandHandler, parse_command_file
from .config_sync import ApplyFiles, ConfigApplied, ConfigSync, Validator
from .outcome import Counts, SessionResult, Trigger, reason_of, refused, server_label

log = logging.getLogger("sunpm.session")


class FileServerSession:
    """One session with a file server in slot 1 (full) or 2 (copies only)."""

    def __init__(self, *, settings: ServerSettings, uid: str, transport: FileTransport,
                 outbox: Outbox, log: JournalLog, config_dir: Path | None = None,
                 validate: Validator | None = None, commands: CommandHandler | None = None,
                 config_applied: ConfigApplied | None = None,
                 in_force: Mapping[str, bytes] | None = None,
                 apply_files: ApplyFiles | None = None) -> None:
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
        self._in_force = in_force
        self._apply_files = apply_files

    async def run(self, trigger: Trigger, *, started: datetime | None = None) -> SessionResult:
        started = started or datetime.now(UTC)
        counts = Counts()
        log.info("server %d %s: session started (%s)", self.server, server_label(self.settings),
                 trigger)
        try:
            await self._transport.connect()
            if self._config_dir is not None:
                try:
                    await ConfigSync(settings=self.settings, uid=self.uid,
                                     transport=self._transport, log=self._log,
                                     config_dir=self._config_dir, validate=self._validate,
                                     config_applied=self._config_applied,
                                     in_force=self._in_force,
                                     apply_files=self._apply_files).run(counts)
                except TransportError as err:
                    # A configuration directory refused: that step stops, the rest goes on.
                    refused(err, counts)
            if self.server == 1:
                await self._fetch_commands(counts)
            await self._upload_streams(counts, cut_of(started))
        except TransportError as err:
            return self._failed(err, counts, retriable=err.retriable)
        except SunpmError as err:
            # A window that cannot be built (a snapshot missing from the store...) or a journal
            # write refused: the session fails like any other and is retried.
            return self._failed(err, counts, retriable=True)
        except asyncio.CancelledError:
            # The service stops (or its servers change): said, so a `session started` line
            # in the log is never left without its end.
            log.warning("server %d: session interrupted (%d files uploaded); the rest goes at "
                        "the next session", self.server, counts.files)
            raise
        finally:
            await self._transport.close()
        if counts.refusals:
            return self._failed(None, counts, retriable=False)
        log.info("server %d: session ended OK (%d files uploaded, %d commands)", self.server,
                 counts.files, counts.commands)
        return SessionResult(ok=True, files=counts.files, commands=counts.commands)

    def _failed(self, err: SunpmError | None, counts: Counts, *,
                retriable: bool) -> SessionResult:
        reasons = list(counts.refusals) + ([] if err is None else [str(err)])
        reason = "; ".join(reason_of(r) for r in dict.fromkeys(reasons))
        level = logging.WARNING if retriable else logging.ERROR
        log.log(level, "server %d: session failed: %s", self.server, reason)
        return SessionResult(ok=False, files=counts.files, commands=counts.commands,
                             reason=reason, retriable=retriable)

    # ----- step 7: commands

    async def _fetch_commands(self, counts: Counts) -> None:
        failing = commits_failing(self._log)
        if failing is not None:
            # A command is journaled before its file is deleted: the file stays on the server
            # for a session that can journal it.
            log.warning("server %d: commands not fetched: the store cannot write (%s)",
                        self.server, failing)
            return
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
            except TransportError as err:
                # Unreadable (a right lacking): the commands stop, the streams still go
                # (docs/behaviour.md §4.5); anything else ends the session.
                if err.failure is not Failure.REFUSED:
                    raise
                refused(err, counts)
                continue
            for entry in entries:
                # Acknowledged before the delete, so a crash after it loses no command. An entry
                # that cannot run is answered by the handler in its turn (the ACK file keeps
                # the file's order), or here when there is none. Each committed at once: awaited
                # one by one, an entry left for the next flush would hold the session that long.
                if isinstance(entry, CommandReceived) or self._commands is None:
                    await self._log.append_journal(
                        "command" if isinstance(entry, CommandReceived) else "result",
                        entry.to_fields(), commit_now=True)
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
                await self._commands.submit(entries)

    # ----- step 8: streams

    async def _upload_streams(self, counts: Counts, cut_ns: int) -> None:
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

"""`sunpm sd reexport`: the files (or MQTT documents) of any past range of one server, from a dump.

docs/behaviour.md §5.3 with the dump as the store: windows the server had built are rendered
again whole from their journaled membership and snapshots (byte-identical to what was delivered);
the rest of the range is cut at UTC midnights and at `--to`, as a session would have built it.
The plan and the rendering are `exporters.rendering.backfill`'s, the same code as `sunpm export`
and the live outbox; the configuration is the dump's own snapshot unless `--config` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from config.errors import SunpmError
from config.model import ServerType
from exporters.rendering.backfill import PARTIAL, missing_records, plan_backfill, render_backfill
from exporters.rendering.source import store_source
from fsio import write_file_durably
from store.delivery import FILE_SERVER_STREAMS, DeliveryState, Stream

from .dump import DefinitionReader, Dump

__all__ = ["PARTIAL", "ReexportError", "ReexportResult", "reexport"]


class ReexportError(SunpmError):
    """The range cannot be re-exported as asked."""


@dataclass(slots=True)
class ReexportResult:
    windows: int = 0
    files: list[Path] = field(default_factory=list)
    #: Same text as journaled, other compressed bytes (another zlib build).
    differing: list[str] = field(default_factory=list)
    #: Rebuilt (`allow_partial`) from what is left of their records: not the text delivered.
    partial: list[str] = field(default_factory=list)
    #: Files of windows the server had not confirmed (its sessions would deliver them). Counted
    #: in files: a range holds many windows with nothing to send (no parameter read, no
    #: command), which the server never had to confirm.
    undelivered: int = 0


def reexport(dump: Dump, *, server: int, start_ns: int, end_ns: int, out: Path,
             config_dir: Path | None = None, allow_partial: bool = False,
             progress: Callable[[int], None] | None = None,
             on_plan: Callable[[int], None] | None = None) -> ReexportResult:
    if end_ns <= start_ns:
        raise ReexportError("--to must be after --from")
    if out.resolve().is_relative_to(dump.path.resolve()):
        raise ReexportError(f"{out}: inside the dump {dump.path}; the dump is never written to")
    missing = missing_records(dump.log, start_ns, end_ns)
    if missing and not allow_partial:
        raise ReexportError("; ".join(missing) + "; refused (--allow-partial exports what is left)")
    result = ReexportResult()
    with dump.site(config_dir) as site:
        settings = site.settings.servers[server - 1]
        if settings.type is ServerType.NONE:
            raise ReexportError(f"server {server} is not configured (SERVER_Type=none) in the "
                                "configuration in force")
        source = store_source(DefinitionReader(dump), site, server)
        state = DeliveryState.from_table(dump.log.journal(kinds=["state", "window",
                                                                 "delivered"]))
        streams: tuple[Stream, ...] = FILE_SERVER_STREAMS if settings.type.is_file_server \
            else (Stream.DATA,)
        plan = plan_backfill(state, source, server=server, streams=streams, start_ns=start_ns,
                             end_ns=end_ns)
        if on_plan is not None:
            on_plan(len(plan))
        result.windows = len(plan)
        for files in render_backfill(source, plan, allow_partial=allow_partial):
            for f in files:
                r = f.rendered
                target = out / r.directory.strip("/") / r.name
                target.parent.mkdir(parents=True, exist_ok=True)
                write_file_durably(target, r.data)
                result.files.append(target)
                if not f.window.delivered:
                    result.undelivered += 1
                if f.same_text is False:
                    result.partial.append(r.name)
                elif f.same_bytes is False:
                    result.differing.append(r.name)
            if progress is not None:
                progress(1)
    return result

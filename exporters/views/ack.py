"""ACK files `<uid>_ACK_<ts>.json` (docs/formats.md §12.2) from the window's `result` events.

The results of command-file commands (channel `file`) in execution order (journal order), as one
compact JSON array, UTF-8 unescaped, numbers in plain notation, on one line ending with LF. Not
compressed.
"""

from __future__ import annotations

from collections.abc import Iterable

from store.events import Channel, CommandResult, JournalItem, JsonValue

from .numbers import json_text


def file_results(items: Iterable[JournalItem]) -> list[CommandResult]:
    chosen = sorted((i for i in items if i.kind == "result"), key=lambda i: i.seq)
    results = [CommandResult.from_body(item.body) for item in chosen]
    return [r for r in results if r.channel is Channel.FILE]


def ack_text(items: Iterable[JournalItem]) -> str:
    """The ACK file's text ("" when the window has no file-command result: no file)."""
    results = file_results(items)
    if not results:
        return ""
    entries: list[JsonValue] = [dict(r.entry()) for r in results]
    return json_text(entries) + "\n"


def ack_file(items: Iterable[JournalItem]) -> bytes | None:
    text = ack_text(items)
    return text.encode() if text else None

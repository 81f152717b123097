"""What the discovery, diagnostics, scripts and system areas share: their gateway-side objects
(`pipeline.service.discovery.Discovery`, `pipeline.service.admin.Admin`), field errors, times
and downloads.

A refusal names the form field at fault: pages show it beside the field, the API answers 422
with `problems: [{file, line, field, message}]` (docs/behaviour.md §10.3); a conflict (a
discovery already running, results already imported) is 409.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from config.errors import Problem
from pipeline.service.admin import Admin
from pipeline.service.config_edit import ChangeRejected
from pipeline.service.discovery import Discovery
from pipeline.web.common import facade, json_error, request_json
from pipeline.web.editing import problem_json

NS_PER_S: Final = 1_000_000_000


class FieldError(Exception):
    """Bad input for one form field (`field` is the form's name for it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def admin(request: web.Request) -> Admin:
    return Admin(facade(request).gateway)


def discovery(request: web.Request) -> Discovery:
    """The gateway's one `Discovery`, shared with the `discoverDevices` command."""
    return facade(request).gateway.discovery


def field_problems(errors: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"file": "", "line": None, "field": field, "message": message, "severity": "error",
             "text": f"{field}: {message}"} for field, message in errors.items()]


def field_json(errors: Mapping[str, str]) -> web.Response:
    """422 naming the fields at fault."""
    first = next(iter(errors.items()))
    return json_error(f"{first[0]}: {first[1]}", 422, problems=field_problems(errors))


def rejected_json(err: ChangeRejected) -> web.Response:
    return json_error(str(err.problems[0]) if err.problems else str(err), 422,
                      problems=[problem_json(p) for p in err.problems])


def problem_texts(problems: Iterable[Problem]) -> list[str]:
    return [str(p) for p in problems]


def integer(form: Mapping[str, Any], field: str, default: int, low: int, high: int) -> int:
    """A whole number of the form (or JSON body) within `low..high`."""
    raw = form.get(field, default)
    if raw in ("", None):
        return default
    if isinstance(raw, bool):
        raise FieldError(field, f"expected a whole number, got {raw!r}")
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise FieldError(field, f"expected a whole number, got {str(raw)[:40]!r}") from None
    if not low <= value <= high:
        raise FieldError(field, f"{value} is outside {low}..{high}")
    return value


#: The last second of the store's clock (2262-04-11T23:47:16Z, nanoseconds in 64 bits).
LATEST_TIME_S: Final = (2**63 - 1) // NS_PER_S


def parse_time(form: Mapping[str, Any], field: str) -> int:
    """An ISO 8601 time (`2021-02-05`, `2021-02-05T09:15`, with or without seconds, `Z` or an
    offset; without one it is UTC, as `sunpm export`, docs/behaviour.md §5.3) in ns."""
    text = str(form.get(field, "")).strip()
    if not text:
        raise FieldError(field, "required")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = int(moment.timestamp())
    except (ValueError, OverflowError):
        raise FieldError(field, f"{text[:40]!r} is not a date and time (2021-02-05T09:15:00Z)") \
            from None
    # The store's times are nanoseconds in 64 bits: a year 9999 reached it as an integer it
    # could not compare (500).
    if not 0 <= seconds <= LATEST_TIME_S:
        raise FieldError(field, f"{text[:40]!r} is outside 1970-01-01..2262-04-11")
    return seconds * NS_PER_S


def download(name: str, data: bytes, content_type: str) -> web.Response:
    return web.Response(body=data, content_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


#: What a file download reads at a time (in a worker thread: the flash may be slow).
DOWNLOAD_CHUNK: Final = 256 * 1024


class FileDownload(web.StreamResponse):
    """An open file (a spooled export) sent as an attachment chunk by chunk, closed once sent
    or abandoned: its size is on disk, not in memory."""

    def __init__(self, name: str, file: IO[bytes], content_type: str) -> None:
        super().__init__(headers={"Content-Disposition": f'attachment; filename="{name}"'})
        self.content_type = content_type
        self._file = file
        self.content_length = file.seek(0, io.SEEK_END)
        file.seek(0)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            writer = await super().prepare(request)
            if request.method != "HEAD":
                while chunk := await asyncio.to_thread(self._file.read, DOWNLOAD_CHUNK):
                    await self.write(chunk)
            await self.write_eof()
            return writer
        finally:
            self._file.close()


async def form_or_json(request: web.Request) -> dict[str, Any]:
    """The request's fields: a JSON object for the API, the form for pages."""
    if request.content_type == "application/json":
        try:
            body = await request_json(request)
        except ValueError as err:
            raise FieldError("", f"expected a JSON object ({err})") from None
        if not isinstance(body, dict):
            raise FieldError("", "expected a JSON object")
        return body
    form = await request.post()
    return dict(form.items())

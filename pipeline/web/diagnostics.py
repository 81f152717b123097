"""Diagnostics (docs/behaviour.md §10.2): frame traces per interface for N minutes, a live tail,
the captured traces as a download; and the `/api/traces` twins.

    GET  /diagnostics, /api/traces                   every interface: running, until, frames
    POST /diagnostics, /api/traces                   {interface, minutes} (0 stops)
    GET  /diagnostics/download, /api/traces/download ?interface= (none: all) -> zip
    GET  /api/traces/tail?interface=                 the last lines of the last two minutes
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from pipeline.service.admin import AdminError, TraceState
from pipeline.service.commands import CommandError
from pipeline.web.common import facade, json_error, json_ok, page
from pipeline.web.operations import (
    FieldError,
    FileDownload,
    admin,
    field_json,
    form_or_json,
    integer,
)
from store.traces import TRACE_INTERFACES

routes = web.RouteTableDef()


def _states(request: web.Request) -> list[dict[str, Any]]:
    zone = facade(request).zone()
    out = []
    for state in admin(request).traces():
        row = state.to_json()
        row["until"] = "" if state.ends_ns is None else datetime.fromtimestamp(
            state.ends_ns / 1e9, zone).strftime("%Y-%m-%d %H:%M:%S")
        out.append(row)
    return out


def _start(request: web.Request, fields: dict[str, Any]) -> TraceState:
    interface = str(fields.get("interface", ""))
    minutes = integer(fields, "minutes", 10, 0, 1440)
    try:
        admin(request).start_trace(interface, minutes)
    except AdminError as err:
        raise FieldError(err.field or "interface", str(err)) from None
    except CommandError as err:
        raise FieldError("minutes", str(err).removeprefix("log: ")) from None
    return next(s for s in admin(request).traces() if s.interface == interface)


def _page(request: web.Request, *, fields: dict[str, Any] | None = None,
          errors: dict[str, str] | None = None, message: str = "",
          status: int = 200) -> web.Response:
    values = {"interface": "ethernet", "minutes": "10",
              **{k: str(v) for k, v in (fields or {}).items() if k in ("interface", "minutes")}}
    return page(request, "diagnostics.html", {
        "title": "Diagnostics", "traces": _states(request), "interfaces": TRACE_INTERFACES,
        "fields": values, "errors": errors or {}, "message": message}, status=status)


@routes.get("/diagnostics")
async def diagnostics_page(request: web.Request) -> web.StreamResponse:
    # A device's Diag link names its interface: the form starts on it.
    chosen = request.query.get("interface", "")
    return _page(request, fields={"interface": chosen} if chosen in TRACE_INTERFACES else None)


@routes.post("/diagnostics")
async def diagnostics_start(request: web.Request) -> web.StreamResponse:
    fields = await form_or_json(request)
    try:
        state = _start(request, fields)
    except FieldError as err:
        return _page(request, fields=fields, errors={err.field: err.message}, status=422)
    text = f"Trace on {state.interface} running." if state.running else \
        f"Trace on {state.interface} stopped."
    return _page(request, message=text)


async def _zip(request: web.Request) -> web.StreamResponse:
    """The traces' zip; `AdminError` for an unknown interface."""
    name, spooled = await admin(request).trace_zip(request.query.get("interface") or None)
    return FileDownload(name, spooled, "application/zip")


@routes.get("/diagnostics/download")
async def diagnostics_download(request: web.Request) -> web.StreamResponse:
    chosen = request.query.get("interface") or None
    if (chosen is None or chosen in TRACE_INTERFACES) and not any(
            t["storedBytes"] or t["entries"] for t in _states(request)
            if chosen in (None, t["interface"])):
        # An empty zip would be all the installer got, with no word of why.
        what = f"on {chosen} " if chosen else ""
        return _page(request, message=f"No trace stored {what}yet: start one below, then "
                     "download it.", status=404)
    try:
        return await _zip(request)
    except AdminError as err:
        return _page(request, errors={"interface": str(err)}, status=422)


@routes.get("/api/traces")
async def api_traces(request: web.Request) -> web.StreamResponse:
    return json_ok({"traces": _states(request)})


@routes.post("/api/traces")
async def api_traces_start(request: web.Request) -> web.StreamResponse:
    try:
        state = _start(request, await form_or_json(request))
    except FieldError as err:
        if not err.field:
            return json_error(err.message, 400)
        return field_json({err.field: err.message})
    return json_ok(state.to_json())


@routes.get("/api/traces/download")
async def api_traces_download(request: web.Request) -> web.StreamResponse:
    try:
        return await _zip(request)
    except AdminError as err:
        return json_error(str(err), 400)


@routes.get("/api/traces/tail")
async def api_traces_tail(request: web.Request) -> web.StreamResponse:
    try:
        lines = await admin(request).trace_tail(request.query.get("interface", ""))
    except AdminError as err:
        return field_json({"interface": str(err)})
    return json_ok({"lines": lines})

"""Discovery (docs/behaviour.md §3, §10.2): parameters, the live log, results with a checkbox per
row, an import that never overwrites; and the `/api/discovery` twins.

    GET  /discovery, /api/discovery?after=N     the run: state, lines from N, devices
    POST /discovery, /api/discovery              start (field errors: 422)
    POST /discovery/abort, /api/discovery/abort  stop after the current request
    POST /discovery/import, /api/discovery/import   {"rows": [0, 2]} -> {added, definitions}
    POST /discovery/cancel, DELETE /api/discovery   drop the results
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from pipeline.drivers._base import DiscoveryParams
from pipeline.drivers.discovery import DiscoveryRefused
from pipeline.service.config_edit import ChangeRejected
from pipeline.service.discovery import DiscoveryBusy, DiscoveryRun
from pipeline.web.common import json_error, json_ok, page
from pipeline.web.operations import (
    FieldError,
    discovery,
    field_json,
    form_or_json,
    integer,
    problem_texts,
    rejected_json,
)

routes = web.RouteTableDef()

INTERFACES: Final = ("", "ethernet1", "ethernet2", "serial1", "serial2", "serial3")
#: Which form field a refusal of docs/behaviour.md §3.1 is about.
_REFUSAL_FIELDS: Final = (("firstAddress", "firstAddress"), ("lastAddress", "lastAddress"),
                          ("ip is required", "ip"), ("ip '", "ip"), ("port ", "port"),
                          ("timeout", "timeout"),
                          ("maxDevices", "maxDevices"))
DEFAULTS: Final = {"interface": "ethernet1", "ip": "", "port": "502", "firstAddress": "1",
                   "lastAddress": "240", "maxDevices": "240", "timeout": "1000"}


def _params(fields: dict[str, Any]) -> DiscoveryParams:
    unknown = sorted(set(fields) - set(DEFAULTS) - {"csrf"})
    if unknown:
        # Left out, a misspelt `ports` scanned port 502 while the installer meant another.
        raise FieldError(unknown[0], f"not a discovery parameter ({', '.join(DEFAULTS)})")
    interface = str(fields.get("interface") or "").strip().lower()
    if interface not in INTERFACES:
        raise FieldError("interface", f"unknown interface {interface[:20]!r}")
    ip = str(fields.get("ip") or "").strip()
    if len(ip) > 253 or any(c.isspace() for c in ip):
        raise FieldError("ip", "not an address or host name")
    return DiscoveryParams(
        interface=interface or None, ip=ip or None,
        port=integer(fields, "port", 502, 1, 65535),
        first_address=integer(fields, "firstAddress", 1, 1, 240),
        last_address=integer(fields, "lastAddress", 240, 1, 240),
        max_devices=integer(fields, "maxDevices", 240, 1, 240),
        timeout_ms=integer(fields, "timeout", 1000, 1, 60_000))


def _refusal_field(text: str) -> str:
    return next((f for key, f in _REFUSAL_FIELDS if key in text), "interface")


def _start(request: web.Request, fields: dict[str, Any]) -> DiscoveryRun:
    """Start a run; `FieldError` for bad parameters, `DiscoveryBusy` when one runs."""
    params = _params(fields)
    try:
        return discovery(request).start(params)
    except DiscoveryRefused as err:
        text = str(err).removeprefix("discoverDevices: ")
        raise FieldError(_refusal_field(text), text) from None


def _state(request: web.Request, after: int = 0) -> dict[str, Any]:
    run = discovery(request).run
    return {"state": "idle"} if run is None else run.to_json(after)


def _page(request: web.Request, *, fields: dict[str, Any] | None = None,
          errors: dict[str, str] | None = None, message: str = "",
          problems: list[str] | None = None, status: int = 200) -> web.Response:
    run = discovery(request).run
    if fields is None and run is not None:
        # The form shows the parameters of the run on the page, for a second run alike.
        p = run.params
        fields = {"interface": p.interface or "", "ip": p.ip or "", "port": p.port,
                  "firstAddress": p.first_address, "lastAddress": p.last_address,
                  "maxDevices": p.max_devices, "timeout": p.timeout_ms}
    values = {**DEFAULTS, **{k: str(v) for k, v in (fields or {}).items() if k in DEFAULTS}}
    return page(request, "discovery.html", {
        "title": "Discovery", "run": _state(request), "fields": values,
        "errors": errors or {}, "message": message, "problems": problems or [],
        "interfaces": INTERFACES}, status=status)


@routes.get("/discovery")
async def discovery_page(request: web.Request) -> web.StreamResponse:
    return _page(request)


@routes.post("/discovery")
async def discovery_start(request: web.Request) -> web.StreamResponse:
    fields = await form_or_json(request)
    try:
        _start(request, fields)
    except FieldError as err:
        return _page(request, fields=fields, errors={err.field: err.message}, status=422)
    except DiscoveryBusy as err:
        return _page(request, fields=fields, errors={"interface": str(err)}, status=409)
    raise web.HTTPSeeOther("/discovery")


@routes.post("/discovery/abort")
async def discovery_abort(request: web.Request) -> web.StreamResponse:
    discovery(request).abort()
    raise web.HTTPSeeOther("/discovery")


@routes.post("/discovery/cancel")
async def discovery_cancel(request: web.Request) -> web.StreamResponse:
    discovery(request).cancel()
    raise web.HTTPSeeOther("/discovery")


@routes.post("/discovery/import")
async def discovery_import(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        rows = [int(str(v)) for v in form.getall("row", [])]
    except ValueError:
        return _page(request, problems=["row: expected row numbers"], status=400)
    try:
        result = await discovery(request).import_rows(rows)
    except (DiscoveryBusy, ValueError) as err:
        return _page(request, problems=[str(err)], status=409 if isinstance(
            err, DiscoveryBusy) else 400)
    except ChangeRejected as err:
        return _page(request, problems=problem_texts(err.problems), status=422)
    added = ", ".join(result.added)
    return _page(request, message=f"{len(result.added)} devices added to daq.csv: {added}. "
                                  "The gateway applies the change within a few seconds.")


# ----------------------------------------------------------------------------- API


@routes.get("/api/discovery")
async def api_discovery(request: web.Request) -> web.StreamResponse:
    try:
        after = max(0, int(request.query.get("after", "0")))
    except ValueError:
        return json_error("after: expected a line number", 400)
    return json_ok(_state(request, after))


@routes.post("/api/discovery")
async def api_discovery_start(request: web.Request) -> web.StreamResponse:
    try:
        fields = await form_or_json(request)
        run = _start(request, fields)
    except FieldError as err:
        if not err.field:
            return json_error(err.message, 400)
        return field_json({err.field: err.message})
    except DiscoveryBusy as err:
        return json_error(str(err), 409)
    return json_ok(run.to_json(), status=202)


@routes.post("/api/discovery/abort")
async def api_discovery_abort(request: web.Request) -> web.StreamResponse:
    return json_ok({"aborted": discovery(request).abort()})


@routes.delete("/api/discovery")
async def api_discovery_cancel(request: web.Request) -> web.StreamResponse:
    discovery(request).cancel()
    return json_ok(_state(request))


@routes.post("/api/discovery/import")
async def api_discovery_import(request: web.Request) -> web.StreamResponse:
    try:
        body = await form_or_json(request)
    except FieldError as err:
        return json_error(err.message, 400)
    rows = body.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, int) and not isinstance(r, bool)
                                             for r in rows):
        return field_json({"rows": "expected a list of result row numbers"})
    try:
        result = await discovery(request).import_rows(rows)
    except DiscoveryBusy as err:
        return json_error(str(err), 409)
    except ValueError as err:
        return field_json({"rows": str(err)})
    except ChangeRejected as err:
        return rejected_json(err)
    return json_ok({"added": result.added, "definitions": result.definitions,
                    "reused": result.reused})

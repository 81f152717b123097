"""System (docs/behaviour.md §10.2): version, uptime, store; connect now, reboot, factory reset
(type the uid), update, the gateway log of a range, backfill export (§5.3) as a zip, the debug
archive; and the `/api/system/...`, `/api/logs`, `/api/export` twins.

    POST /system/connect, /api/system/connect    {server: 1|2}
    POST /system/reboot, /api/system/reboot      the service restarts (not the host)
    POST /system/factory, /api/system/factory    {confirm: "<uid>"}
    POST /system/update, /api/system/update      multipart `package` (and `md5`), or {url, md5}
    POST /system/archive, /api/system/archive    the debug archive made now, as a download
    GET  /system/logs, /api/logs                 ?from=&to= (ISO 8601, UTC without offset)
    GET  /system/export, /api/export             ?server=&from=&to= -> zip of the files
    POST /api/commands                           {rpcName, parameters, callerId} -> its result

Connect, reboot, factory and update go through the command executor on the local channel
(journaled and answered as `sunpm cmd` would be); their error answers show as field errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pipeline.service.admin import AdminError
from pipeline.service.commands import CommandError
from pipeline.web.common import facade, json_error, json_ok, page
from pipeline.web.operations import (
    FieldError,
    FileDownload,
    admin,
    download,
    field_json,
    form_or_json,
    integer,
    parse_time,
)
from store.events import Channel, CommandReceived

routes = web.RouteTableDef()


async def _page(request: web.Request, *, fields: dict[str, Any] | None = None,
                errors: dict[str, str] | None = None, message: str = "",
                status: int = 200) -> web.Response:
    state = await facade(request).status()
    store_bytes = sum(int(d.get("storeBytes", 0)) for d in state.get("devices", []))
    gateway = facade(request).gateway
    values = {"server": "1", "confirm": "", "url": "", "md5": "", "logs-from": "", "logs-to": "",
              "export-server": "1", "export-from": "", "export-to": "",
              **{k: str(v) for k, v in (fields or {}).items() if isinstance(v, str)}}
    return page(request, "system.html", {
        "title": "System", "status": state, "store_bytes": store_bytes,
        "store_dir": str(gateway.store.path) if gateway.store is not None else "",
        "servers": [s["srv"] for s in state.get("servers", [])], "fields": values,
        "errors": errors or {}, "message": message}, status=status)


@routes.get("/system")
async def system_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def _act(request: web.Request, action: str, fields: dict[str, Any]) -> str:
    """Run one action; its message. `FieldError` names the field at fault."""
    ops = admin(request)
    try:
        if action == "connect":
            server = integer(fields, "server", 1, 1, 2)
            await ops.connect(server)
            return f"Session with server {server} started."
        if action == "reboot":
            await ops.reboot()
            return "The service restarts now; this page answers again in a few seconds."
        if action == "factory":
            await ops.factory_reset(str(fields.get("confirm", "")))
            return "Factory reset: the service deletes its configuration and store, then " \
                "restarts with the defaults."
        if action == "update":
            field = fields.get("package")
            package = (field.filename, field.file) \
                if isinstance(field, web.FileField) and field.filename else None
            await ops.update(package, url=str(fields.get("url", "")),
                             md5=str(fields.get("md5", "")))
            return "Update staged; SYSTEM_UpdateCommand installs it now."
    except AdminError as err:
        raise FieldError(err.field or action, str(err)) from None
    except CommandError as err:
        raise FieldError({"connect": "server", "factory": "confirm", "update": "package"}.get(
            action, action), str(err)) from None
    raise web.HTTPNotFound(text=f"no system action '{action}'\n")


@routes.post("/system/archive")
async def system_archive(request: web.Request) -> web.StreamResponse:
    try:
        name, data = await admin(request).debug_archive()
    except AdminError as err:
        return await _page(request, errors={"archive": str(err)}, status=409)
    return download(name, data, "application/gzip")


# After `/system/archive`: aiohttp tries routes in the order they are added.
@routes.post("/system/{action}")
async def system_action(request: web.Request) -> web.StreamResponse:
    fields = await form_or_json(request)
    try:
        message = await _act(request, request.match_info["action"], fields)
    except FieldError as err:
        return await _page(request, fields=fields, errors={err.field: err.message}, status=422)
    return await _page(request, message=message)


def _range(request: web.Request) -> tuple[int, int]:
    start, end = parse_time(request.query, "from"), parse_time(request.query, "to")
    if end <= start:
        raise FieldError("to", "must be after 'from'")
    return start, end


async def _logs(request: web.Request) -> web.StreamResponse:
    start, end = _range(request)
    try:
        name, spooled = await admin(request).log_text(start, end)
    except AdminError as err:
        raise FieldError(err.field or "from", str(err)) from None
    return FileDownload(name, spooled, "text/plain")


async def _export(request: web.Request) -> web.StreamResponse:
    start, end = _range(request)
    server = integer(request.query, "server", 1, 1, 2)
    try:
        name, spooled = await admin(request).backfill_zip(server, start, end)
    except AdminError as err:
        raise FieldError(err.field or "from", str(err)) from None
    return FileDownload(name, spooled, "application/zip")


def _prefixed(form: str, query: Mapping[str, str]) -> dict[str, str]:
    """A download form's fields under its own names: the log and export forms (and the
    connect form's `server`) share query names, and a refusal must refill only its form."""
    return {f"{form}-{k}": v for k, v in query.items()}


@routes.get("/system/logs")
async def system_logs(request: web.Request) -> web.StreamResponse:
    try:
        return await _logs(request)
    except FieldError as err:
        return await _page(request, fields=_prefixed("logs", request.query), errors={
            f"logs-{err.field}": err.message}, status=422)


@routes.get("/system/export")
async def system_export(request: web.Request) -> web.StreamResponse:
    try:
        return await _export(request)
    except FieldError as err:
        return await _page(request, fields=_prefixed("export", request.query), errors={
            f"export-{err.field}": err.message}, status=422)


# ----------------------------------------------------------------------------- API


@routes.post("/api/system/archive")
async def api_system_archive(request: web.Request) -> web.StreamResponse:
    try:
        name, data = await admin(request).debug_archive()
    except AdminError as err:
        return json_error(str(err), 409)
    return download(name, data, "application/gzip")


@routes.post("/api/system/{action}")
async def api_system_action(request: web.Request) -> web.StreamResponse:
    try:
        fields = await form_or_json(request)
        message = await _act(request, request.match_info["action"], fields)
    except FieldError as err:
        if not err.field:
            return json_error(err.message, 400)
        return field_json({err.field: err.message})
    except web.HTTPNotFound:
        return json_error(f"no system action '{request.match_info['action']}'", 404)
    return json_ok({"result": "OK", "message": message})


@routes.post("/api/commands")
async def api_commands(request: web.Request) -> web.StreamResponse:
    """A command of docs/formats.md §12.3, `{rpcName, parameters, callerId}`, run by the
    executor on the local channel: its result entry (`{result, callerId}` or `{error,
    callerId}`), as `sunpm cmd` gets it."""
    try:
        body = await form_or_json(request)
    except FieldError as err:
        return json_error(err.message, 400)
    rpc_name, parameters = body.get("rpcName"), body.get("parameters", {})
    caller_id = body.get("callerId")
    if not isinstance(rpc_name, str) or not rpc_name or len(rpc_name) > 200:
        return field_json({"rpcName": "expected '<script>.<command>', e.g. 'sunpm.status'"})
    if not isinstance(parameters, dict):
        return field_json({"parameters": "expected an object"})
    if caller_id is not None and (isinstance(caller_id, bool) or
                                  not isinstance(caller_id, (str, int))):
        return field_json({"callerId": "expected a string or an integer"})
    commands = facade(request).gateway.commands
    if commands is None:
        return json_error("the service is not running", 409)
    result = await commands.call(CommandReceived(channel=Channel.LOCAL, rpc_name=rpc_name,
                                                 parameters=parameters, caller_id=caller_id))
    return json_ok(result.entry())


@routes.get("/api/logs")
async def api_logs(request: web.Request) -> web.StreamResponse:
    try:
        return await _logs(request)
    except FieldError as err:
        return field_json({err.field: err.message})


@routes.get("/api/export")
async def api_export(request: web.Request) -> web.StreamResponse:
    try:
        return await _export(request)
    except FieldError as err:
        return field_json({err.field: err.message})



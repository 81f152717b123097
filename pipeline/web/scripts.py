"""Scripts (docs/behaviour.md §9, §10.2): label, version, name, state, last error; upload,
enable, disable, log, export, delete; and the `/api/scripts` twins.

    GET    /scripts, /api/scripts
    POST   /scripts (multipart `script`), /api/scripts ({file, source} or multipart)
    POST   /scripts/{file}/enable|disable, /api/scripts/{name}/enable|disable
    GET    /scripts/{file}/log, /api/scripts/{name}/log
    GET    /scripts/{file}/source, /api/scripts/{name}/source    the file, as a download
    POST   /scripts/{file}/delete, DELETE /api/scripts/{name}

`{name}` is the script's file (`limit.lua`) or its RPC name (`limit`). An upload or a delete is a
local configuration change (validated whole, written all or nothing): the gateway applies it
within seconds, restarting the scripts; enable and disable last until the next restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from pipeline.scripts import ScriptStatus
from pipeline.service.admin import AdminError
from pipeline.service.config_edit import ChangeRejected
from pipeline.web.common import (
    SCRIPT_MAX_BYTES,
    file_too_large,
    json_error,
    json_ok,
    page,
    request_json,
)
from pipeline.web.operations import (
    admin,
    download,
    field_json,
    problem_texts,
    rejected_json,
)

routes = web.RouteTableDef()


def _json(status: ScriptStatus) -> dict[str, Any]:
    return {"file": status.file, "name": status.name, "label": status.label,
            "version": status.version, "enabled": status.enabled,
            "lastError": status.last_error}


async def _listed(request: web.Request) -> list[ScriptStatus]:
    """The scripts scl.ini lists as saved, with their state."""
    files = await asyncio.to_thread(admin(request).saved_scripts)
    return admin(request).scripts(files)


async def _find(request: web.Request, key: str) -> ScriptStatus:
    found = next((s for s in await _listed(request) if key in (s.file, s.name)), None)
    if found is None:
        raise web.HTTPNotFound(text=f"no script '{key}'\n")
    return found


async def _page(request: web.Request, *, errors: dict[str, str] | None = None,
                message: str = "", problems: list[str] | None = None,
                warnings: list[str] | None = None, status: int = 200) -> web.Response:
    return page(request, "scripts.html", {
        "title": "Scripts",
        "scripts": [_json(s) for s in await _listed(request)],
        "errors": errors or {}, "message": message, "problems": problems or [],
        "warnings": warnings or []},
        status=status)


async def _upload_fields(request: web.Request) -> tuple[str, bytes]:
    """`(file, bytes)` of a multipart `script` field, or a JSON `{file, source}`."""
    if request.content_type == "application/json":
        try:
            body = await request_json(request)
        except ValueError:
            raise AdminError("expected a JSON object {file, source}") from None
        if not isinstance(body, dict) or not isinstance(body.get("file"), str) or \
                not isinstance(body.get("source"), str):
            raise AdminError("expected a JSON object {file, source}", "file")
        return body["file"], body["source"].encode("utf-8")
    form = await request.post()
    upload = form.get("script")
    if not isinstance(upload, web.FileField) or not upload.filename:
        raise AdminError("choose a .lua file", "script")
    return upload.filename, upload.file.read()


@routes.get("/scripts")
async def scripts_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@routes.post("/scripts")
async def scripts_upload(request: web.Request) -> web.StreamResponse:
    try:
        file, data = await _upload_fields(request)
        if len(data) > SCRIPT_MAX_BYTES:
            return await _page(request, errors={
                "script": f"{file}: larger than {SCRIPT_MAX_BYTES >> 20} MiB; not saved"},
                status=413)
        warnings = await admin(request).upload_script(file, data)
    except AdminError as err:
        return await _page(request, errors={"script": str(err)}, status=422)
    except ChangeRejected as err:
        return await _page(request, problems=problem_texts(err.problems), status=422)
    return await _page(request,
                       message=f"{file} saved; the gateway starts it within a few seconds.",
                       warnings=problem_texts(warnings))


@routes.post("/scripts/{file}/enable")
async def script_enable(request: web.Request) -> web.StreamResponse:
    script = await _find(request, request.match_info["file"])
    try:
        status = await admin(request).enable_script(script.file)
    except AdminError as err:
        return await _page(request, problems=[str(err)], status=422)
    text = f"{status.name} enabled." if status.enabled else \
        f"{status.name} failed to start: {status.last_error}"
    return await _page(request, message=text)


@routes.post("/scripts/{file}/disable")
async def script_disable(request: web.Request) -> web.StreamResponse:
    script = await _find(request, request.match_info["file"])
    try:
        await admin(request).disable_script(script.name)
    except AdminError as err:
        return await _page(request, problems=[str(err)], status=422)
    return await _page(request, message=f"{script.name} disabled until the next restart.")


@routes.post("/scripts/{file}/delete")
async def script_delete(request: web.Request) -> web.StreamResponse:
    file = request.match_info["file"]
    try:
        await admin(request).delete_script(file)
    except AdminError as err:
        return await _page(request, problems=[str(err)], status=404)
    except ChangeRejected as err:
        return await _page(request, problems=problem_texts(err.problems), status=422)
    return await _page(request,
                       message=f"{file} deleted; the gateway stops it within a few seconds.")


@routes.get("/scripts/{file}/log")
async def script_log_page(request: web.Request) -> web.StreamResponse:
    script = await _find(request, request.match_info["file"])
    lines = await admin(request).script_log(script.name)
    return page(request, "script_log.html", {"title": "Scripts", "script": _json(script),
                                             "lines": lines})


async def _source(request: web.Request, key: str) -> web.StreamResponse:
    script = await _find(request, key)
    try:
        data = admin(request).export_script(script.file)
    except AdminError as err:
        return json_error(str(err), 404)
    return download(script.file, data, "text/plain")


@routes.get("/scripts/{file}/source")
async def script_source(request: web.Request) -> web.StreamResponse:
    return await _source(request, request.match_info["file"])


# ----------------------------------------------------------------------------- API


async def _api_find(request: web.Request) -> ScriptStatus | web.Response:
    try:
        return await _find(request, request.match_info["name"])
    except web.HTTPNotFound:
        return json_error(f"no script '{request.match_info['name']}'", 404)


@routes.get("/api/scripts")
async def api_scripts(request: web.Request) -> web.StreamResponse:
    return json_ok({"scripts": [_json(s) for s in await _listed(request)]})


@routes.post("/api/scripts")
async def api_scripts_upload(request: web.Request) -> web.StreamResponse:
    try:
        file, data = await _upload_fields(request)
        too_large = file_too_large(file, len(data), SCRIPT_MAX_BYTES)
        if too_large is not None:
            return too_large
        warnings = await admin(request).upload_script(file, data)
    except AdminError as err:
        return field_json({err.field or "file": str(err)})
    except ChangeRejected as err:
        return rejected_json(err)
    return json_ok({"file": file, "warnings": problem_texts(warnings)}, status=201)


@routes.post("/api/scripts/{name}/enable")
async def api_script_enable(request: web.Request) -> web.StreamResponse:
    script = await _api_find(request)
    if isinstance(script, web.Response):
        return script
    try:
        return json_ok(_json(await admin(request).enable_script(script.file)))
    except AdminError as err:
        return field_json({"name": str(err)})


@routes.post("/api/scripts/{name}/disable")
async def api_script_disable(request: web.Request) -> web.StreamResponse:
    script = await _api_find(request)
    if isinstance(script, web.Response):
        return script
    try:
        await admin(request).disable_script(script.name)
    except AdminError as err:
        return json_error(str(err), 409)
    return json_ok(_json(await _find(request, script.file)))


@routes.get("/api/scripts/{name}/log")
async def api_script_log(request: web.Request) -> web.StreamResponse:
    script = await _api_find(request)
    if isinstance(script, web.Response):
        return script
    return json_ok({"name": script.name, "lines": await admin(request).script_log(script.name)})


@routes.get("/api/scripts/{name}/source")
async def api_script_source(request: web.Request) -> web.StreamResponse:
    script = await _api_find(request)
    if isinstance(script, web.Response):
        return script
    return await _source(request, script.file)


@routes.delete("/api/scripts/{name}")
async def api_script_delete(request: web.Request) -> web.StreamResponse:
    key = request.match_info["name"]
    known = next((s for s in await _listed(request) if key in (s.file, s.name)), None)
    try:
        await admin(request).delete_script(known.file if known is not None else key)
    except AdminError as err:
        return json_error(str(err), 404)
    except ChangeRejected as err:
        return rejected_json(err)
    return json_ok({"deleted": known.file if known is not None else key})

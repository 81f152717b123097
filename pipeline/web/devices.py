"""Devices and the device page (docs/behaviour.md §10.2): state, live scaled values with units,
a chart per variable from the store; add, edit, delete and duplicate through `config`."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from pipeline.web.common import (
    DEFINITION_MAX_BYTES,
    facade,
    json_error,
    json_ok,
    page,
    rejected,
    request_json,
    whole_file_text,
)
from pipeline.web.editing import DEVICE_FIELDS, canonical_index
from pipeline.web.facade import Conflict, FieldRefused
from pipeline.web.io_editor import with_submitted
from pipeline.web.operations import field_json

routes = web.RouteTableDef()


@routes.get("/devices")
async def devices_page(request: web.Request) -> web.StreamResponse:
    data = await facade(request).devices()
    data.update(saved=request.query.get("saved", ""), deleted=request.query.get("deleted", ""),
                problems=[])
    return page(request, "devices.html", data)


@routes.get("/api/devices")
async def api_devices(request: web.Request) -> web.StreamResponse:
    return json_ok(await facade(request).devices())


# Before `/devices/{index}`: aiohttp tries routes in the order they are added.
@routes.get("/devices/new")
async def new_device_form(request: web.Request) -> web.StreamResponse:
    return await _show_form(request, None)


@routes.post("/devices/new")
async def new_device(request: web.Request) -> web.StreamResponse:
    return await _submit_form(request, None)


@routes.get("/devices/{index}")
async def device_page(request: web.Request) -> web.StreamResponse:
    data = await facade(request).device(request.match_info["index"])
    data.update(written=request.query.get("written", ""),
                asked=request.query.get("parameters", ""))
    return page(request, "device.html", data)


@routes.get("/api/devices/{index}")
async def api_device(request: web.Request) -> web.StreamResponse:
    return json_ok(await facade(request).device(request.match_info["index"]))


@routes.get("/api/devices/{index}/values")
async def api_values(request: web.Request) -> web.StreamResponse:
    return json_ok(await facade(request).live_values(request.match_info["index"]))


@routes.get("/api/devices/{index}/history")
async def api_history(request: web.Request) -> web.StreamResponse:
    try:
        var = int(request.query.get("var", ""))
    except ValueError:
        return json_error("var: expected a variable Index", 400)
    try:
        data = await facade(request).history(request.match_info["index"], var,
                                             request.query.get("span", "1h"))
    except ValueError as err:
        return json_error(str(err), 400)
    return json_ok(data)


# ----------------------------------------------------------------------------- edits

#: What a device form posts besides the daq.csv fields.
_UPLOAD = "defUpload"


def _form_values(form: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(form.get(key, "")) for _, key in DEVICE_FIELDS}


#: A refused form's uploaded definition, sent back with the page (a browser cannot refill a
#: file field): its name and its bytes in base64, used again unless another file is chosen.
_KEPT_NAME = "defKeptName"
_KEPT_DATA = "defKept"


def _upload(form: Mapping[str, Any]) -> tuple[str, bytes] | None:
    field = form.get(_UPLOAD)
    if isinstance(field, web.FileField) and field.filename:
        return field.filename, field.file.read()
    name, kept = form.get(_KEPT_NAME), form.get(_KEPT_DATA)
    if isinstance(name, str) and name and isinstance(kept, str) and \
            str(form.get("defFile", "")) == name:
        try:
            return name, base64.b64decode(kept, validate=True)
        except binascii.Error:
            return None
    return None


def _form_page(request: web.Request, data: dict[str, Any], *, status: int = 200) -> web.Response:
    return page(request, "device_form.html", data, status=status)


async def _show_form(request: web.Request, index: str | None, *,
                     duplicate: bool = False) -> web.StreamResponse:
    data = await facade(request).device_form(index, duplicate=duplicate)
    return _form_page(request, data)


async def _submit_form(request: web.Request, original: str | None) -> web.StreamResponse:
    form = await request.post()
    values = _form_values(form)
    values["index"] = canonical_index(values["index"])
    gateway = facade(request)
    upload = _upload(form)
    if upload is not None and len(upload[1]) > DEFINITION_MAX_BYTES:
        data = await gateway.device_form(None)
        data.update(mode="add" if original is None else "edit", original=original,
                    values=values, problems=[], fields={_UPLOAD: [
                        f"{upload[0]}: larger than {DEFINITION_MAX_BYTES >> 20} MiB; "
                        "not saved"]})
        return _form_page(request, data, status=413)
    verdict = await gateway.save_device(original, values, upload)
    if verdict.ok:
        raise web.HTTPSeeOther(f"/devices?saved={quote(values['index'].strip())}")
    data = await gateway.device_form(None)
    data.update(mode="add" if original is None else "edit", original=original, values=values,
                fields=verdict.fields, problems=[str(p) for p in verdict.others])
    if upload is not None:
        data["kept"] = {"name": upload[0], "data": base64.b64encode(upload[1]).decode("ascii")}
    return _form_page(request, data, status=422)


@routes.get("/devices/{index}/edit")
async def edit_device_form(request: web.Request) -> web.StreamResponse:
    return await _show_form(request, request.match_info["index"])


@routes.post("/devices/{index}/edit")
async def edit_device(request: web.Request) -> web.StreamResponse:
    return await _submit_form(request, request.match_info["index"])


@routes.get("/devices/{index}/duplicate")
async def duplicate_device_form(request: web.Request) -> web.StreamResponse:
    return await _show_form(request, request.match_info["index"], duplicate=True)


@routes.post("/devices/{index}/delete")
async def delete_device(request: web.Request) -> web.StreamResponse:
    index = request.match_info["index"]
    verdict = await facade(request).delete_device(index)
    if verdict.ok:
        raise web.HTTPSeeOther(f"/devices?deleted={quote(index)}")
    data = await facade(request).devices()
    data["problems"] = [str(p) for p in verdict.blocking]
    return page(request, "devices.html", data, status=422)


# ----------------------------------------------------------------------------- API edits


async def _json_values(request: web.Request) -> dict[str, str] | web.Response:
    try:
        body = await request_json(request)
    except ValueError:
        return json_error("expected a JSON object of daq.csv fields", 400)
    if not isinstance(body, dict):
        return json_error("expected a JSON object of daq.csv fields", 400)
    unknown = sorted(set(body) - {key for _, key in DEVICE_FIELDS})
    if unknown:
        return json_error(f"unknown field(s): {', '.join(unknown)}", 400)
    return {key: "" if body.get(key) is None else str(body[key]) for _, key in DEVICE_FIELDS}


async def _api_save(request: web.Request, original: str | None,
                    values: dict[str, str]) -> web.StreamResponse:
    values = {**values, "index": canonical_index(values["index"])}
    verdict = await facade(request).save_device(original, values)
    if not verdict.ok:
        return rejected(verdict)
    return json_ok({"device": {k: values[k].strip() for k in values}, **verdict.saved_json()},
                   status=201 if original is None else 200)


@routes.post("/api/devices")
async def api_add_device(request: web.Request) -> web.StreamResponse:
    values = await _json_values(request)
    if isinstance(values, web.Response):
        return values
    return await _api_save(request, None, values)


@routes.put("/api/devices/{index}")
async def api_replace_device(request: web.Request) -> web.StreamResponse:
    values = await _json_values(request)
    if isinstance(values, web.Response):
        return values
    return await _api_save(request, request.match_info["index"], values)


@routes.post("/api/devices/{index}/duplicate")
async def api_duplicate_device(request: web.Request) -> web.StreamResponse:
    """A copy of the row: `<name>_copy` at the next free index, unless the body says otherwise."""
    overrides: dict[str, Any] = {}
    if request.can_read_body:
        try:
            body = await request_json(request)
        except ValueError:
            return json_error("expected a JSON object of daq.csv fields", 400)
        if not isinstance(body, dict):
            return json_error("expected a JSON object of daq.csv fields", 400)
        overrides = body
    form = await facade(request).device_form(request.match_info["index"], duplicate=True)
    values: dict[str, str] = dict(form["values"])
    values.update({k: str(v) for k, v in overrides.items() if k in values})
    return await _api_save(request, None, values)


@routes.delete("/api/devices/{index}")
async def api_delete_device(request: web.Request) -> web.StreamResponse:
    index = request.match_info["index"]
    verdict = await facade(request).delete_device(index)
    if not verdict.ok:
        return rejected(verdict)
    return json_ok({"deleted": index})


@routes.get("/api/defs")
async def api_definitions(request: web.Request) -> web.StreamResponse:
    """The definition files of DEF/ with their header, for the device form's pickers."""
    return json_ok({"definitions": await asyncio.to_thread(facade(request).definitions)})


@routes.get("/api/defs/{name}")
async def api_definition(request: web.Request) -> web.StreamResponse:
    """`{file, text}` of a definition file of DEF/."""
    name = request.match_info["name"]
    data = await asyncio.to_thread(facade(request).definition_file, name)
    return json_ok({"file": name, "text": data.decode("utf-8", "replace")})


@routes.put("/api/defs/{name}")
async def api_save_definition(request: web.Request) -> web.StreamResponse:
    """`{"text": ...}`: a definition file added or replaced, the whole site checked."""
    text = await whole_file_text(request, request.match_info["name"], DEFINITION_MAX_BYTES)
    if isinstance(text, web.Response):
        return text
    verdict = await facade(request).save_definition(request.match_info["name"], text.encode())
    if not verdict.ok:
        return rejected(verdict)
    return json_ok({"saved": request.match_info["name"], **verdict.saved_json()})


@routes.delete("/api/defs/{name}")
async def api_delete_definition(request: web.Request) -> web.StreamResponse:
    """A definition file no device uses (409 when one does)."""
    verdict = await facade(request).save_definition(request.match_info["name"], None)
    if not verdict.ok:
        return rejected(verdict)
    return json_ok({"deleted": request.match_info["name"]})


# ----------------------------------------------------------------------------- I/O editor


@routes.get("/devices/{index}/io")
async def io_editor_page(request: web.Request) -> web.StreamResponse:
    data = await facade(request).io_editor(request.match_info["index"])
    data["saved"] = request.query.get("saved", "")
    return page(request, "io_editor.html", data)


@routes.post("/devices/{index}/io")
async def io_editor_save(request: web.Request) -> web.StreamResponse:
    index = request.match_info["index"]
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    verdict = await facade(request).save_io(index, form)
    if verdict.ok:
        raise web.HTTPSeeOther(f"/devices/{quote(index)}/io?saved=1")
    data = await facade(request).io_editor(index)
    with_submitted(data["rows"], form)
    data.update(fields=dict(verdict.fields), problems=[str(p) for p in verdict.others],
                saved="")
    return page(request, "io_editor.html", data, status=422)


@routes.get("/api/devices/{index}/io")
async def api_io_editor(request: web.Request) -> web.StreamResponse:
    data = await facade(request).io_editor(request.match_info["index"])
    for unused in ("fields", "problems"):
        data.pop(unused)
    return json_ok(data)


@routes.put("/api/devices/{index}/io")
async def api_io_save(request: web.Request) -> web.StreamResponse:
    """`{"v<Index>_<Info3|Name|Tag|CoefA|CoefB|Unit|Action>": text}`; fields left out keep
    their text."""
    try:
        body = await request_json(request)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not all(isinstance(v, str | int | float)
                                             for v in body.values()):
        return json_error("expected a JSON object of field names and texts", 400)
    verdict = await facade(request).save_io(request.match_info["index"],
                                            {str(k): str(v) for k, v in body.items()})
    if not verdict.ok:
        return rejected(verdict)
    return json_ok({"saved": request.match_info["index"], **verdict.saved_json()})


# ----------------------------------------------------------------------------- actions


@routes.post("/devices/{index}/write")
async def write_variable(request: web.Request) -> web.StreamResponse:
    index = request.match_info["index"]
    form = await request.post()
    try:
        done = await facade(request).write(index, str(form.get("variable", "")),
                                           str(form.get("value", "")),
                                           raw=form.get("raw") == "1")
    except (ValueError, Conflict) as err:
        data = await facade(request).device(index)
        data["actionError"] = str(err)
        return page(request, "device.html", data, status=422)
    raise web.HTTPSeeOther(f"/devices/{quote(index)}?written={quote(done['name'])}")


@routes.post("/devices/{index}/parameters")
async def read_parameters(request: web.Request) -> web.StreamResponse:
    index = request.match_info["index"]
    try:
        facade(request).read_parameters(index)
    except Conflict as err:
        data = await facade(request).device(index)
        data["actionError"] = str(err)
        return page(request, "device.html", data, status=409)
    raise web.HTTPSeeOther(f"/devices/{quote(index)}?parameters=1")


@routes.post("/api/devices/{index}/write")
async def api_write_variable(request: web.Request) -> web.StreamResponse:
    """`{variable: <Index or Name>, value: <number or text>, raw: false}`."""
    try:
        body = await request_json(request)
    except ValueError:
        body = None
    if not isinstance(body, dict) or "variable" not in body or "value" not in body:
        return json_error("expected {variable, value[, raw]}", 400)
    raw = body.get("raw", False)
    if not isinstance(raw, bool):
        return json_error("raw: true or false", 400)
    variable, value = body["variable"], body["value"]
    # JSON's null, true, lists and objects are no Index, Name or value: said, not looked up
    # as their Python text ('None', '[1]').
    if isinstance(variable, bool) or not isinstance(variable, int | str):
        return json_error("variable: expected an Index or a Name", 400)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return json_error("value: expected a number or a text", 400)
    try:
        done = await facade(request).write(request.match_info["index"], str(variable),
                                           str(value), raw=raw)
    except FieldRefused as err:
        return field_json({err.field: err.message})
    return json_ok(done)


@routes.post("/api/devices/{index}/parameters")
async def api_read_parameters(request: web.Request) -> web.StreamResponse:
    facade(request).read_parameters(request.match_info["index"])
    return json_ok({"requested": request.match_info["index"]})

"""Devices and the device page (docs/behaviour.md §10.2): state, live scaled values with units,
a chart per variable from the store; add, edit, delete and duplicate through `config`."""

from __future__ import annotations

from aiohttp import web

from pipeline.web.common import facade, json_error, json_ok, page
from pipeline.web.facade import NotFound

routes = web.RouteTableDef()


@routes.get("/devices")
async def devices_page(request: web.Request) -> web.StreamResponse:
    return page(request, "devices.html", await facade(request).devices())


@routes.get("/api/devices")
async def api_devices(request: web.Request) -> web.StreamResponse:
    return json_ok(await facade(request).devices())


@routes.get("/devices/{index}")
async def device_page(request: web.Request) -> web.StreamResponse:
    try:
        data = facade(request).device(request.match_info["index"])
    except NotFound as err:
        raise web.HTTPNotFound(text=f"{err}\n") from None
    return page(request, "device.html", data)


@routes.get("/api/devices/{index}")
async def api_device(request: web.Request) -> web.StreamResponse:
    try:
        return json_ok(facade(request).device(request.match_info["index"]))
    except NotFound as err:
        return json_error(str(err), 404)


@routes.get("/api/devices/{index}/values")
async def api_values(request: web.Request) -> web.StreamResponse:
    try:
        return json_ok(facade(request).values(request.match_info["index"]))
    except NotFound as err:
        return json_error(str(err), 404)


@routes.get("/api/devices/{index}/history")
async def api_history(request: web.Request) -> web.StreamResponse:
    try:
        var = int(request.query.get("var", ""))
    except ValueError:
        return json_error("var: expected a variable Index", 400)
    try:
        data = await facade(request).history(request.match_info["index"], var,
                                             request.query.get("span", "1h"))
    except NotFound as err:
        return json_error(str(err), 404)
    except ValueError as err:
        return json_error(str(err), 400)
    return json_ok(data)
